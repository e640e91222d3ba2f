"""Safe opening and validation of image files: the one place in curate that decodes images."""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from curate import CurateError

# Formats we accept whatever the file is called; MPO is what some cameras write for JPEG.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
MIN_SIZE_PX = 128
# Decompression-bomb guard: 40 MP is well beyond any useful training photo and far below what exhausts memory.
MAX_PIXELS = 40_000_000
# Byte cap on one file, downloaded or imported: 30 MB is far above any photo worth training on. Readers stop just
# past it instead of trusting a size someone else declared (a zip directory, a Content-Length).
MAX_FILE_BYTES = 30_000_000
# Why an image was refused; scrape and import count rejections by these names.
REASONS = ("empty", "not_an_image", "unsupported_format", "truncated", "too_small", "too_large")


class InvalidImage(CurateError):
    """A file that is not a usable image; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned about an image file."""

    format: str  # Pillow's name for the real format: JPEG, PNG, WEBP, ...
    width: int
    height: int
    bytes: int
    sha256: str
    mode: str

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def _open(data: bytes | Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse bombs before any pixel is decoded."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=[f for f in ALLOWED_FORMATS if f != "MPO"])
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise InvalidImage("too_large", f"image is too large to decode safely ({err})") from None
    except Image.UnidentifiedImageError:
        raise InvalidImage("not_an_image", "not an image in a supported format") from None
    except OSError as err:
        raise InvalidImage("not_an_image", f"cannot read image: {err}") from None
    if image.width * image.height > max_pixels:
        image.close()
        raise InvalidImage("too_large", f"{image.width}x{image.height} px is over the {max_pixels:,}-pixel limit")
    return image


def inspect_bytes(data: bytes, min_size_px: int = MIN_SIZE_PX, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Fully decode `data` and return its facts, or raise InvalidImage with a reason.

    The whole image is decoded (not just the header) so truncated files are caught; the real format
    is what Pillow finds in the bytes, whatever the file name says; images whose shorter side is below
    `min_size_px` are refused as too small.
    """
    if not data:
        raise InvalidImage("empty", "file is empty")
    image = _open(data, max_pixels)
    try:
        fmt = image.format or ""
        image.load()
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InvalidImage("truncated", f"image data is damaged or truncated ({err})") from None
    finally:
        image.close()
    if fmt not in ALLOWED_FORMATS:
        raise InvalidImage("unsupported_format", f"format {fmt or 'unknown'} is not supported")
    if min(image.size) < min_size_px:
        raise InvalidImage("too_small", f"{image.width}x{image.height} px is below the {min_size_px}-px minimum")
    return ImageInfo(fmt, image.width, image.height, len(data), hashlib.sha256(data).hexdigest(), image.mode)


def inspect_file(path: str | Path, min_size_px: int = MIN_SIZE_PX, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """inspect_bytes for a file on disk."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InvalidImage("not_an_image", f"cannot read {path}: {err.strerror}") from None
    return inspect_bytes(data, min_size_px, max_pixels)


def open_image(path: str | Path | bytes, mode: str = "RGB", max_pixels: int = MAX_PIXELS,
               draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image (a path or its bytes) fully into memory, upright (EXIF orientation applied), as `mode`.

    `draft_size` lets JPEG decode at a reduced scale (at least that size), much faster when only a
    small version is needed (hashing, thumbnails). Raises InvalidImage when the file is unusable.
    """
    image = _open(path if isinstance(path, (bytes, bytearray)) else Path(path), max_pixels)
    try:
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            image.draft(mode if mode in ("L", "RGB") else "RGB", draft_size)
        image.load()
        image = ImageOps.exif_transpose(image)
        return image.convert(mode) if image.mode != mode else image
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidImage("truncated", f"image data is damaged or truncated ({err})") from None
