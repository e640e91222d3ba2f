"""The workspace: a folder of original images plus one SQLite manifest that records every decision.

Layout::

    WORKSPACE/manifest.sqlite        the manifest (WAL mode; every write is one transaction)
    WORKSPACE/images/<folder>/...    originals, never modified, moved or deleted by any command

Use it as a context manager::

    with Workspace("workspace") as ws:
        record = ws.add_file(path, "Pad Thai", source="import")
        ws.set_status(record.id, "accepted")
        ws.undo()                         # back to pending
        with ws.batch():                  # one bulk action: one undo takes it all back
            for r in ws.list_images(status="pending"):
                ws.set_status(r.id, "accepted")
        ws.list_images(category="Pad Thai", status="pending", flag="blurry")

Every public method is safe to call from several threads (a Gradio app, icrawler's downloader
threads): calls are serialised by one lock around one connection.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from classify.files import write_new
from classify.names import folder_name  # one rule for category folders, shared with the demo's feedback
from curate import CurateError

MANIFEST = "manifest.sqlite"
IMAGES_DIR = "images"
STATUSES = ("pending", "accepted", "rejected", "duplicate")
SCHEMA_VERSION = 4

def as_text(value) -> str:
    """A path or name as text the manifest and JSON can store: bytes of a file name that are not UTF-8 (which
    Python reads as lone surrogates) become \\xNN escapes."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def resolved(path) -> Path:
    """`Path(path).resolve()`, or CurateError for a symbolic link loop (RuntimeError before Python 3.13)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:
        raise CurateError(f"{as_text(path)} cannot be resolved: {getattr(err, 'strerror', None) or err}") from None


def check_category(name: str) -> str:
    """`name` stripped; CurateError when it is empty or not valid UTF-8 text (a folder named in another encoding)."""
    stripped = name.strip()
    if not stripped:
        raise CurateError(f"category name {name!r} is empty")
    if as_text(stripped) != stripped:
        raise CurateError(f"category name '{as_text(stripped)}' is not valid UTF-8 text: rename its folder, or "
                          "pass --rename OLD=NEW")
    return stripped


# Migration N brings the schema from version N-1 to N; append, never edit a released one.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE categories (
        name TEXT PRIMARY KEY,             -- as the user typed it: "Pad Thai", "phở"
        folder TEXT NOT NULL UNIQUE,       -- safe folder name derived from it
        created_at TEXT NOT NULL
    );
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,         -- relative to the workspace root, '/'-separated
        category TEXT NOT NULL REFERENCES categories(name),
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'accepted', 'rejected', 'duplicate')),
        source TEXT NOT NULL,              -- engine name (bing, urls, ...) or 'import'
        query TEXT,
        source_url TEXT,                   -- URL, or the original path for imports
        sha256 TEXT NOT NULL UNIQUE,
        phash INTEGER,                     -- 64-bit perceptual hash stored as signed int64
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        format TEXT NOT NULL,
        flags TEXT NOT NULL DEFAULT '',    -- comma-separated quality flags
        crop TEXT,                         -- 'x0,y0,x1,y1' in pixels, or NULL
        duplicate_of INTEGER REFERENCES images(id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX images_category_status ON images(category, status);
    CREATE INDEX images_source_url ON images(source_url);
    CREATE TABLE hashes (                  -- other perceptual hashes (dhash, whash, ahash), cached
        image_id INTEGER NOT NULL REFERENCES images(id),
        method TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (image_id, method)
    );
    CREATE TABLE decisions (               -- the undo log of review decisions
        id INTEGER PRIMARY KEY,
        action TEXT NOT NULL,              -- status | crop | relabel
        image_id INTEGER NOT NULL REFERENCES images(id),
        old TEXT NOT NULL,                 -- JSON of the changed columns before
        new TEXT NOT NULL,                 -- JSON of the changed columns after
        created_at TEXT NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0
    );
    """,
    2: """
    ALTER TABLE images ADD COLUMN suspicion REAL;           -- 0..1 from `curate suspects`, NULL until scored
    ALTER TABLE images ADD COLUMN suggested_label TEXT;     -- the category the probe thinks it shows
    ALTER TABLE images ADD COLUMN suspicion_reason TEXT;    -- "looks more like baklava (91 %)", "far from its class"
    CREATE INDEX images_suspicion ON images(suspicion);
    CREATE TABLE embeddings (              -- backbone features, cached for suspects
        image_id INTEGER NOT NULL REFERENCES images(id),
        model TEXT NOT NULL,
        content TEXT NOT NULL,             -- sha256 and crop of what was embedded (a new crop invalidates it)
        vector BLOB NOT NULL,              -- float32, L2-normalized
        PRIMARY KEY (image_id, model)
    )
    """,
    3: """
    CREATE TABLE other_urls (              -- URLs that gave bytes already stored under another URL
        url TEXT PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id),
        created_at TEXT NOT NULL
    );
    ALTER TABLE decisions ADD COLUMN batch INTEGER;         -- decisions of one bulk action share it: undone together
    """,
    4: """
    ALTER TABLE images ADD COLUMN predicted_label TEXT;        -- demo feedback: the class the model gave the photo
    ALTER TABLE images ADD COLUMN predicted_probability REAL;  -- and its probability, 0..1
    ALTER TABLE images ADD COLUMN given_label TEXT;            -- demo feedback: what the user said it is
    """,
}


@dataclass(frozen=True)
class ImageRecord:
    """One image of the manifest. `path` is relative to the workspace root."""

    id: int
    path: str
    category: str
    status: str
    source: str
    query: str | None
    source_url: str | None
    sha256: str
    phash: int | None  # unsigned 64-bit perceptual hash, or None until computed
    width: int
    height: int
    bytes: int
    format: str
    flags: tuple[str, ...]
    crop: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) in pixels of the original
    duplicate_of: int | None
    created_at: str
    updated_at: str
    suspicion: float | None = None  # 0..1, higher = more likely wrong; None until `curate suspects` ran
    suggested_label: str | None = None
    suspicion_reason: str | None = None
    # from a photo sent back through the demo (source "demo-feedback"): what the model said, what the user said
    predicted_label: str | None = None
    predicted_probability: float | None = None
    given_label: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


_COLUMNS = ", ".join(f.name for f in fields(ImageRecord))


def now() -> str:
    """UTC timestamp with microseconds; sorts as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def to_int64(value: int) -> int:
    """Unsigned 64-bit → SQLite's signed INTEGER."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_uint64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _read_only(folder: Path) -> bool:
    """Whether nothing can be written in `folder`: a read-only mount (also for root), or no write permission."""
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)


def _row_to_record(row: Sequence) -> ImageRecord:
    values = dict(zip((f.name for f in fields(ImageRecord)), row))
    values["phash"] = None if values["phash"] is None else to_uint64(values["phash"])
    values["flags"] = tuple(f for f in values["flags"].split(",") if f)
    values["crop"] = None if values["crop"] is None else tuple(int(v) for v in values["crop"].split(","))
    return ImageRecord(**values)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise CurateError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")


def flags_sql(flags: Sequence[str]) -> str:
    """SQL that is true for an image with any of `flags` (the `flags` column is a comma-separated list): the one place
    that reads that column in SQL. Flag names are written into the SQL, so only lower-case names are taken."""
    for flag in flags:
        if not re.fullmatch(r"[a-z_]+", flag):
            raise CurateError(f"unknown quality flag {flag!r}")
    if not flags:
        return "0"
    return "(" + " OR ".join(f"(',' || flags || ',') LIKE '%,{flag},%'" for flag in flags) + ")"


def _image_filter(category: str | None = None, status: str | Sequence[str] | None = None, flag: str | None = None,
                  source_url: str | None = None) -> tuple[str, list]:
    """The WHERE clause (with its leading space, or empty) and parameters shared by the image queries."""
    where, params = [], []
    if category is not None:
        where.append("category = ?")
        params.append(category)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        for s in statuses:
            _check_status(s)
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        params += statuses
    if flag is not None:
        where.append(flags_sql([flag]))
    if source_url is not None:
        where.append("source_url = ?")
        params.append(source_url)
    return (" WHERE " + " AND ".join(where) if where else ""), params


class Workspace:
    """Owns a workspace folder and its SQLite connection; use as a context manager.

    `Workspace(root, create=False)` refuses a folder that has no manifest yet. `writes=False` (stats, export) also
    opens a manifest on a read-only disk or folder, for reading only.
    """

    def __init__(self, root: str | Path, create: bool = True, writes: bool = True):
        self.root = resolved(root)
        manifest = self.root / MANIFEST
        if not manifest.exists():
            if not create:
                raise CurateError(f"no workspace at {self.root} (missing {MANIFEST}); run `python -m curate import` or `scrape` first")
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._batch: int | None = None  # set inside `batch()`: the batch number of the decisions logged now
        self.read_only = False  # True when opened for reading only (`writes=False` on a read-only disk or folder)
        try:
            self._db = self._connect(manifest)
            (self.root / IMAGES_DIR).mkdir(exist_ok=True)
        except (sqlite3.OperationalError, OSError) as err:  # full or read-only disk, locked: the file may be fine
            if writes and _read_only(self.root):
                raise CurateError(f"{self.root} is on a read-only disk or folder: this command writes to it "
                                  "(`stats` and `export` only read)") from None
            if writes or "locked" in str(err) or not self._open_read_only(manifest):
                text = err if isinstance(err, sqlite3.Error) else err.strerror or err
                raise CurateError(f"cannot open {manifest}: {text} (is the disk full, read-only or busy?)") from None
        except sqlite3.DatabaseError as err:
            raise CurateError(f"{manifest} is not a usable manifest: {err}") from None

    def _connect(self, manifest: Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so one call is one transaction.
        self._db = sqlite3.connect(manifest, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        return self._db

    def _open_read_only(self, manifest: Path) -> bool:
        """For commands that only read (`writes=False`): open the manifest without writing a byte, also where WAL
        cannot make its side files (a read-only disk). False if it cannot be read either."""
        if getattr(self, "_db", None) is not None:
            self._db.close()
        for query in ("mode=ro", "immutable=1"):  # immutable: no -shm needed, safe because nothing can write here
            try:
                self._db = sqlite3.connect(f"{manifest.as_uri()}?{query}", uri=True, isolation_level=None,
                                           check_same_thread=False, timeout=30)
                version = self._db.execute("SELECT version FROM schema_version").fetchone()[0]
                break
            except sqlite3.OperationalError:
                self._db.close()
                self._db = None
        else:
            return False
        if version != SCHEMA_VERSION:
            self._db.close()
            raise CurateError(f"{manifest} is read-only and written by another curate (schema v{version}, this one "
                              f"v{SCHEMA_VERSION}); open it once where it can be written, or upgrade platekit")
        self.read_only = True
        return True

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write. Nested calls join the outer transaction."""
        with self._lock:
            if self._db is None:
                raise CurateError("workspace is closed")
            if self.read_only:
                raise CurateError(f"{self.root} is read-only here: this command only reads it")
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            if self._db is None:
                raise CurateError("workspace is closed")
            return self._db.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise CurateError(f"workspace schema v{version} is newer than this curate (v{SCHEMA_VERSION}); upgrade platekit")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        return self._query("SELECT version FROM schema_version")[0][0]

    # -- categories ---------------------------------------------------------------------------
    def ensure_category(self, category: str) -> str:
        """Register `category` (free text, stored as given) and return its unique folder name."""
        category = check_category(category)
        with self.transaction() as db:
            row = db.execute("SELECT folder FROM categories WHERE name = ?", (category,)).fetchone()
            if row:
                return row[0]
            base = folder_name(category)
            folder, n = base, 1
            while db.execute("SELECT 1 FROM categories WHERE folder = ?", (folder,)).fetchone():
                n += 1
                folder = f"{base}_{n}"
            db.execute("INSERT INTO categories VALUES (?, ?, ?)", (category, folder, now()))
            return folder

    def categories(self) -> dict[str, str]:
        """Category name → folder name, in the order they were added."""
        return dict(self._query("SELECT name, folder FROM categories ORDER BY created_at, name"))

    def folder_of(self, category: str) -> str:
        rows = self._query("SELECT folder FROM categories WHERE name = ?", (category,))
        if not rows:
            raise CurateError(f"unknown category {category!r}")
        return rows[0][0]

    # -- adding images ---------------------------------------------------------------------------
    def abspath(self, record: ImageRecord | str) -> Path:
        """Absolute path of an image (a record or its relative path)."""
        return self.root / (record.path if isinstance(record, ImageRecord) else record)

    def add_image(self, data: bytes, category: str, *, source: str, query: str | None = None,
                  source_url: str | None = None, info=None, flags: Sequence[str] = (),
                  phash: int | None = None, status: str = "pending",
                  predicted: tuple[str, float] | None = None, given_label: str | None = None) -> ImageRecord | None:
        """Store image bytes as a new original and record it; None if identical bytes are already stored
        (then `source_url` is remembered as another URL of that image, so `has_url` knows it).

        `info` is the curate.images.ImageInfo from validating `data` (validated here when None).
        The file is written under a temporary name and linked into place (never overwriting
        anything), then recorded in one transaction; a crash in between leaves only a file
        that the next add of the same bytes adopts. `predicted` (class, probability) and `given_label` record
        a demo user's verdict on the photo.
        """
        from curate.images import inspect_bytes  # images imports nothing from here; keep load order simple

        _check_status(status)
        info = info if info is not None else inspect_bytes(data, min_size_px=1)
        if self._query("SELECT 1 FROM images WHERE sha256 = ?", (info.sha256,)):
            self._remember_url(source_url, info.sha256)
            return None
        folder = self.ensure_category(category)
        rel = f"{IMAGES_DIR}/{folder}/{info.sha256[:20]}.{info.extension}"
        target = self.root / rel
        if target.exists():
            if target.read_bytes() != data:  # astronomically unlikely: same 80-bit prefix, other bytes
                raise CurateError(f"{rel} exists with other content; not overwriting it")
        else:
            try:
                write_new(target, data)
            except OSError as err:  # disk full, read-only, quota: nothing of this image is kept
                raise CurateError(f"cannot store images in {target.parent}: {err.strerror or err}") from None
        stamp = now()
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM images WHERE sha256 = ?", (info.sha256,)).fetchone():
                self._remember_url(source_url, info.sha256)  # another thread won the race with the same bytes
                return None
            cur = db.execute(
                "INSERT INTO images (path, category, status, source, query, source_url, sha256, phash, width,"
                " height, bytes, format, flags, crop, duplicate_of, created_at, updated_at, predicted_label,"
                " predicted_probability, given_label)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?)",
                (rel, category.strip(), status, source, query, source_url, info.sha256,
                 None if phash is None else to_int64(phash), info.width, info.height, info.bytes,
                 info.format, ",".join(flags), stamp, stamp, *(predicted or (None, None)), given_label))
            return self.get(cur.lastrowid)

    # -- reading ---------------------------------------------------------------------------
    def get(self, image_id: int) -> ImageRecord:
        rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise CurateError(f"no image with id {image_id}")
        return _row_to_record(rows[0])

    def list_images(self, category: str | None = None, status: str | Sequence[str] | None = None,
                    flag: str | None = None, source_url: str | None = None) -> list[ImageRecord]:
        """Images filtered by category, status (one or several), quality flag and/or URL; oldest first."""
        where, params = _image_filter(category, status, flag, source_url)
        return [_row_to_record(r) for r in self._query(f"SELECT {_COLUMNS} FROM images{where} ORDER BY id", params)]

    def count(self, category: str | None = None, status: str | Sequence[str] | None = None) -> int:
        where, params = _image_filter(category, status)
        return self._query(f"SELECT COUNT(*) FROM images{where}", params)[0][0]

    def _remember_url(self, url: str | None, sha256: str) -> None:
        if url is not None:
            with self.transaction() as db:
                db.execute("INSERT OR IGNORE INTO other_urls SELECT ?, id, ? FROM images WHERE sha256 = ?"
                           " AND source_url IS NOT ?", (url, now(), sha256, url))

    def has_url(self, url: str) -> bool:
        """Whether `url` gave an image already stored, as its own source or as a copy of another's bytes."""
        return bool(self._query("SELECT 1 FROM images WHERE source_url = ? UNION ALL"
                                " SELECT 1 FROM other_urls WHERE url = ? LIMIT 1", (url, url)))

    def with_sha256(self, sha256: str) -> ImageRecord | None:
        """The image stored with these bytes, if any (sha256 is unique in the manifest)."""
        rows = self._query(f"SELECT {_COLUMNS} FROM images WHERE sha256 = ?", (sha256,))
        return _row_to_record(rows[0]) if rows else None

    def stats(self) -> dict[str, dict]:
        """Per category: {"total": n, "status": {status: n}, "flags": {flag: n}}, categories in order added."""
        out: dict[str, dict] = {}
        for name in self.categories():
            out[name] = {"total": 0, "status": {s: 0 for s in STATUSES}, "flags": {}}
        for category, status, n in self._query("SELECT category, status, COUNT(*) FROM images GROUP BY 1, 2"):
            out[category]["status"][status] = n
            out[category]["total"] += n
        for category, flags in self._query("SELECT category, flags FROM images WHERE flags != ''"):
            for flag in flags.split(","):
                out[category]["flags"][flag] = out[category]["flags"].get(flag, 0) + 1
        return out

    # -- review decisions (logged, undoable) ------------------------------------------------------
    def _change(self, image_id: int, action: str, new: dict, log: bool) -> ImageRecord:
        with self.transaction() as db:
            record = self.get(image_id)
            old = {k: _to_db(k, getattr(record, k)) for k in new}
            if old == new:
                return record
            stamp = now()
            assignments = ", ".join(f"{k} = ?" for k in new)
            db.execute(f"UPDATE images SET {assignments}, updated_at = ? WHERE id = ?", (*new.values(), stamp, image_id))
            if log:
                db.execute("INSERT INTO decisions (action, image_id, old, new, created_at, batch) VALUES (?, ?, ?, ?, ?, ?)",
                           (action, image_id, json.dumps(old), json.dumps(new), stamp, self._batch))
            return self.get(image_id)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction whose logged decisions form one bulk action: `undo` takes them back together."""
        with self._lock, self.transaction() as db:
            if self._batch is not None:  # nested: joins the outer batch
                yield
                return
            self._batch = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM decisions").fetchone()[0]
            try:
                yield
            finally:
                self._batch = None

    def set_status(self, image_id: int, status: str, duplicate_of: int | None = None, log: bool = True) -> ImageRecord:
        """Set pending/accepted/rejected/duplicate (duplicate_of only kept for 'duplicate'). Logged for undo."""
        _check_status(status)
        if status == "duplicate" and duplicate_of is not None:
            self.get(duplicate_of)
        return self._change(image_id, "status", {"status": status, "duplicate_of": duplicate_of if status == "duplicate" else None}, log)

    def set_crop(self, image_id: int, box: tuple[int, int, int, int] | None, log: bool = True) -> ImageRecord:
        """Set the crop box (x0, y0, x1, y1) in upright pixels (EXIF orientation applied, as shown and exported),
        clamped to the image, or None to clear. Logged for undo."""
        if box is not None:
            from curate.images import clamp_box, upright_size  # images imports nothing from here

            record = self.get(image_id)
            box = clamp_box(box, *upright_size(self.abspath(record), record.width, record.height))
        return self._change(image_id, "crop", {"crop": _to_db("crop", box)}, log)

    def relabel(self, image_id: int, category: str, log: bool = True) -> ImageRecord:
        """Move an image to another category (the file stays where it is). Logged for undo."""
        with self.transaction():
            self.ensure_category(category)
            return self._change(image_id, "relabel", {"category": category.strip()}, log)

    def undo(self) -> list[ImageRecord]:
        """Revert the most recent decision not yet undone, or all of its bulk action (see `batch`); returns the images as
        restored, most recent decision first, or [] when there is nothing to undo."""
        with self.transaction() as db:
            row = db.execute("SELECT id, batch FROM decisions WHERE undone = 0 ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                return []
            decision_id, batch = row
            rows = (db.execute("SELECT id, image_id, old FROM decisions WHERE undone = 0 AND batch = ? ORDER BY id DESC",
                               (batch,)).fetchall() if batch is not None else
                    db.execute("SELECT id, image_id, old FROM decisions WHERE id = ?", (decision_id,)).fetchall())
            stamp, restored = now(), []
            for decision_id, image_id, old in rows:
                old = json.loads(old)
                assignments = ", ".join(f"{k} = ?" for k in old)
                db.execute(f"UPDATE images SET {assignments}, updated_at = ? WHERE id = ?", (*old.values(), stamp, image_id))
                db.execute("UPDATE decisions SET undone = 1 WHERE id = ?", (decision_id,))
                restored.append(image_id)
            return [self.get(i) for i in restored]

    def decisions(self, limit: int = 50) -> list[dict]:
        """Most recent decisions first: {id, action, image_id, old, new, created_at, undone, batch}."""
        rows = self._query("SELECT id, action, image_id, old, new, created_at, undone, batch FROM decisions"
                           " ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": r[0], "action": r[1], "image_id": r[2], "old": json.loads(r[3]), "new": json.loads(r[4]),
                 "created_at": r[5], "undone": bool(r[6]), "batch": r[7]} for r in rows]

    # -- pipeline writes (not logged) ------------------------------------------------------------
    def set_flags(self, image_id: int, flags: Sequence[str]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE images SET flags = ?, updated_at = ? WHERE id = ?", (",".join(flags), now(), image_id))

    def set_hashes(self, method: str, values: dict[int, int]) -> None:
        """Cache perceptual hashes (image id → unsigned 64-bit int) for `method`, in one transaction."""
        with self.transaction() as db:
            if method == "phash":
                db.executemany("UPDATE images SET phash = ? WHERE id = ?", [(to_int64(v), i) for i, v in values.items()])
            else:
                db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?)", [(i, method, to_int64(v)) for i, v in values.items()])

    def hashes(self, method: str) -> dict[int, int]:
        """Cached hashes for `method`: image id → unsigned 64-bit int."""
        if method == "phash":
            rows = self._query("SELECT id, phash FROM images WHERE phash IS NOT NULL")
        else:
            rows = self._query("SELECT image_id, value FROM hashes WHERE method = ?", (method,))
        return {i: to_uint64(v) for i, v in rows}

    def mark_duplicates(self, pairs: dict[int, int]) -> None:
        """Set status 'duplicate' with duplicate_of for many images (id → kept id), in one transaction."""
        stamp = now()
        with self.transaction() as db:
            db.executemany("UPDATE images SET status = 'duplicate', duplicate_of = ?, updated_at = ? WHERE id = ?",
                           [(keep, stamp, i) for i, keep in pairs.items()])

    def set_suspicion(self, values: dict[int, tuple[float | None, str | None, str | None]]) -> None:
        """Store (score, suggested label, reason) per image id; every image not in `values` is cleared."""
        with self.transaction() as db:
            db.execute("UPDATE images SET suspicion = NULL, suggested_label = NULL, suspicion_reason = NULL")
            db.executemany("UPDATE images SET suspicion = ?, suggested_label = ?, suspicion_reason = ? WHERE id = ?",
                           [(score, label, reason, i) for i, (score, label, reason) in values.items()])

    def embeddings(self, model: str) -> dict[int, tuple[str, bytes]]:
        """Cached embeddings for `model`: image id → (content key, float32 bytes)."""
        return {i: (c, v) for i, c, v in self._query("SELECT image_id, content, vector FROM embeddings WHERE model = ?", (model,))}

    def set_embeddings(self, model: str, values: dict[int, tuple[str, bytes]]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                           [(i, model, c, v) for i, (c, v) in values.items()])

    # -- integrity ---------------------------------------------------------------------------
    def integrity_problems(self, check_hashes: bool = False) -> list[str]:
        """Everything wrong with the workspace, as readable lines (empty list = consistent).

        Checks SQLite's own integrity, that every recorded file exists (and, with check_hashes,
        still has its recorded sha256), and that duplicate_of points at a recorded image.
        """
        import hashlib

        problems = [f"sqlite: {r[0]}" for r in self._query("PRAGMA integrity_check") if r[0] != "ok"]
        ids = {r[0] for r in self._query("SELECT id FROM images")}
        for record in self.list_images():
            path = self.abspath(record)
            if not path.is_file():
                problems.append(f"image {record.id}: file {record.path} is missing")
            elif check_hashes and hashlib.sha256(path.read_bytes()).hexdigest() != record.sha256:
                problems.append(f"image {record.id}: {record.path} does not match its sha256")
            if record.duplicate_of is not None and record.duplicate_of not in ids:
                problems.append(f"image {record.id}: duplicate_of {record.duplicate_of} does not exist")
        return problems


def _to_db(column: str, value):
    if column == "crop":
        return None if value is None else ",".join(str(int(v)) for v in value)
    return value


# -- read-only queries for views with their own ordering and paging (curate/views.py) -----------------
def select_images(ws: Workspace, where: str = "1", params: Sequence = (), order_by: str = "id",
                  limit: int = -1, offset: int = 0) -> list[ImageRecord]:
    """Images matching an SQL condition on the images table, in `order_by` order, one page at a time.

    `where` and `order_by` are SQL written by the caller (never user text); values go in `params`.
    """
    sql = f"SELECT {_COLUMNS} FROM images WHERE {where} ORDER BY {order_by} LIMIT ? OFFSET ?"
    return [_row_to_record(r) for r in ws._query(sql, (*params, limit, offset))]


def read_rows(ws: Workspace, sql: str, params: Sequence = ()) -> list[tuple]:
    """Rows of one read-only statement (SELECT / WITH / PRAGMA table_info) on the manifest."""
    if not re.match(r"\s*(SELECT|WITH|PRAGMA\s+table_info)\b", sql, re.IGNORECASE):
        raise CurateError("read_rows runs read-only statements only")
    return ws._query(sql, params)
