"""Tests for curate import and stats: ImageFolder trees, zips, flat folders, validation and idempotence."""
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


def test_a_demo_feedback_folder_comes_in_pending_with_what_the_model_said(tmp_path):
    from classify import feedback
    from classify.predict import Prediction
    from curate.importer import FEEDBACK_SOURCE
    from curate.review import meta_html

    folder = feedback.open_folder(tmp_path / "fb")
    said = Prediction([("ramen", 0.62), ("pad_thai", 0.3)], True, 0.8)
    soup, noodles, cake = (photo(tmp_path / "sent" / f"{k}.jpg", seed=300 + k).read_bytes() for k in range(3))
    feedback.record(folder, soup, "ramen", said)  # "Right"
    feedback.record(folder, noodles, "ramen", said)  # "Right", then corrected: the latest verdict counts
    feedback.record(folder, noodles, "Pad Thai", said)
    feedback.record(folder, cake, "Matcha Cake", said)
    photo(folder / "ramen" / "dropped-in.jpg", seed=310)  # no row names it
    with Workspace(tmp_path / "ws") as ws:
        report = import_images(ws, str(folder))
        assert {c: r.added for c, r in report.categories.items()} == {"ramen": 1, "Pad Thai": 1, "Matcha Cake": 1}
        assert report.skipped == {"superseded": 1, "not_in_feedback_log": 1}
        records = {r.category: r for r in ws.list_images(status="pending")}
        assert {r.source for r in records.values()} == {FEEDBACK_SOURCE}
        pad_thai = records["Pad Thai"]
        assert (pad_thai.predicted_label, pad_thai.predicted_probability, pad_thai.given_label) == \
            ("ramen", 0.62, "Pad Thai")
        assert ws.abspath(pad_thai).read_bytes() == noodles
        assert "the model said ramen (62 %), a user said Pad Thai" in meta_html(ws, pad_thai)
        assert "demo feedback" not in meta_html(ws, ws.add_image(photo(
            tmp_path / "other.jpg", seed=320).read_bytes(), "ramen", source="import"))
        again = import_images(ws, str(folder))  # a second import adds nothing twice
        assert again.added == 0 and sum(c.already_present for c in again.categories.values()) == 3
        with pytest.raises(CurateError, match="without --category"):
            import_images(ws, str(folder), category="ramen")
    log = folder / feedback.LOG_FILE  # edited by hand: a row that leaves the folder, a photo changed, a broken row
    rows = log.read_text().splitlines()
    log.write_text("\n".join([rows[0], rows[1].replace("ramen/", "../../", 1), rows[4], "oops,1"]) + "\n")
    (folder / rows[4].split(",")[1]).write_bytes(soup)
    with Workspace(tmp_path / "ws2") as ws:
        report = import_images(ws, str(folder))
        assert report.added == 0 and report.categories["Matcha Cake"].rejected == {"changed": 1}
        assert report.skipped["unsafe_path"] == 1 and report.skipped["bad_feedback_row"] == 1


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
