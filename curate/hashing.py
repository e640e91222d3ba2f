"""Perceptual hashes (phash, dhash, whash, ahash) of image files as unsigned 64-bit integers, in parallel."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from classify.twins import bits_to_int as _bits_to_int
from classify.twins import phash
from curate.images import InvalidImage, open_image

METHODS = ("phash", "dhash", "whash", "ahash")
DEFAULT_METHOD = "phash"
# JPEG `draft` decodes at 1/2, 1/4 or 1/8 scale, keeping at least this many pixels per side. phash
# resizes to 32 px anyway; bench/hashing.py measures how often the hash changes against a full decode.
DRAFT_PX = 64

def hash_image(image: Image.Image, method: str = DEFAULT_METHOD) -> int:
    """The 64-bit hash of a decoded image; bit-compatible with imagehash's function of the same name."""
    gray = image.convert("L")
    if method == "phash":  # classify's, so that `classify evaluate --against` finds the twins dedup would
        return phash(gray)
    if method == "dhash":
        pixels = np.asarray(gray.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
        return _bits_to_int(pixels[:, 1:] > pixels[:, :-1])
    if method == "ahash":
        pixels = np.asarray(gray.resize((8, 8), Image.Resampling.LANCZOS), dtype=np.float64)
        return _bits_to_int(pixels > pixels.mean())
    if method == "whash":
        import imagehash

        return _bits_to_int(imagehash.whash(gray).hash)
    raise ValueError(f"unknown hash method {method!r}; use one of {METHODS}")


def hash_file(path: str | Path, method: str = DEFAULT_METHOD, draft_px: int | None = DRAFT_PX) -> int | None:
    """Hash of one image file, or None when it cannot be decoded."""
    try:
        image = open_image(path, mode="L", draft_size=(draft_px, draft_px) if draft_px else None)
    except InvalidImage:
        return None
    return hash_image(image, method)


def _hash_chunk(args: tuple[list[str], str, int | None]) -> tuple[np.ndarray, np.ndarray]:
    paths, method, draft_px = args
    values = np.zeros(len(paths), dtype=np.uint64)
    ok = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        h = hash_file(path, method, draft_px)
        if h is not None:
            values[i], ok[i] = h, True
    return values, ok


def hash_files(paths: Sequence[str | Path], method: str = DEFAULT_METHOD, workers: int | None = None,
               draft_px: int | None = DRAFT_PX, chunk_size: int = 128,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Hash many files in a process pool; returns (uint64 hashes, bool array: hash is valid)."""
    from tqdm import tqdm

    if method not in METHODS:
        raise ValueError(f"unknown hash method {method!r}; use one of {METHODS}")
    paths = [str(p) for p in paths]
    workers = workers or os.cpu_count() or 1
    chunks = [(paths[i:i + chunk_size], method, draft_px) for i in range(0, len(paths), chunk_size)]
    bar = tqdm(total=len(paths), desc=f"hash ({method})", unit="img", disable=not progress)
    results = []
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.append(_hash_chunk(chunk))
            bar.update(len(chunk[0]))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for chunk, result in zip(chunks, pool.map(_hash_chunk, chunks)):
                results.append(result)
                bar.update(len(chunk[0]))
    bar.close()
    if not results:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])
