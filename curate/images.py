"""Safe opening and validation of image files for curate: a wrapper of classify.images (the one decoder) that adds
curate's minimum size, file facts for the manifest and crop boxes in upright pixels."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from classify import images as decoder
from curate import CurateError

ALLOWED_FORMATS = decoder.ALLOWED_FORMATS
EXTENSIONS = decoder.EXTENSIONS
IMAGE_SUFFIXES = decoder.IMAGE_EXTENSIONS
MAX_PIXELS = decoder.MAX_PIXELS
REASONS = decoder.REASONS
MIN_SIZE_PX = 128
# Byte cap on one file, downloaded or imported: 30 MB is far above any photo worth training on. Readers stop just
# past it instead of trusting a size someone else declared (a zip directory, a Content-Length).
MAX_FILE_BYTES = 30_000_000


class InvalidImage(CurateError):
    """A file that is not a usable image; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned about an image file."""

    format: str  # Pillow's name for the real format: JPEG, PNG, WEBP, ...
    width: int  # as stored (before EXIF orientation); `upright_size` gives the shown sides
    height: int
    bytes: int
    sha256: str
    mode: str

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def _open(source, max_pixels: int) -> Image.Image:
    try:
        return decoder.open_lazy(source, max_pixels)
    except decoder.ImageError as error:
        raise InvalidImage(error.reason, str(error)) from None


def stored_size(source: str | Path | bytes) -> tuple[int, int]:
    """Width and height as stored (before EXIF orientation), from the header alone; InvalidImage when unusable."""
    image = _open(source, MAX_PIXELS)
    with image:
        return image.size


def inspect_bytes(data: bytes, min_size_px: int = MIN_SIZE_PX, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Fully decode `data` and return its facts, or raise InvalidImage with a reason.

    The whole image is decoded (not just the header) so truncated files are caught; the real format
    is what Pillow finds in the bytes, whatever the file name says; images whose shorter side is below
    `min_size_px` are refused as too small.
    """
    image = _open(data, max_pixels)
    fmt, mode = image.format or "", image.mode
    try:
        image.load()
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InvalidImage("truncated", f"image data is damaged or truncated ({err})") from None
    finally:
        image.close()
    if min(image.size) < min_size_px:
        raise InvalidImage("too_small", f"{image.width}x{image.height} px is below the {min_size_px}-px minimum")
    return ImageInfo(fmt, image.width, image.height, len(data), hashlib.sha256(data).hexdigest(), mode)


def open_image(path: str | Path | bytes, mode: str = "RGB", max_pixels: int = MAX_PIXELS,
               draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image (a path or its bytes) fully into memory, upright (EXIF orientation applied), as `mode`
    (16-bit images scaled to 8 bits). `draft_size` lets JPEG decode at a reduced scale (at least that size), much
    faster when only a small version is needed (hashing, thumbnails). Raises InvalidImage when the file is unusable.
    """
    image = _open(path if isinstance(path, (bytes, bytearray)) else Path(path), max_pixels)
    try:
        return decoder.load(image, mode, draft_size)
    except decoder.ImageError as error:
        raise InvalidImage(error.reason, str(error)) from None


def upright_size(path: str | Path, width: int, height: int) -> tuple[int, int]:
    """(width, height) of the image file at `path` (stored as `width` x `height`) as shown and exported: EXIF
    orientations 5-8 swap the sides. Crop boxes are in these upright pixels."""
    try:
        with decoder.open_lazy(Path(path)) as image:
            return decoder.upright_size(image)
    except (decoder.ImageError, OSError):
        return width, height


def clamp_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A crop box (x0, y0, x1, y1) rounded to whole pixels and clamped to a `width` x `height` (upright) image.
    Raises CurateError for numbers that are not finite or a box with nothing inside the image."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise CurateError(f"crop box must be 4 finite pixel positions x0,y0,x1,y1, got {box!r}")
    x0, y0, x1, y1 = (round(v) for v in values)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise CurateError(f"crop box {tuple(box)} is empty inside a {width}x{height} image")
    return x0, y0, x1, y1


def crop(image: Image.Image, box) -> Image.Image:
    """`image` (upright, as open_image gives it) cut to `box` clamped to its sides (a box saved before crops were
    clamped to the upright sides may reach past them)."""
    return image.crop(clamp_box(box, *image.size))
