"""Bad and awkward image files through every stage (curate import/review/export, classify predict/decode, the demo):
one decoder, one pixel limit, memory bounded by input size, 16-bit and HEIC/AVIF files, crops on rotated photos."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from badinput import ROOT, assert_refused, run, run_measured, tree_digest
from classify import ClassifyError
from classify import data as D
from classify import images
from curate.workspace import Workspace

GB_KB = 1024 * 1024  # ru_maxrss and VmHWM are in KiB
def photo(path: Path, size=(400, 300), seed: int = 0, **save) -> Path:
    """A photo-like image (colour blobs); `save` goes to Image.save (format, exif, quality)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = int(rng.integers(0, size[0] - 20)), int(rng.integers(0, size[1] - 20))
        draw.ellipse((x, y, x + size[0] // 5, y + size[1] // 5), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def strip(path: Path, length: int) -> Path:
    """A 1 x `length` PNG: a couple of hundred bytes that a shorter-side-first resize would blow up to gigabytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (1, length), 128).save(path)
    return path


def gradient16(path: Path) -> Path:
    """A 16-bit grayscale PNG (mode I;16), a left-to-right ramp over the whole 0..65535 range: mean 127.5 in 8 bits."""
    ramp = np.tile(np.linspace(0, 65535, 512).round().astype(np.uint16), (256, 1))
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    return path


# --- classify predict: memory bounded by the file, not its shape ------------------------------------------------

@pytest.fixture(scope="module")
def predict_baseline(trained_bundle, tmp_path_factory) -> int:
    tmp = tmp_path_factory.mktemp("baseline")
    done, peak = run_measured("classify", "predict", "--model", trained_bundle, photo(tmp / "plain.jpg"))
    assert done.returncode == 0, done.stderr[-2000:]
    return peak


@pytest.mark.slow
@pytest.mark.parametrize("length", [20_000, 100_000])
def test_predict_refuses_a_tiny_strip_png_without_the_memory(tmp_path, trained_bundle, predict_baseline, length):
    image = strip(tmp_path / "in" / "strip.png", length)
    assert image.stat().st_size < 1000
    before = tree_digest(tmp_path / "in")
    done, peak = run_measured("classify", "predict", "--model", trained_bundle, image)
    assert_refused(done, "strip.png", f"1x{length} px", "20:1", code=1)
    assert peak < predict_baseline + GB_KB, (peak, predict_baseline)  # before: 6 GB (20000) and ~30 GB (100000)
    assert tree_digest(tmp_path / "in") == before


@pytest.mark.slow
def test_predict_a_big_legal_photo_still_works_in_bounded_memory(tmp_path, trained_bundle, predict_baseline):
    big = photo(tmp_path / "big.jpg", size=(8000, 6000), quality=80)  # 48 MP: a phone's full-resolution photo
    done, peak = run_measured("classify", "predict", "--model", trained_bundle, "--json", big)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"predictions"' in done.stdout and "Traceback" not in done.stderr
    assert peak < predict_baseline + GB_KB, (peak, predict_baseline)


def test_predict_refuses_an_image_over_the_one_pixel_limit(tmp_path, trained_bundle):
    enormous = tmp_path / "enormous.png"  # 64 MP of 1-bit pixels: a tiny file over the 50 MP limit
    Image.new("1", (8000, 8000)).save(enormous)
    done = run("classify", "predict", "--model", trained_bundle, enormous)
    assert_refused(done, "enormous.png", "8000x8000", "the limit is 50 MP", code=1)



def test_an_empty_file_is_said_to_be_empty(tmp_path, trained_bundle):
    (tmp_path / "photo.jpg").write_bytes(b"")  # was: "not an image in a supported format (avif, bmp, ...)"
    with pytest.raises(images.ImageError) as error:
        images.open_lazy(tmp_path / "photo.jpg")
    assert error.value.reason == "empty"
    assert_refused(run("classify", "predict", "--model", trained_bundle, tmp_path / "photo.jpg"), "photo.jpg",
                   "file is empty", code=1)


# --- curate import: the same limits, every refusal counted ------------------------------------------------------

@pytest.mark.slow
def test_import_counts_a_strip_and_keeps_a_big_photo_in_bounded_memory(tmp_path):
    small = tmp_path / "small" / "soup"
    photo(small / "a.jpg")
    baseline_done, baseline = run_measured("curate", "--workspace", tmp_path / "ws0", "import", small.parent)
    assert baseline_done.returncode == 0, baseline_done.stderr[-2000:]
    source = tmp_path / "src" / "soup"
    strip(source / "strip.png", 20_000)
    photo(source / "big.jpg", size=(8000, 6000), quality=80)
    before = tree_digest(source)
    done, peak = run_measured("curate", "--workspace", tmp_path / "ws", "import", source.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("soup"))
    assert row.split()[1] == "1" and "bad_shape 1" in row, done.stdout  # the big photo added, the strip counted
    assert peak < baseline + GB_KB, (peak, baseline)
    assert tree_digest(source) == before


def test_import_takes_heic_and_avif_and_an_avif_named_jpg(tmp_path):
    source = tmp_path / "src" / "soup"
    photo(source / "phone.heic", seed=1, format="HEIF")
    photo(source / "web.avif", seed=2, format="AVIF")
    photo(source / "renamed.jpg", seed=3, format="AVIF")  # AVIF bytes under a .jpg name: before, refused here only
    done = run("curate", "--workspace", tmp_path / "ws", "import", source.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    with Workspace(tmp_path / "ws", create=False) as ws:
        assert sorted(r.format for r in ws.list_images()) == ["AVIF", "AVIF", "HEIF"]


# --- 16-bit grayscale: scaled, not clipped to white -------------------------------------------------------------

def test_sixteen_bit_gradient_keeps_its_mean_in_classify_decode(tmp_path):
    assert abs(D.decode(gradient16(tmp_path / "ramp.png"), 64).mean() - 127.5) < 3  # before: 254 (white)


def export_soup(tmp_path: Path) -> list[Path]:
    """`curate export` of tmp_path/ws (one soup image, two salad ones) with the soup image in train/: its files."""
    done = run("curate", "--workspace", tmp_path / "ws", "export", tmp_path / "out", "--split", "0.5", "0.5", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    return list((tmp_path / "out" / "train" / "soup").glob("*.jpg"))


def test_sixteen_bit_gradient_keeps_its_mean_through_curate_export(tmp_path):
    source = tmp_path / "src" / "soup"
    source.mkdir(parents=True)
    gradient16(source / "ramp.png")
    for seed in (1, 2):  # a second class, so that export has a valid/ image to write
        photo(source.parent / "salad" / f"{seed}.jpg", seed=seed)
    assert run("curate", "--workspace", tmp_path / "ws", "import", source.parent).returncode == 0
    assert run("curate", "--workspace", tmp_path / "ws", "accept", "--all-flags-ok").returncode == 0
    exported = export_soup(tmp_path)
    assert len(exported) == 1
    pixels = np.asarray(Image.open(exported[0]).convert("L"), dtype=np.float32)
    assert pixels.shape == (256, 512) and abs(pixels.mean() - 127.5) < 3  # before: 254


# --- one list of formats: classify and the demo agree with curate -----------------------------------------------

def test_classify_decodes_heic_and_avif_and_finds_them_in_folders(tmp_path):
    for name, fmt in [("a.heic", "HEIF"), ("b.avif", "AVIF"), ("c.HEIF", "HEIF")]:
        photo(tmp_path / name, format=fmt)
    assert [p.name for p in D.images_in(tmp_path)] == ["a.heic", "b.avif", "c.HEIF"]
    for path in D.images_in(tmp_path):
        assert D.decode(path, 32).shape == (32, 32, 3)


def test_classify_refuses_formats_curate_refuses(tmp_path):
    ico = tmp_path / "icon.jpg"  # an ICO under a .jpg name: Pillow reads it, curate never accepted it
    Image.new("RGB", (64, 64)).save(ico, format="ICO")
    with pytest.raises(ClassifyError, match="unreadable image: not an image in a supported format"):
        D.decode(ico, 32)


# --- EXIF orientation: crops are in upright pixels everywhere ---------------------------------------------------

def rotated_photo(path: Path) -> Path:
    """Stored 400x300 with EXIF orientation 6 (rotate 90° clockwise to view): shown and exported as 300x400."""
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    return photo(path, size=(400, 300), exif=exif, quality=90)


def test_rotated_crop_clamps_to_the_upright_sides_and_exports_that_size(tmp_path):
    with Workspace(tmp_path / "ws") as ws:
        record = ws.add_image(rotated_photo(tmp_path / "r.jpg").read_bytes(), "soup", source="test")
        assert (record.width, record.height) == (400, 300)
        assert ws.set_crop(record.id, (0, 200, 300, 400)).crop == (0, 200, 300, 400)  # before: (0, 200, 300, 300)
        assert ws.set_crop(record.id, (-5, 350, 999, 999)).crop == (0, 350, 300, 400)
        ws.set_status(record.id, "accepted")
        for seed in (1, 2):  # a second class, so that export has a valid/ image to write
            other = ws.add_image(photo(tmp_path / f"salad{seed}.jpg", seed=seed).read_bytes(), "salad", source="test")
            ws.set_status(other.id, "accepted")
    exported = export_soup(tmp_path)
    assert len(exported) == 1 and Image.open(exported[0]).size == (300, 50)


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    """The real review app on a workspace holding one rotated photo, in headless Chromium."""
    from test_curate_review import CHROMIUM, CHROMIUM_ARGS, open_page
    from curate.review import launch

    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("review")
    with Workspace(root / "ws") as ws:
        image_id = ws.add_image(rotated_photo(root / "r.jpg").read_bytes(), "soup", source="test").id
    app = launch(root / "ws", port=None, open_browser=False, block=False, quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield open_page(browser, app.local_url), root / "ws", image_id
        browser.close()
    app.close()
    app.curate_workspace.close()


def type_crop(page, text: str, expected: str) -> str:
    """Type a crop in the box, save it, and return the page's message once it shows `expected`."""
    from test_curate_review import wait_message

    page.fill("#rv-crop-box textarea, #rv-crop-box input", text)
    page.click("#rv-crop-save")
    return wait_message(page, expected)


def crop_in_manifest(root: Path, image_id: int):
    with Workspace(root, create=False) as ws:
        return ws.get(image_id).crop


@pytest.mark.slow
def test_review_typed_crop_on_a_rotated_photo_is_kept_upright(review):
    page, root, image_id = review
    type_crop(page, "0,200,300,400", f"#{image_id} crop 0,200,300,400")
    assert crop_in_manifest(root, image_id) == (0, 200, 300, 400)
    assert page.get_attribute("#rv-crop-preview .rv-preview", "data-crop") == "0,200,300,400"


@pytest.mark.slow
@pytest.mark.parametrize("text, words", [
    ("1e309,0,10,10", "between -100,000 and 100,000"),  # before: OverflowError
    ("nan,0,10,10", "between -100,000 and 100,000"),
    ("0,0,5000000,10", "between -100,000 and 100,000"),
    ("0,0,10", "crop must be x0,y0,x1,y1"),
    ("300,0,400,100", "is empty inside a 300x400 image"),  # inside the stored 400x300, outside the upright one
])
def test_review_typed_crop_refuses_bad_numbers_and_keeps_the_crop(review, text, words):
    page, root, image_id = review
    with Workspace(root, create=False) as ws:
        ws.set_crop(image_id, (1, 2, 30, 40))
    page.reload()
    page.wait_for_selector("#rv-view .rv-stage")
    before = tree_digest(root / "images") if (root / "images").is_dir() else {}
    message = type_crop(page, text, words)
    assert "Traceback" not in message and "Error" not in message, message
    assert crop_in_manifest(root, image_id) == (1, 2, 30, 40)
    assert (tree_digest(root / "images") if (root / "images").is_dir() else {}) == before


# --- the demo: the same decoder, the same limits, bounded memory -------------------------------------------------

@pytest.fixture(scope="module")
def demo_server(trained_bundle, tmp_path_factory):
    """`python demo.py` on the tiny bundle; yields (gradio client, server pid)."""
    from gradio_client import Client
    from test_demo import start_demo

    log = tmp_path_factory.mktemp("demo-log") / "demo.log"
    process, url = start_demo(trained_bundle, log)
    yield Client(url, verbose=False), process.pid
    process.terminate()
    process.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_demo_refuses_a_strip_and_takes_big_heic_and_avif_photos_in_bounded_memory(demo_server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, pid = demo_server
    assert client.predict(handle_file(str(photo(tmp_path / "plain.jpg"))), api_name="/predict")
    baseline = peak_rss_kb(pid)
    for length in (20_000, 100_000):
        with pytest.raises(AppError, match=f"1x{length} px: one side is over 20 times the other"):
            client.predict(handle_file(str(strip(tmp_path / f"strip{length}.png", length))), api_name="/predict")
    big = photo(tmp_path / "big.jpg", size=(8000, 6000), quality=80)
    assert big.stat().st_size < 20 * 1024 * 1024
    for path in (big, photo(tmp_path / "p.heic", format="HEIF"), photo(tmp_path / "p.jpg", format="AVIF")):
        result = client.predict(handle_file(str(path)), api_name="/predict")
        assert len(result) == 3 and abs(sum(row["probability"] for row in result) - 1) < 1e-3
    assert peak_rss_kb(pid) < baseline + GB_KB, (peak_rss_kb(pid), baseline)


def test_demo_open_upload_uses_the_one_limit(tmp_path):
    import gradio as gr

    import demo

    enormous = tmp_path / "enormous.png"
    Image.new("1", (8000, 8000)).save(enormous)
    with pytest.raises(gr.Error, match="the limit is 50 MP"):
        demo.open_upload({"path": str(enormous), "orig_name": "enormous.png"})
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="ICO")
    (tmp_path / "icon.jpg").write_bytes(buffer.getvalue())
    with pytest.raises(gr.Error, match="not an image this demo can read"):
        demo.open_upload({"path": str(tmp_path / "icon.jpg"), "orig_name": "icon.jpg"})
