"""Frozen-layer features: computed once per cached view, kept on disk by image content so a retrain computes only new
images.

Head-only training (the CPU default) runs the frozen backbone once per cached view of every image, then trains the
head on those features; the backbone is nearly all of a run's time (about 40 of 50 s on food-dev, 2 CPU cores). A
view's features depend only on the image's bytes, the backbone's weights, the preprocessing code and, for augmented
views, the seed and augmentation strength (every random draw is keyed on content: `data.keyed_uniforms`), so they are
stored under exactly those: a retrain on mostly the same images reads the shared ones back, bit for bit what
computing them again gives (CPU convolutions give the same outputs in any batch of 2 or more; measured; train
runs a lone image as two).

One SQLite file, `features.sqlite` in the cache folder (default `$PLATEKIT_CACHE`, else `$XDG_CACHE_HOME/platekit`,
else `~/.cache/platekit`); a row is one image's view, 2.5 KB for lite0 (7.5 KB for lite0+lite1+lite2). It keeps
at most 2 GiB (`$PLATEKIT_CACHE_MAX_MB` sets another cap): past that, a run ends by deleting the settings (a
fingerprint and view) used least recently, never one it used itself. Delete the folder to clear it.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import marshal
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import PIL
import torch

from classify import data as D

FILE_NAME = "features.sqlite"
DEFAULT_MAX_MB = 2048
SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE,
                                     used REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS features (setting INTEGER NOT NULL, key INTEGER NOT NULL, data BLOB NOT NULL,
                                     PRIMARY KEY (setting, key)) WITHOUT ROWID;
"""


def cache_folder(option: str) -> Path | None:
    """The folder for `--feature-cache OPTION`: "auto" → the default, "none" or "" → no cache, else that folder."""
    if option in ("none", ""):
        return None
    if option != "auto":
        return Path(option).expanduser()
    if os.environ.get("PLATEKIT_CACHE"):
        return Path(os.environ["PLATEKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "platekit"


def fingerprint(backbone: torch.nn.Module, **settings) -> str:
    """sha256 over the backbone's weights, the code that turns a file into its input pixels, and `settings` (size,
    normalization, device...): features stored under one fingerprint are those this setup computes."""
    digest = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for function in (D.decode, D.center_crop, D.augment, D.normalize, D.keyed_uniforms, D._mix):
        digest.update(_code_identity(function))
    versions = {"torch": torch.__version__, "pillow": PIL.__version__}
    digest.update(json.dumps({**settings, **versions}, sort_keys=True).encode())
    return digest.hexdigest()


def _code_identity(function) -> bytes:
    try:
        return inspect.getsource(function).encode()
    except (OSError, TypeError):  # installed without its source (.pyc only): the bytecode stands in
        return marshal.dumps(function.__code__)


class FeatureStore:
    """The SQLite file of stored features; `get` and `put` are per setting (a fingerprint plus a view's draws).

    A cache never stops a run: after the first error (an unreadable file, a full disk) `get` finds nothing, `put`
    keeps nothing, and `error` says what happened.
    """

    def __init__(self, folder: Path, max_bytes: int | None = None):
        self.path = folder / FILE_NAME
        self.error = ""
        self.db = None
        self.touched: set[int] = set()  # settings this store read or wrote: never evicted by its own close
        if max_bytes is None:
            try:
                max_bytes = int(float(os.environ.get("PLATEKIT_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 2**20)
            except ValueError:
                max_bytes = DEFAULT_MAX_MB * 2**20
        self.max_bytes = max_bytes
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            if "used" not in {row[1] for row in self.db.execute("PRAGMA table_info(settings)")}:  # made before the cap
                with self.db:
                    self.db.execute("ALTER TABLE settings ADD COLUMN used REAL NOT NULL DEFAULT 0")
        except (sqlite3.Error, OSError) as error:
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.error = str(error) or type(error).__name__
        if self.db is not None:
            self.db.close()
        self.db = None

    def _setting_id(self, setting: str) -> int:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO settings (fingerprint) VALUES (?)", (setting,))
            self.db.execute("UPDATE settings SET used = ? WHERE fingerprint = ?", (time.time(), setting))
        setting_id = self.db.execute("SELECT id FROM settings WHERE fingerprint = ?", (setting,)).fetchone()[0]
        self.touched.add(setting_id)
        return setting_id

    def size(self) -> int:
        """Bytes in use (pages holding data; freed pages are reused by later writes, so the file stays near this)."""
        page_size, pages, free = (self.db.execute(f"PRAGMA {name}").fetchone()[0]
                                  for name in ("page_size", "page_count", "freelist_count"))
        return page_size * (pages - free)

    def evict(self) -> int:
        """Delete the least recently used settings this store did not touch until the cache fits `max_bytes`;
        returns how many were deleted."""
        deleted = 0
        if self.db is None:
            return deleted
        try:
            oldest = [i for (i,) in self.db.execute("SELECT id FROM settings ORDER BY used, id")
                      if i not in self.touched]
            for setting_id in oldest:
                if self.size() <= self.max_bytes:
                    break
                with self.db:
                    self.db.execute("DELETE FROM features WHERE setting = ?", (setting_id,))
                    self.db.execute("DELETE FROM settings WHERE id = ?", (setting_id,))
                deleted += 1
        except (sqlite3.Error, OSError) as error:
            self._fail(error)
        return deleted

    def get(self, setting: str, keys: list[int], shape: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Stored float16 features of `keys` under `setting` (key → array of `shape`); missing keys are left out."""
        found, size = {}, int(np.prod(shape)) * 2
        if self.db is None:
            return found
        try:
            setting_id = self._setting_id(setting)
            unique = sorted(set(keys))
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                rows = self.db.execute(f"SELECT key, data FROM features WHERE setting = ? AND key IN "
                                       f"({','.join('?' * len(chunk))})", (setting_id, *chunk))
                found.update({key: np.frombuffer(data, np.float16).reshape(shape)
                              for key, data in rows if len(data) == size})
        except (sqlite3.Error, OSError) as error:
            self._fail(error)
            return {}
        return found

    def put(self, setting: str, features: dict[int, np.ndarray]) -> None:
        if self.db is None:
            return
        try:
            setting_id = self._setting_id(setting)
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO features (setting, key, data) VALUES (?, ?, ?)",
                                    [(setting_id, key, np.ascontiguousarray(value, np.float16).tobytes())
                                     for key, value in features.items()])
        except (sqlite3.Error, OSError) as error:
            self._fail(error)

    def close(self) -> int:
        """Evict down to the cap and close; returns how many settings were evicted."""
        evicted = self.evict()
        if self.db is not None:
            self.db.close()
            self.db = None
        return evicted


# -- computing them ----------------------------------------------------------------------------------------------

def frozen_features(frozen: torch.nn.Module, cache: D.ImageCache, views: int, shape: tuple[int, ...], *,
                    image_size: int, mean, std, seed: int, augment_strength: float, device: torch.device,
                    autocast=contextlib.nullcontext, store: FeatureStore | None = None, fingerprint: str = "",
                    batch_size: int = 16, progress: bool = False, desc: str = "cache") -> tuple[torch.Tensor, int]:
    """Run the frozen layers once per view of every cached image: [views, N, *shape] float16 on the CPU, and how
    many image views were read from `store` instead of computed.

    View 0 is the centre crop, the same for every seed; the others are augmented, keyed on each image's content and
    the seed (stream data.STREAM_CACHED_VIEW). With a store (and the `fingerprint` of this setup), the views it holds
    are read from it and the others computed and added to it.
    """
    from tqdm.auto import tqdm

    keys = cache.keys.tolist()
    outputs, read = [], 0
    with torch.inference_mode():
        for view in range(views):
            setting = f"{fingerprint}:centre" if view == 0 else \
                f"{fingerprint}:seed {seed}:aug {augment_strength}:view {view}"
            found = store.get(setting, keys, shape) if store else {}
            todo = [i for i, key in enumerate(keys) if key not in found]
            view_features = torch.empty((len(keys), *shape), dtype=torch.float16)
            for start in tqdm(range(0, len(todo), batch_size), desc=f"{desc} {view + 1}/{views}",
                              disable=not progress, leave=False):
                index = torch.tensor(todo[start:start + batch_size], dtype=torch.long)
                uniforms = D.keyed_uniforms(cache.keys[index], D.AUGMENT_DRAWS, seed, D.STREAM_CACHED_VIEW, view)
                pixels = (D.augment(cache.images[index], image_size, augment_strength, uniforms) if view > 0
                          else D.center_crop(cache.images[index], image_size))
                x = D.normalize(pixels.to(device), mean, std)
                # A batch of one takes another kernel path on the CPU whose outputs differ in the last bit (of
                # float16) from those in a batch of 2 or more, which agree with each other: run it as two.
                with autocast():
                    view_features[index] = frozen(x if len(x) > 1 else x.expand(2, -1, -1, -1))[:len(x)].to(
                        "cpu", torch.float16)
            if found:
                stored = [i for i, key in enumerate(keys) if key in found]
                view_features[stored] = torch.from_numpy(np.stack([found[keys[i]] for i in stored]))
            if store and todo:
                store.put(setting, {keys[i]: view_features[i].numpy() for i in todo})
            outputs.append(view_features)
            read += len(keys) - len(todo)
    return torch.stack(outputs), read
