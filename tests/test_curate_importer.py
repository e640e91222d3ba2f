"""Tests for curate import and stats: ImageFolder trees, zips, flat folders, validation and idempotence."""
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from curate import CurateError
from curate.importer import import_images
from curate.workspace import Workspace

FOOD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "food-dev"


def photo(path, seed, size=(200, 160), fmt=None):
    """A textured image (distinct per seed) so hashes and quality flags behave like a photo."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)
    return path


def make_tree(root):
    n = 0
    for split in ("train", "valid", "test"):
        for cls in ("pad_thai", "ramen"):
            for k in range(2):
                photo(root / split / cls / f"{k}.jpg", seed=n)
                n += 1
    (root / "train" / "ramen" / "broken.jpg").write_bytes(b"<html>nope</html>")
    photo(root / "train" / "ramen" / "tiny.png", seed=99, size=(40, 40))
    (root / "train" / "ramen" / "notes.txt").write_text("not an image")
    return root


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_imagefolder_tree_merges_splits_and_is_idempotent(tmp_path):
    src = make_tree(tmp_path / "src")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    with Workspace(tmp_path / "ws") as ws:
        report = import_images(ws, str(src), rename={"pad_thai": "Pad Thai"})
        assert {c: r.added for c, r in report.categories.items()} == {"Pad Thai": 6, "ramen": 6}
        assert report.categories["ramen"].rejected == {"not_an_image": 1, "too_small": 1}
        again = import_images(ws, str(src), rename={"pad_thai": "Pad Thai"})
        assert again.added == 0 and again.categories["ramen"].already_present == 6
        records = ws.list_images(category="Pad Thai")
        assert len(records) == 6 and all(r.source == "import" for r in records)
        assert records[0].source_url == str(src / "test" / "pad_thai" / "0.jpg")
        assert ws.integrity_problems(check_hashes=True) == []
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # source untouched


def test_zip_flat_folder_and_bad_sources(tmp_path):
    src = make_tree(tmp_path / "src")
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in src.rglob("*.jpg"):
            z.write(p, "wrapper/" + p.relative_to(src).as_posix())
    flat = tmp_path / "flat"
    for k in range(3):
        photo(flat / f"{k}.webp", seed=200 + k, fmt="WEBP")
    with Workspace(tmp_path / "ws") as ws:
        report = import_images(ws, str(archive))
        assert report.added == 12 and set(report.categories) == {"pad_thai", "ramen"}
        assert ws.list_images()[0].source_url.startswith(f"{archive}!wrapper/")
        with pytest.raises(CurateError, match="--category"):
            import_images(ws, str(flat))
        assert import_images(ws, str(flat), category="Phở").added == 3
        assert {r.format for r in ws.list_images(category="Phở")} == {"WEBP"}
        with pytest.raises(CurateError, match="does not exist"):
            import_images(ws, str(tmp_path / "missing"))


def test_hf_source_without_datasets_is_clear(tmp_path):
    pytest.importorskip("PIL")
    try:
        import datasets  # noqa: F401
        pytest.skip("datasets is installed; this test checks the message when it is not")
    except ImportError:
        pass
    with Workspace(tmp_path / "ws") as ws, pytest.raises(CurateError, match="platekit\\[datasets\\]"):
        import_images(ws, "hf:food101:train")


def test_cli_import_and_stats(tmp_path):
    src = make_tree(tmp_path / "src")
    ws = tmp_path / "ws"
    out = run_cli("--workspace", str(ws), "import", str(src))
    assert out.returncode == 0, out.stderr
    assert "pad_thai" in out.stdout and "not_an_image 1" in out.stdout
    stats = run_cli("--workspace", str(ws), "stats", "--json")
    data = json.loads(stats.stdout)
    assert data["ramen"]["status"]["pending"] == 6 and data["ramen"]["total"] == 6
    bad = run_cli("--workspace", str(ws), "import", str(tmp_path / "nowhere"))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr
    missing = run_cli("--workspace", str(tmp_path / "none"), "stats")
    assert missing.returncode != 0 and "no workspace" in missing.stderr and "Traceback" not in missing.stderr


def test_food_dev_subset_quality_flags(tmp_path):
    if not FOOD_DEV.exists():
        pytest.skip(f"{FOOD_DEV} not present")
    src = tmp_path / "src"
    for p in sorted((FOOD_DEV / "valid" / "apple_pie").glob("*.jpg"))[:6]:
        (src / "apple_pie").mkdir(parents=True, exist_ok=True)
        (src / "apple_pie" / p.name).write_bytes(p.read_bytes())
    blurred = Image.open(p).filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(4))
    blurred.save(src / "apple_pie" / "blurred.jpg")
    Image.open(p).convert("L").convert("RGB").save(src / "apple_pie" / "gray.jpg")
    Image.new("RGB", (300, 300), (250, 250, 250)).save(src / "apple_pie" / "blank.jpg")
    with Workspace(tmp_path / "ws") as ws:
        assert import_images(ws, str(src)).added == 9
        flags = {Path(r.source_url).name: r.flags for r in ws.list_images()}
    assert "blurry" in flags["blurred.jpg"] and "grayscale" in flags["gray.jpg"]
    assert "near_blank" in flags["blank.jpg"] and "bright" in flags["blank.jpg"]
    assert sum(1 for name, f in flags.items() if f and name[0].isdigit()) == 0  # real photos: no flags


def test_cli_check_recomputes_flags(tmp_path):
    src = tmp_path / "src" / "ramen"
    photo(src / "ok.jpg", seed=1, size=(240, 200))
    photo(src / "wide.jpg", seed=2, size=(700, 200))
    Image.new("RGB", (200, 200), (12, 12, 12)).save(src / "dark.png")
    ws_dir = tmp_path / "ws"
    assert run_cli("--workspace", str(ws_dir), "import", str(tmp_path / "src")).returncode == 0
    with Workspace(ws_dir) as ws:
        records = {Path(r.source_url).name: r for r in ws.list_images()}
        assert "extreme_aspect" in records["wide.jpg"].flags and "dark" in records["dark.png"].flags
        for r in records.values():  # as if flagged by an older version, or by hand
            ws.set_flags(r.id, ("blurry",))
        originals = {r.path: ws.abspath(r).read_bytes() for r in records.values()}
    out = run_cli("--workspace", str(ws_dir), "check")
    assert out.returncode == 0, out.stderr
    assert "extreme_aspect" in out.stdout  # the summary table
    with Workspace(ws_dir) as ws:
        after = {Path(r.source_url).name: r.flags for r in ws.list_images()}
        assert all(ws.abspath(r).read_bytes() == originals[r.path] for r in ws.list_images())
    assert after["ok.jpg"] == () and "extreme_aspect" in after["wide.jpg"] and "blurry" not in after["wide.jpg"]
    assert "dark" in after["dark.png"] and "near_blank" in after["dark.png"]


def test_import_summary_names_the_files_refused_as_exact_duplicates(tmp_path, capsys):
    import hashlib

    from curate.__main__ import main

    src = tmp_path / "src"
    data = photo(src / "soup" / "a.jpg", seed=1).read_bytes()
    (src / "soup" / "copy of a.jpg").write_bytes(data)
    (src / "salad").mkdir()
    (src / "salad" / "a again.jpg").write_bytes(data)  # the same bytes, filed elsewhere
    photo(src / "salad" / "b.jpg", seed=2)
    assert main(["--workspace", str(tmp_path / "ws"), "import", str(src)]) == 0
    out = capsys.readouterr().out
    with Workspace(tmp_path / "ws") as ws:
        assert ws.count() == 2
        kept = ws.with_sha256(hashlib.sha256(data).hexdigest())
    assert "2 files not added: the same bytes are already in the workspace" in out
    names = {"a.jpg", "copy of a.jpg", "a again.jpg"} - {Path(kept.source_url).name}
    for name in names:
        line = next(line for line in out.splitlines() if line.strip().startswith(str(src)) and line.split("  =")[0].endswith(name))
        assert f"= #{kept.id} in {kept.category} ({kept.source_url})" in line
