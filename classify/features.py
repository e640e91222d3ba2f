"""Frozen-backbone features kept on disk by image content: retraining after a review computes only the new images.

Head-only training (the CPU default) runs the frozen backbone once per cached view of every image, then trains the
head on those features; the backbone is nearly all of a run's time (about 40 of 50 s on food-dev, 2 CPU cores). A
view's features depend only on the image's bytes, the backbone's weights, the preprocessing code and, for augmented
views, the seed and augmentation strength (every random draw is keyed on content: `data.keyed_uniforms`), so they are
stored under exactly those: a retrain on mostly the same images reads the shared ones back, bit for bit what
computing them again gives (CPU convolutions give the same outputs in any batch of 2 or more; measured; train
runs a lone image as two).

One SQLite file, `features.sqlite` in the cache folder (default `$PLATEKIT_CACHE`, else `$XDG_CACHE_HOME/platekit`,
else `~/.cache/platekit`); a row is one image's view, 2.5 KB for lite0. It keeps at most 2 GiB
(`$PLATEKIT_CACHE_MAX_MB` sets another cap): past that, a run ends by deleting the settings (a fingerprint and view)
used least recently, never one it used itself. Delete the folder to clear it.
"""
from __future__ import annotations

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
