"""Opening image files: platekit's one decoder, its one pixel limit and its one list of formats (curate wraps it)."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pillow_heif import register_heif_opener

from classify import ClassifyError

# Phones write HEIC (iPhone default) and some write AVIF; Pillow >= 11.3 reads AVIF itself, pillow-heif adds HEIF.
register_heif_opener()

# Formats accepted whatever the file is called; MPO is what some cameras write for JPEG.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
# The suffix a copy of each format is given, and the suffixes under which image files are found in folders.
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
              "HEIF": "heic", "AVIF": "avif"}
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic",
                              ".heif", ".avif"})
# Decompression-bomb guard: 50 MP lets a 48 MP phone photo (8064x6048) through; decoded, the worst allowed mode
# (4 bytes a pixel: CMYK, I, F) is 200 MB, and every copy made on the way to 8-bit RGB stays well under 1 GB.
MAX_PIXELS = 50_000_000
# Refused rather than centre-cropped: a phone's widest sweep panorama is about 6:1; a strip longer than 20:1 is a
# banner or a scan line, not a photo of a plate, and a square cut from it would show under 5 % of it. Together with
# MAX_PIXELS this bounds what any stage decodes by both sides before a pixel is read.
MAX_ASPECT = 20
# Why an image was refused; scrape and import count rejections by these names.
REASONS = ("empty", "not_an_image", "unsupported_format", "truncated", "too_small", "too_large", "bad_shape")
# Pillow's own openers never tried: MPO is reached through the JPEG opener.
_OPENERS = [name for name in ALLOWED_FORMATS if name != "MPO"]
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
EXIF_ORIENTATION = 0x0112


class ImageError(ClassifyError):
    """A file that is not a usable image; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def open_lazy(source) -> Image.Image:
    """Open an image (a path, its bytes, a file object) reading the header only; `check` it before any pixel is
    decoded. Raises ImageError with a reason."""
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("empty", "file is empty")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)) and not Path(source).is_file():  # a fifo would block open() for ever
        raise ImageError("not_an_image", "no such file" if not Path(source).exists()
                         else "not a file (a folder, pipe or device)")
    elif isinstance(source, (str, os.PathLike)) and Path(source).stat().st_size == 0:
        raise ImageError("empty", "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `check` applies the lower limit
            image = Image.open(Path(source) if isinstance(source, str) else source, formats=_OPENERS)
    except Image.DecompressionBombError:  # over twice Pillow's own limit (~179 MP): refused before we see the size
        raise ImageError("too_large", f"image is too large to decode safely: the limit is {MAX_PIXELS / 1e6:g} MP") \
            from None
    except Image.UnidentifiedImageError:
        raise ImageError("not_an_image", "not an image in a supported format "
                                         f"({', '.join(sorted(set(EXTENSIONS.values())))})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError("not_an_image", f"cannot read image: {error}") from None
    try:
        check(image)
    except ImageError:
        image.close()
        raise
    return image


def check(image: Image.Image) -> None:
    """Refuse an opened image that is not an allowed format, over MAX_PIXELS, or longer than MAX_ASPECT to one.
    An image made in memory (no format) is only checked for size."""
    width, height = image.size
    if image.format is not None and image.format not in ALLOWED_FORMATS:
        raise ImageError("unsupported_format", f"format {image.format} is not supported")
    if width * height > MAX_PIXELS:
        raise ImageError("too_large", f"{width}x{height} px ({width * height / 1e6:.0f} MP) is too large to decode "
                                      f"safely: the limit is {MAX_PIXELS / 1e6:g} MP")
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError("bad_shape", f"{width}x{height} px: one side is over {MAX_ASPECT} times the other, "
                                      f"not a photo (the limit is {MAX_ASPECT}:1)")


def to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grayscale (I;16, I, F) as 8-bit L, scaled: Pillow's own convert clips 0..65535 to 0..255, so a
    16-bit photo comes out white. Values that fit 0..255 are kept as they are (an 8-bit image stored wide)."""
    if image.mode not in _WIDE_MODES:
        return image
    pixels = np.asarray(image, dtype=np.float32)
    high = float(pixels.max()) if pixels.size else 0.0
    if image.mode == "F" and high <= 1.0:
        scale = 255.0  # floating point images are 0..1
    else:
        scale = 255.0 / 65535.0 if high > 255 else 1.0
    return Image.fromarray(np.clip(pixels * scale + 0.5, 0, 255).astype(np.uint8), "L")


# What Pillow raises on pixel data that is damaged or cut short, once the header has been read.
_DAMAGED = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _damaged(error: Exception) -> ImageError:
    return ImageError("truncated", f"image data is damaged or truncated ({error})")


def verify(image: Image.Image) -> None:
    """Decode every pixel of a lazily opened image (its first frame), keeping it as stored: ImageError("truncated")
    when the data is damaged. For validation, where the file's facts matter and not its upright RGB pixels."""
    try:
        image.load()
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
    except _DAMAGED as error:
        raise _damaged(error) from None


def load(image: Image.Image, mode: str = "RGB", draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a lazily opened image fully, upright (EXIF orientation applied), as `mode` (8 bits a channel).

    `draft_size` lets JPEG decode at a reduced scale (still at least that size): much faster when only a small
    version is needed. Raises ImageError("truncated") when the pixel data is damaged.
    """
    try:
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            image.draft(mode if mode in ("L", "RGB") else "RGB", draft_size)
        image.load()
        image = to_8bit(ImageOps.exif_transpose(image))
        return image.convert(mode) if image.mode != mode else image
    except _DAMAGED as error:
        raise _damaged(error) from None


def open_image(source, mode: str = "RGB", draft_size: tuple[int, int] | None = None) -> Image.Image:
    """open_lazy then load: a path, bytes or file object decoded, upright, as `mode`."""
    return load(open_lazy(source), mode, draft_size)


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as shown upright: EXIF orientations 5-8 swap the sides."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else image.size


def square(source, size_px: int) -> np.ndarray:
    """An image (path, bytes, file object or PIL image) upright, its centre square scaled to `size_px`: HxWx3 uint8.

    The square is cut before resizing (resize's box), so the result costs size_px² whatever the image's shape; with
    `check`'s limits nothing larger than MAX_PIXELS is ever decoded on the way.
    """
    if isinstance(source, Image.Image):
        check(source)
        image = source
    else:
        image = open_lazy(source)
    image = load(image, "RGB", (size_px, size_px))
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    image = image.resize((size_px, size_px), Image.BICUBIC, box=(left, top, left + side, top + side),
                         reducing_gap=3.0)
    return np.asarray(image)
