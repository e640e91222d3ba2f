"""Tests for curate export: stratified seeded splits, groups kept together, crops on copies, all-or-nothing."""
import csv
import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from curate import CurateError
from curate.export import ExportConfig, export
from curate.workspace import Workspace
from test_curate_importer import photo, run_cli


def jpeg(image, quality=90):
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build(tmp_path, per_class=10, categories=("Pad Thai", "Ramen", "phở")):
    ws = Workspace(tmp_path / "ws")
    ids = {}
    seed = 0
    for c in categories:
        for k in range(per_class):
            image = Image.open(photo(tmp_path / "src" / f"{seed}.png", seed, size=(240, 200)))
            fmt = "PNG" if k == 0 else "JPEG"
            buf = io.BytesIO()
            image.convert("RGB").save(buf, fmt)
            r = ws.add_image(buf.getvalue(), c, source="import", source_url=f"file://{seed}")
            ws.set_status(r.id, "accepted", log=False)
            ids.setdefault(c, []).append(r.id)
            seed += 1
    return ws, ids


def read_manifest(out):
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_export_layout_stratified_groups_and_crops(tmp_path):
    ws, ids = build(tmp_path)
    # a near-duplicate pair (re-encoded copy) must land in one split
    original = ws.get(ids["Ramen"][1])
    copy = ws.add_image(jpeg(Image.open(ws.abspath(original)), 60), "Ramen", source="import")
    ws.set_status(copy.id, "accepted")
    ws.set_crop(ids["Pad Thai"][2], (10, 20, 110, 120))
    ws.set_status(ids["phở"][3], "rejected")
    before = {p: p.read_bytes() for p in (ws.root / "images").rglob("*") if p.is_file()}
    report = export(ws, tmp_path / "out", ExportConfig(seed=3))
    out = tmp_path / "out"
    assert report.counts["Pad Thai"] == {"train": 8, "valid": 1, "test": 1, "augmented": 0}
    assert sum(report.counts["phở"][s] for s in ("train", "valid", "test")) == 9
    rows = read_manifest(out)
    assert len(rows) == 10 + 11 + 9 == report.files
    split = {int(r["image_id"]): r["split"] for r in rows}
    assert split[original.id] == split[copy.id]
    assert {p.name for p in (out / "train").iterdir()} == {"pad_thai", "ramen", "phở"}
    for r in rows:
        assert (out / r["path"]).is_file() and r["path"].endswith(".jpg")
        assert Image.open(out / r["path"]).format == "JPEG"
    cropped = next(r for r in rows if int(r["image_id"]) == ids["Pad Thai"][2])
    assert Image.open(out / cropped["path"]).size == (100, 100)
    assert next(r for r in rows if int(r["image_id"]) == ids["Pad Thai"][0])["source_url"] == "file://0"
    assert {p: p.read_bytes() for p in (ws.root / "images").rglob("*") if p.is_file()} == before
    # same seed, same split; other seed, other split; existing OUT needs --overwrite
    export(ws, tmp_path / "again", ExportConfig(seed=3))
    assert {r["path"] for r in read_manifest(tmp_path / "again")} == {r["path"] for r in rows}
    with pytest.raises(CurateError, match="already exists"):
        export(ws, tmp_path / "out", ExportConfig(seed=4))
    export(ws, tmp_path / "out", ExportConfig(seed=4, overwrite=True))
    assert {r["path"] for r in read_manifest(out)} != {r["path"] for r in rows}
    assert not list(tmp_path.glob(".out.*"))
    ws.close()


def test_min_per_class_and_balance(tmp_path):
    ws, ids = build(tmp_path, per_class=6, categories=("Pad Thai", "Ramen"))
    for i in ids["Ramen"][2:]:
        ws.set_status(i, "pending")
    with pytest.raises(CurateError, match="class 'Ramen' has 2 accepted images"):
        export(ws, tmp_path / "out", ExportConfig(min_per_class=3))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    report = export(ws, tmp_path / "out", ExportConfig(min_per_class=3, include_pending=True, balance=12))
    assert report.counts["Ramen"]["augmented"] == 12 - report.counts["Ramen"]["train"]
    assert len(list((tmp_path / "out" / "train" / "ramen").glob("*.jpg"))) == 12
    assert not list((tmp_path / "out" / "valid").rglob("aug-*"))
    aug = [r for r in read_manifest(tmp_path / "out") if r["augmented_from"]]
    assert len(aug) == report.counts["Ramen"]["augmented"] + report.counts["Pad Thai"]["augmented"]
    ws.close()


def test_cli_export_errors_are_one_line(tmp_path):
    ws, _ = build(tmp_path, per_class=3, categories=("A", "B"))
    ws.close()
    out = run_cli("--workspace", str(tmp_path / "ws"), "export", str(tmp_path / "out"), "--min-per-class", "5")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "class 'A' has 3" in out.stderr
    out = run_cli("--workspace", str(tmp_path / "ws"), "export", str(tmp_path / "out"), "--split", "0.5", "0.5", "0.5")
    assert out.returncode == 2 and "sum" in out.stderr


@pytest.mark.slow
def test_classify_trains_on_export(tmp_path):
    ws, _ = build(tmp_path, per_class=10, categories=("Pad Thai", "Ramen"))
    export(ws, tmp_path / "out", ExportConfig(split=(0.6, 0.2, 0.2)))
    ws.close()
    run = subprocess.run([sys.executable, "-m", "classify", "train", "--data", str(tmp_path / "out"), "--out",
                          str(tmp_path / "run"), "--model", "efficientnet_lite0", "--epochs", "1", "--image-size", "64",
                          "--freeze", "all", "--quiet", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert any((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_mirror_pair_by_cached_embedding_stays_in_one_split(tmp_path, food_dev):
    """A photo and its mirror (phash cannot link them) share a split once their embeddings are cached."""
    from PIL import ImageOps

    from curate.embeddings import embed_records

    classes = sorted(p for p in (food_dev / "train").iterdir() if p.is_dir())
    photos = [Image.open(f).convert("RGB") for c in classes for f in sorted(c.glob("*.jpg"))[:2]]
    with Workspace(tmp_path / "ws") as ws:
        ids = [ws.add_image(jpeg(image), "Food", source="import").id for image in photos]
        twin = ws.add_image(jpeg(ImageOps.mirror(photos[0])), "Food", source="import").id
        for i in [*ids, twin]:
            ws.set_status(i, "accepted", log=False)

        def split_of_pair(seed, name):
            report = export(ws, tmp_path / name, ExportConfig(split=(0.4, 0.3, 0.3), seed=seed))
            rows = {int(r["image_id"]): r["split"] for r in read_manifest(tmp_path / name)}
            return rows[ids[0]], rows[twin], report.groups_kept

        apart = [seed for seed in range(8) if len(set(split_of_pair(seed, f"plain{seed}")[:2])) == 2]
        assert apart  # without embeddings the seeded split parts the pair for some seed: the test can fail
        embed_records(ws, ws.list_images())  # as suspects or dedup leave them cached
        for seed in apart:
            first, second, kept = split_of_pair(seed, f"embedded{seed}")
            assert first == second and kept >= 1
        done = run_cli("--workspace", str(tmp_path / "ws"), "export", str(tmp_path / "cli"), "--seed", str(apart[0]))
        assert done.returncode == 0 and "near-duplicate groups kept inside one split" in done.stdout
        assert json.loads((tmp_path / "cli" / "export.json").read_text())["groups_kept"] >= 1
