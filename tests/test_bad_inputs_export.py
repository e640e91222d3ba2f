"""Bad input to the commands that write or replace folders and files (curate export, classify export, train --out,
compare --compare-out): each is refused with one line and a non-zero exit, and nothing on disk changes."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from badinput import assert_refused, run, tree_digest
from curate.workspace import Workspace
from test_curate_importer import photo


def project(tmp_path, per_class=6, classes=("pho", "ramen")):
    """tmp_path/proj with its workspace at proj/workspace: `per_class` accepted images per class."""
    proj = tmp_path / "proj"
    with Workspace(proj / "workspace") as ws:
        seed = 0
        for c in classes:
            for _ in range(per_class):
                buf = io.BytesIO()
                image = Image.open(photo(tmp_path / "src" / f"{seed}.png", seed, size=(160, 128)))
                image.convert("RGB").save(buf, "JPEG")
                ws.set_status(ws.add_image(buf.getvalue(), c, source="import").id, "accepted", log=False)
                seed += 1
    shutil.rmtree(tmp_path / "src")
    return proj


def export(proj, *args, cwd=None):
    return run("curate", "--workspace", proj / "workspace", "export", *args, cwd=cwd)


# -- curate export --overwrite: never deletes what export did not write --------------------------------------------

@pytest.mark.parametrize("where", ["parent", "dot"])
def test_overwrite_of_the_folder_holding_the_workspace(tmp_path, where):
    proj = project(tmp_path)
    (proj / "notes.txt").write_text("mine")
    before = tree_digest(proj)
    done = export(proj, "." if where == "dot" else proj, "--overwrite", cwd=proj if where == "dot" else None)
    assert_refused(done, "holds the workspace", "outside")
    assert tree_digest(proj) == before and len(before) > 12
    assert [p.name for p in tmp_path.iterdir()] == ["proj"]  # no work folder left beside it


def test_overwrite_into_the_workspace(tmp_path):
    proj = project(tmp_path)
    before = tree_digest(proj)
    assert_refused(export(proj, proj / "workspace" / "images", "--overwrite"), "outside the workspace")
    assert tree_digest(proj) == before


def test_overwrite_of_a_symlink_to_the_workspace_folder(tmp_path):
    proj = project(tmp_path)
    (tmp_path / "link").symlink_to(proj)
    before = tree_digest(proj)
    assert_refused(export(proj, tmp_path / "link", "--overwrite"), "holds the workspace")
    assert tree_digest(proj) == before


def test_overwrite_of_a_folder_that_is_no_export(tmp_path):
    proj = project(tmp_path)
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "photos" / "2024" / "beach.jpg").write_bytes(b"holiday")
    before = tree_digest(tmp_path)
    assert_refused(export(proj, tmp_path / "photos", "--overwrite"), "2024", "did not write")
    assert tree_digest(tmp_path) == before


def test_overwrite_of_an_export_with_a_file_added(tmp_path):
    proj = project(tmp_path)
    out = tmp_path / "out"
    assert export(proj, out).returncode == 0
    (out / "train" / "pho" / "my-best.jpg").write_bytes(b"added by hand")
    before = tree_digest(tmp_path)
    assert_refused(export(proj, out, "--overwrite", "--seed", "5"), "train/pho/my-best.jpg", "did not write")
    assert tree_digest(tmp_path) == before


def test_overwrite_of_an_export_holding_a_symlink(tmp_path):
    proj = project(tmp_path)
    out = tmp_path / "out"
    assert export(proj, out).returncode == 0
    (out / "originals").symlink_to(proj / "workspace")
    before, workspace = tree_digest(out), tree_digest(proj)
    assert_refused(export(proj, out, "--overwrite"), "originals", "did not write")
    assert tree_digest(out) == before and tree_digest(proj) == workspace and (out / "originals").is_symlink()


def test_overwrite_of_a_file(tmp_path):
    proj = project(tmp_path)
    (tmp_path / "thesis.txt").write_text("chapter 1")
    assert_refused(export(proj, tmp_path / "thesis.txt", "--overwrite"), "is a file")
    assert (tmp_path / "thesis.txt").read_text() == "chapter 1"


def test_overwrite_replaces_an_earlier_export(tmp_path):
    proj = project(tmp_path)
    out = tmp_path / "out"
    assert export(proj, out, "--seed", "1").returncode == 0
    workspace = tree_digest(proj)
    done = export(proj, out, "--overwrite", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "export.json").read_text())["config"]["seed"] == 2
    assert tree_digest(proj) == workspace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "proj"]


def test_stale_work_folders_only_export_own_ones_go(tmp_path):
    proj = project(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    mine = tmp_path / f".out.partial-{dead}"  # named like a work folder, but not export's
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "keep.txt").write_text("mine")
    killed = tmp_path / f".out.old-{dead}"  # what a killed export leaves: marker and export's file names
    (killed / "train" / "pho").mkdir(parents=True)
    (killed / ".curate-export").write_text("")
    (killed / "train" / "pho" / "0000001.jpg").write_bytes(b"x")
    before = tree_digest(mine)
    done = export(proj, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert tree_digest(mine) == before
    if not os.path.exists(f"/proc/{dead}"):  # (unless the pid was taken again meanwhile)
        assert not killed.exists()


# -- curate export: splits that would be empty ----------------------------------------------------------------------

def test_split_without_test_share_writes_no_test_folder_and_trains(tmp_path):
    proj = project(tmp_path, per_class=4)
    out = tmp_path / "out"
    done = export(proj, out, "--split", "0.5", "0.5", "0")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["train", "valid"]
    assert len(list((out / "valid").rglob("*.jpg"))) == 4
    trained = run("classify", "train", "--data", out, "--out", tmp_path / "run", "--model", "efficientnet_lite0",
                  "--epochs", "1", "--image-size", "64", "--freeze", "all", "--views", "1", "--quiet", "--device", "cpu",
                  timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("split, per_class, words", [
    (("1", "0", "0"), 6, ["valid/ would get no images", "larger share"]),
    (("0", "1", "0"), 6, ["class 'pho' would get no train/ images", "larger share"]),
    (("0.8", "0.1", "0.1"), 2, ["valid/ would get no images", "smallest class 'pho' has 2"]),
])
def test_split_that_leaves_train_or_valid_empty(tmp_path, split, per_class, words):
    proj = project(tmp_path, per_class=per_class)
    before = tree_digest(proj / "workspace" / "images")  # (the manifest gains the perceptual hashes the split needed)
    assert_refused(export(proj, tmp_path / "out", "--split", *split), *words)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
    assert tree_digest(proj / "workspace" / "images") == before


# -- curate export: numeric options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--seed", "-3"], ["--seed", ">= 0", "'-3'"]),
    (["--split", "nan", "0.5", "0.5"], ["--split", "'nan'"]),
    (["--split", "inf", "0", "0"], ["--split", "'inf'"]),
    (["--split", "-0.2", "0.6", "0.6"], ["--split", ">= 0 and <= 1"]),
    (["--split", "0.5", "0.5", "0.5"], ["summing to 1"]),
    (["--balance", "-1"], ["--balance", ">= 0"]),
    (["--balance", "1e3"], ["--balance", "whole number"]),
    (["--min-per-class", "-2"], ["--min-per-class", ">= 0"]),
    (["--threshold-bits", "65"], ["--threshold-bits", "<= 64"]),
])
def test_numeric_options_refused_with_their_range(tmp_path, args, words):
    proj = project(tmp_path, per_class=3)
    before = tree_digest(proj)
    assert_refused(export(proj, tmp_path / "out", *args), *words)
    assert tree_digest(proj) == before and not (tmp_path / "out").exists()


def test_threshold_bits_reaches_the_export(tmp_path):
    proj = project(tmp_path)
    done = export(proj, tmp_path / "out", "--threshold-bits", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "export.json").read_text())["config"]["threshold_bits"] == 0


# -- classify export --out ------------------------------------------------------------------------------------------

@pytest.fixture
def bundle(trained_bundle, tmp_path):
    """A copy of the session's bundle, so a command that wrongly writes into it harms no other test."""
    return shutil.copytree(trained_bundle, tmp_path / "bundle")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "model.onnx"])
def test_classify_export_into_the_bundle(bundle, name):
    before = tree_digest(bundle)
    done = run("classify", "export", "--model", bundle, "--format", "onnx", "--out", bundle / name)
    assert_refused(done, "inside the model bundle")
    assert tree_digest(bundle) == before


def test_classify_export_over_a_file_it_did_not_write(bundle, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"someone's model")
    done = run("classify", "export", "--model", bundle, "--format", "torchscript", "--out", tmp_path / "model.onnx")
    assert_refused(done, "did not write", "pick a new name or delete it")
    assert (tmp_path / "model.onnx").read_bytes() == b"someone's model"
    assert not (tmp_path / "model.onnx.json").exists()


def test_classify_export_over_a_sidecar_it_did_not_write(bundle, tmp_path):
    (tmp_path / "m.pt.json").write_text('{"mine": 1}')
    done = run("classify", "export", "--model", bundle, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert_refused(done, "m.pt.json", "did not write")
    assert (tmp_path / "m.pt.json").read_text() == '{"mine": 1}' and not (tmp_path / "m.pt").exists()


def test_classify_export_replaces_its_own_file(bundle, tmp_path):
    for _ in range(2):
        done = run("classify", "export", "--model", bundle, "--format", "torchscript", "--out", tmp_path / "m.pt")
        assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m.pt.json").read_text())["output"] == "logits"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "m.pt", "m.pt.json"]


def test_classify_export_failing_the_check_leaves_nothing(bundle, tmp_path, monkeypatch):
    import classify.export as E
    from classify import ClassifyError

    monkeypatch.setattr(E, "TOLERANCE", 0.0)  # any difference fails: the check path itself runs for real
    with pytest.raises(ClassifyError, match="disagrees"):
        E.export(bundle, "torchscript", tmp_path / "m.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


# -- classify train --out and compare --compare-out -----------------------------------------------------------------

def test_train_out_onto_a_folder_that_is_no_run(tiny_data, tmp_path):
    (tmp_path / "docs" / "examples").mkdir(parents=True)
    (tmp_path / "docs" / "config.json").write_text('{"editor": "vim"}')
    (tmp_path / "docs" / "examples" / "letter.txt").write_text("dear")
    before = tree_digest(tmp_path / "docs")
    done = run("classify", "train", "--data", tiny_data, "--out", tmp_path / "docs", "--quiet")
    assert_refused(done, "not a training run", "config.json", "new folder")
    assert tree_digest(tmp_path / "docs") == before


def test_train_out_onto_a_file(tiny_data, tmp_path):
    (tmp_path / "run.txt").write_text("x")
    done = run("classify", "train", "--data", tiny_data, "--out", tmp_path / "run.txt", "--quiet")
    assert_refused(done, "is a file")
    assert (tmp_path / "run.txt").read_text() == "x"


def test_compare_out_over_a_foreign_table(tiny_data, tmp_path):
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "compare.csv").write_text("budget,2025\n")
    before = tree_digest(tmp_path / "cmp")
    done = run("classify", "compare", "--data", tiny_data, "--models", "efficientnet_lite0", "--compare-out",
               tmp_path / "cmp")
    assert_refused(done, "compare.csv", "not written by classify compare")
    assert tree_digest(tmp_path / "cmp") == before


@pytest.mark.parametrize("models", [",", " , ,"])
def test_compare_models_naming_no_backbone_is_one_line(tiny_data, tmp_path, models):
    done = run("classify", "compare", "--data", tiny_data, "--models", models, "--compare-out", tmp_path / "cmp")
    assert_refused(done, "names no backbone")  # was: IndexError, and an empty compare.csv left behind
    assert not (tmp_path / "cmp").exists()
