"""Tests for curate.hashing and curate.dedup: imagehash-compatible hashes, exact search, grouping rules."""
import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from curate.dedup import HashIndex, _pairs_brute, _pairs_mih, dedup, find_groups, pairs_within
from curate.hashing import hash_files, hash_image
from curate.workspace import Workspace
from test_curate_importer import photo


@pytest.mark.parametrize("method,reference", [("phash", imagehash.phash), ("dhash", imagehash.dhash),
                                              ("ahash", imagehash.average_hash), ("whash", imagehash.whash)])
def test_hashes_match_imagehash(tmp_path, method, reference):
    for seed in range(5):
        image = Image.open(photo(tmp_path / f"{seed}.png", seed))
        assert hash_image(image, method) == int(str(reference(image)), 16)


def test_hash_files_parallel_matches_serial_and_flags_unreadable(tmp_path):
    paths = [photo(tmp_path / f"{k}.jpg", k, size=(384, 384)) for k in range(40)]
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    paths.append(tmp_path / "bad.jpg")
    serial, ok1 = hash_files(paths, workers=1)
    parallel, ok2 = hash_files(paths, workers=2, chunk_size=8)
    assert serial.dtype == np.uint64 and np.array_equal(serial, parallel)
    assert ok1.tolist() == ok2.tolist() == [True] * 40 + [False]


def random_hashes(n, planted, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    flips = np.zeros(planted, dtype=np.uint64)
    for _ in range(5):
        flips |= np.uint64(1) << rng.integers(0, 64, planted).astype(np.uint64)
    return np.concatenate([h, h[:planted] ^ flips])


@pytest.mark.parametrize("threshold", [0, 4, 8, 10])
def test_multi_index_search_equals_brute_force(threshold):
    h = random_hashes(4000, 400)
    h = np.concatenate([h, h[:3]])  # exact copies too
    expected = set(zip(*_pairs_brute(h, threshold)))
    for m in (3, 4, 5):
        got = set(zip(*map(list, _pairs_mih(h, threshold, m))))
        assert got == expected
    assert len(expected) >= (400 if threshold >= 5 else 3)


def test_groups_are_connected_components_and_index_query():
    base = np.uint64(0xF0F0_F0F0_F0F0_F0F0)
    chain = np.array([base, base ^ np.uint64(0b111111), base ^ np.uint64(0b111111 << 6 | 0b111111), ~base], dtype=np.uint64)
    groups = find_groups(chain, threshold_bits=6)
    assert [g.tolist() for g in groups] == [[0, 1, 2]]  # 0-2 are 12 bits apart but linked through 1
    i, j = pairs_within(chain, 6)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 2)]
    ids, dist = HashIndex(chain, ids=np.array([10, 11, 12, 13])).query(int(base ^ np.uint64(1)), 8)
    assert ids.tolist() == [10, 11] and dist.tolist() == [1, 5]


def jpeg_bytes(image, quality=90):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_dedup_workspace_keeps_best_member_and_dry_run(tmp_path):
    original = Image.open(photo(tmp_path / "a.png", 1, size=(400, 300))).convert("RGB")
    other = Image.open(photo(tmp_path / "b.png", 2, size=(400, 300))).convert("RGB")
    with Workspace(tmp_path / "ws") as ws:
        small = ws.add_image(jpeg_bytes(original.resize((200, 150))), "Ramen", source="import")
        big = ws.add_image(jpeg_bytes(original, 95), "Ramen", source="import")
        bright = ws.add_image(jpeg_bytes(ImageEnhance.Brightness(original).enhance(1.15)), "Ramen", source="import")
        distinct = ws.add_image(jpeg_bytes(other), "Ramen", source="import")
        elsewhere = ws.add_image(jpeg_bytes(original, 70), "Pho", source="import")
        dry = dedup(ws, dry_run=True, workers=1)
        assert dry.marked == 2 and all(r.status == "pending" for r in ws.list_images())
        assert ws.get(big.id).phash is not None  # hashes cached even in a dry run
        report = dedup(ws, workers=1)
        assert report.groups == ((big.id, bright.id, small.id),) and report.hashed == 0  # most pixels first
        assert ws.get(small.id).duplicate_of == big.id and ws.get(bright.id).status == "duplicate"
        assert ws.get(distinct.id).status == "pending" and ws.get(elsewhere.id).status == "pending"
        # accepted beats bigger; scope all reaches across categories
        ws.set_status(elsewhere.id, "accepted")
        report = dedup(ws, scope="all", workers=1)
        assert report.groups[0][0] == elsewhere.id
        assert {ws.get(i).duplicate_of for i in (big.id, small.id, bright.id)} == {elsewhere.id}
        # rejecting the kept one frees its twins: the best remaining member is kept again
        ws.set_status(elsewhere.id, "rejected")
        dedup(ws, scope="all", workers=1)
        assert ws.get(big.id).status == "pending" and ws.get(small.id).duplicate_of == big.id
