"""Near-twins across folders: the 64-bit perceptual hash (curate's dedup hashes with it too) and the test photos that
have a near-twin in a training folder (a leak: the score then measures memory, not generalisation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from classify import ClassifyError
from classify.images import open_image

# curate's dedup default (curate.dedup.DEFAULT_THRESHOLD_BITS, chosen in bench/dedup_quality.py: precision 1.000 on
# food-dev): pHashes this close are one photo re-encoded, resized, lightly cropped or brightened.
NEAR_TWIN_BITS = 10
# JPEG `draft` decodes at 1/2, 1/4 or 1/8 scale, keeping at least this many pixels a side: phash resizes to 32 px.
DRAFT_PX = 64
PHASH_PX = 32


def _dct_matrix(n: int, keep: int) -> np.ndarray:
    # The first `keep` rows of the (unnormalised) DCT-II: the same frequencies scipy.fftpack.dct gives
    # imagehash; a constant factor does not move the median threshold.
    k = np.arange(keep)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * x + 1) / (2 * n))


_DCT8 = _dct_matrix(PHASH_PX, 8)


def bits_to_int(bits: np.ndarray) -> int:
    """64 booleans, first one most significant (imagehash's order), to an int."""
    return int.from_bytes(np.packbits(bits.ravel().astype(np.uint8)).tobytes(), "big")


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of a decoded image; bit-compatible with imagehash.phash."""
    gray = image.convert("L").resize((PHASH_PX, PHASH_PX), Image.Resampling.LANCZOS)
    low = _DCT8 @ np.asarray(gray, dtype=np.float64) @ _DCT8.T
    return bits_to_int(low > np.median(low))


def phash_files(paths) -> tuple[np.ndarray, list[Path]]:
    """uint64 pHashes of the files that decode, and those files (the others are left out)."""
    hashes, kept = [], []
    for path in paths:
        try:
            hashes.append(phash(open_image(path, mode="L", draft_size=(DRAFT_PX, DRAFT_PX))))
        except ClassifyError:
            continue
        kept.append(Path(path))
    return np.array(hashes, dtype=np.uint64), kept


def near_twins(test_paths, train_dir: str | Path, threshold_bits: int = NEAR_TWIN_BITS) -> list[dict]:
    """[{"test", "train", "bits"}]: each test photo with a pHash within threshold_bits of a photo anywhere under
    `train_dir` (its nearest one), in test order."""
    from classify.data import images_in  # here: curate's hashing imports this module, and data imports torch

    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise ClassifyError(f"--against: training folder not found: {train_dir}")
    train_hashes, train_paths = phash_files(images_in(train_dir))
    test_hashes, test_paths = phash_files(test_paths)
    if not len(train_hashes) or not len(test_hashes):
        return []
    twins = []
    for start in range(0, len(test_hashes), 256):  # blocks of 256 test photos x all training photos
        bits = np.bitwise_count(test_hashes[start:start + 256, None] ^ train_hashes[None, :])
        nearest = bits.argmin(1)
        for row in np.flatnonzero(bits[np.arange(len(bits)), nearest] <= threshold_bits):
            twins.append({"test": str(test_paths[start + row]), "train": str(train_paths[nearest[row]]),
                          "bits": int(bits[row, nearest[row]])})
    return twins
