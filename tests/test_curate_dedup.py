"""Tests for curate.dedup: exact search over hashes and embeddings, grouping rules, the workspace pass."""
import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from curate.dedup import (HashIndex, _pairs_brute, _pairs_mih, dedup, find_groups, near_duplicate_pairs,
                          pairs_within)
from curate.workspace import Workspace
from test_curate_importer import photo


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
        dry = dedup(ws, dry_run=True, workers=1, by="hash")
        assert dry.marked == 2 and all(r.status == "pending" for r in ws.list_images())
        assert ws.get(big.id).phash is not None  # hashes cached even in a dry run
        report = dedup(ws, workers=1, by="hash")
        assert report.groups == ((big.id, bright.id, small.id),) and report.hashed == 0  # most pixels first
        assert ws.get(small.id).duplicate_of == big.id and ws.get(bright.id).status == "duplicate"
        assert ws.get(distinct.id).status == "pending" and ws.get(elsewhere.id).status == "pending"
        # accepted beats bigger; scope all reaches across categories
        ws.set_status(elsewhere.id, "accepted")
        report = dedup(ws, scope="all", workers=1, by="hash")
        assert report.groups[0][0] == elsewhere.id
        assert {ws.get(i).duplicate_of for i in (big.id, small.id, bright.id)} == {elsewhere.id}
        # rejecting the kept one frees its twins: the best remaining member is kept again
        ws.set_status(elsewhere.id, "rejected")
        dedup(ws, scope="all", workers=1, by="hash")
        assert ws.get(big.id).status == "pending" and ws.get(small.id).duplicate_of == big.id


def food_photos(root, n):
    """n real food photos from n different classes (distinct dishes), as RGB images."""
    classes = sorted(p for p in (root / "train").iterdir() if p.is_dir())[:n]
    return [Image.open(sorted(c.glob("*.jpg"))[0]).convert("RGB") for c in classes]


def edits(image):
    """The three copies the perceptual hash misses: a 12 % crop, a mirror and a 5-degree rotation."""
    w, h = image.size
    return {"crop": image.crop((w * 6 // 100, h * 6 // 100, w * 94 // 100, h * 94 // 100)),
            "mirror": ImageOps.mirror(image),
            "rotation": image.rotate(5, resample=Image.Resampling.BICUBIC).crop((w // 20, h // 20, w - w // 20, h - h // 20))}


def test_embedding_finds_crop_mirror_and_rotation_the_hash_misses(tmp_path, food_dev):
    original, *others = food_photos(food_dev, 4)
    with Workspace(tmp_path / "ws") as ws:
        kept = ws.add_image(jpeg_bytes(original, 95), "Food", source="import")
        copies = {name: ws.add_image(jpeg_bytes(image), "Food", source="import").id for name, image in edits(original).items()}
        distinct = [ws.add_image(jpeg_bytes(image), "Food", source="import").id for image in others]
        by_hash = dedup(ws, dry_run=True, workers=1, by="hash")
        assert by_hash.hashed == 7  # phash alone links none of the three edits to the original (at most two edits)
        assert all(kept.id not in g and copies["mirror"] not in g for g in by_hash.groups)
        report = dedup(ws, workers=1, by="embedding")
        assert report.embedded == 7 and report.hashed == 0
        assert len(report.groups) == 1 and set(report.groups[0]) == {kept.id, *copies.values()}
        assert report.groups[0][0] == kept.id  # the most pixels
        assert all(ws.get(i).duplicate_of == kept.id for i in copies.values())
        assert all(ws.get(i).status == "pending" for i in distinct)
        again = dedup(ws, workers=1)  # both (the default): hashes and embeddings all from the cache
        assert again.embedded == 0 and again.hashed == 0 and again.groups == report.groups


def test_embedding_cache_is_suspects_own_and_mirror_invariant(tmp_path, food_dev):
    from curate.embeddings import DEFAULT_MODEL, cached_vectors
    from curate.suspects import SuspectsConfig

    original = food_photos(food_dev, 1)[0]
    with Workspace(tmp_path / "ws") as ws:
        a = ws.add_image(jpeg_bytes(original, 95), "Food", source="import")
        b = ws.add_image(jpeg_bytes(ImageOps.mirror(original), 95), "Food", source="import")
        dedup(ws, workers=1, by="embedding")
        assert SuspectsConfig.model == DEFAULT_MODEL and len(ws.embeddings(SuspectsConfig.model)) == 2
        vectors = cached_vectors(ws, ws.list_images(), DEFAULT_MODEL)
        assert float(vectors[a.id] @ vectors[b.id]) > 0.99  # the mean of photo and mirror: (nearly) one vector
        ws.set_crop(a.id, (10, 10, 200, 200))
        assert a.id not in cached_vectors(ws, ws.list_images(), DEFAULT_MODEL)  # a new crop is embedded again


def _planted(n: int, planted: int, seed: int, noise) -> tuple[np.ndarray, np.ndarray]:
    """n random unit vectors in 64-d, the last `planted` noisy copies of others: (vectors, their sources)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n - planted, planted, replace=False)
    x[n - planted:] = x[src] + np.asarray(noise, dtype=np.float32) * rng.standard_normal((planted, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, src


def test_cell_search_finds_planted_pairs():
    from curate.dedup import near_duplicate_pairs, similar_pairs

    x, src = _planted(3000, 100, 0, 0.15 / 8)
    exact = set(zip(*[a.tolist() for a in near_duplicate_pairs(x, 0.9)[:2]]))
    i, j, s = similar_pairs(x, 0.9, exact_max=500)  # cells: 2 sqrt(3000) ~ 110 of them
    cells = set(zip(i.tolist(), j.tolist()))
    assert len(cells) == len(i) and cells <= exact and len(cells) >= 0.9 * len(exact) >= 0.9 * len(src)
    assert np.allclose(s, (x[i] * x[j]).sum(1), atol=1e-5)


def test_embedding_index_approximate_agrees_with_exact():
    from curate.dedup import EmbeddingIndex

    n, planted = 4000, 200
    x, src = _planted(n, planted, 1, np.random.default_rng(2).uniform(0.02, 0.06, (planted, 1)))
    ids = np.arange(n) + 1000
    exact, approximate = EmbeddingIndex(x, ids), EmbeddingIndex(x, ids, exact_max=500)  # 63 cells, 32 probed
    assert exact.index is None and approximate.index is not None
    found = total = 0
    for q in range(n - planted, n):
        truth, _ = exact.query(x[q], 0.82)
        got, sims = approximate.query(x[q], 0.82)
        assert set(got.tolist()) <= set(truth.tolist())  # nothing below the threshold, nothing made up
        assert np.allclose(sims, x[got - 1000] @ x[q], atol=5e-4) and np.all(np.diff(sims) <= 0)  # stored as float16
        found += len(set(got.tolist()) & set(truth.tolist()))
        total += len(truth)
    assert total >= 2 * planted and found >= 0.98 * total
    assert int(src[-1]) + 1000 in exact.query(x[-1], 0.82)[0].tolist()
    got, _ = approximate.query(x[-1], 0.82, cells_probed=1)  # one cell: its own, maybe not its twin's
    assert got[0] == ids[-1]


def test_near_duplicate_pairs_blocked_search_matches_full_matrix():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 8)).astype(np.float32)
    features[40:] = features[:10] + 0.01 * rng.normal(size=(10, 8))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    i, j, s = near_duplicate_pairs(features, 0.99, block=7)
    assert sorted(zip(i.tolist(), j.tolist())) == [(k, 40 + k) for k in range(10)]
    assert np.allclose(s, np.sum(features[i] * features[j], axis=1))
