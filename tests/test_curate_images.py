"""Tests for curate.images: validation of real image bytes of every kind we meet when scraping."""
import io

import pytest
from PIL import Image

from curate.images import InvalidImage, inspect_bytes, open_image


def encode(fmt, size=(200, 150), color=(200, 80, 40), **kw):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,expected", [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP")])
def test_valid_formats_report_real_size_and_format(fmt, expected):
    data = encode(fmt)
    info = inspect_bytes(data)
    assert (info.format, info.width, info.height, info.bytes) == (expected, 200, 150, len(data))
    assert len(info.sha256) == 64


def test_png_named_jpg_is_png(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode("PNG"))
    info = inspect_bytes(path.read_bytes())
    assert info.format == "PNG" and info.extension == "png"


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"<html><body>Not found</body></html>", "not_an_image"),
    (encode("JPEG", (400, 400))[:2000], "truncated"),
    (encode("PNG", (100, 300)), "too_small"),
])
def test_bad_inputs_rejected_with_reason(data, reason):
    with pytest.raises(InvalidImage) as err:
        inspect_bytes(data)
    assert err.value.reason == reason


def test_decompression_bomb_refused_before_decoding():
    # A 1-bit 20000x20000 PNG is tiny on disk but 400 MP when decoded.
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(InvalidImage) as err:
        inspect_bytes(buf.getvalue())
    assert err.value.reason == "too_large"


def test_open_image_draft_decodes_smaller(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(encode("JPEG", (800, 600)))
    full = open_image(path)
    small = open_image(path, mode="L", draft_size=(64, 64))
    assert full.size == (800, 600) and full.mode == "RGB"
    assert small.mode == "L" and 64 <= small.size[0] < 800 and small.size[1] >= 64
