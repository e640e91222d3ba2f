"""Small copies of workspace images for the review UI: made once per image, cached under WORKSPACE/thumbnails/."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from curate import images
from curate.images import InvalidImage, open_image
from curate.workspace import ImageRecord, Workspace

THUMBNAILS_DIR = "thumbnails"
GRID_PX = 160  # grid cells are 150 px wide
VIEW_PX = 1024  # the single-image view is at most ~900 px wide on a laptop screen
# Originals a browser shows as they are; any other format (TIFF, BMP) or a bigger original gets a cached copy.
BROWSER_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")


def cached_copy(ws: Workspace, record: ImageRecord, size_px: int) -> Path | None:
    """A JPEG of `record` at most `size_px` on its longer side, upright; made on first use. None if undecodable.

    Named by content hash and size, so a copy is never stale and is shared by identical files.
    """
    path = ws.root / THUMBNAILS_DIR / str(size_px) / f"{record.sha256[:24]}.jpg"
    if path.exists():
        return path
    try:
        image = open_image(ws.abspath(record), mode="RGB", draft_size=(size_px, size_px))
    except (InvalidImage, OSError):
        return None
    image.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
    # write then rename: two requests making the same copy never leave a half-written file behind
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)
    except OSError:  # a full or read-only disk: shown as missing, the review itself goes on
        tmp.unlink(missing_ok=True)
        return None
    return path


def shown_as_is(record: ImageRecord) -> bool:
    """Whether the single-image view shows the original file (a browser format, not much bigger than the view)."""
    return record.format in BROWSER_FORMATS and max(record.width, record.height) <= VIEW_PX * 3 // 2


def view_file(ws: Workspace, record: ImageRecord, make: bool = True) -> Path | None:
    """The file to show large: the original when a browser can show it as is, else a cached copy.

    With make=False, None when the copy is not made yet (for prefetching without waiting).
    """
    if shown_as_is(record):
        return ws.abspath(record)
    path = ws.root / THUMBNAILS_DIR / str(VIEW_PX) / f"{record.sha256[:24]}.jpg"
    if path.exists() or not make:
        return path if path.exists() else None
    return cached_copy(ws, record, VIEW_PX)


def upright_size(ws: Workspace, record: ImageRecord) -> tuple[int, int]:
    """(width, height) as shown: EXIF orientations 5-8 swap the sides (browsers and export both apply them)."""
    return images.upright_size(ws.abspath(record), record.width, record.height)


class BackgroundCopies:
    """Makes display copies off the request path (the image the reviewer will likely see next), one at a time.

    Bounded: at most `limit` copies wait; a request beyond that is dropped (the copy is then made when its image is
    shown). Owns its worker thread: `close()` when the app stops.
    """

    def __init__(self, limit: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-copies")
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        self._limit = limit

    def request(self, ws: Workspace, record: ImageRecord) -> None:
        with self._lock:
            if record.sha256 in self._waiting or len(self._waiting) >= self._limit:
                return
            self._waiting.add(record.sha256)
        self._pool.submit(self._make, ws, record)

    def _make(self, ws: Workspace, record: ImageRecord) -> None:
        try:
            view_file(ws, record)
        finally:
            with self._lock:
                self._waiting.discard(record.sha256)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
