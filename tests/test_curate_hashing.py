"""Tests for curate.hashing: imagehash-compatible hashes, computed in parallel, unreadable files flagged."""
import imagehash
import numpy as np
import pytest
from PIL import Image

from curate.hashing import hash_files, hash_image
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
