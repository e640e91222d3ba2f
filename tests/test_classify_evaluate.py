"""classify.evaluate: the metrics, against values worked out by hand, and the evaluate command."""
import json
import subprocess
import sys

import numpy as np
import pytest

from classify.evaluate import metrics_from_probabilities, resolve_split


def test_metrics_by_hand():
    # 3 classes; labels 0,0,1,2. Ranks of the true class: 1, 3, 2, 1.
    probabilities = np.array([[0.7, 0.2, 0.1],
                              [0.1, 0.5, 0.4],
                              [0.6, 0.3, 0.1],
                              [0.1, 0.2, 0.7]])
    labels = np.array([0, 0, 1, 2])
    m = metrics_from_probabilities(probabilities, labels, ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    assert m["n"] == 4
    # Average position: class a (1+3)/2 = 2, b 2, c 1 → mean 5/3, not the per-image mean 7/4.
    assert m["average_position"] == pytest.approx(5 / 3, abs=1e-4)
    assert m["per_class"]["a"]["recall"] == 0.5 and m["per_class"]["a"]["precision"] == 0.5
    assert m["per_class"]["b"]["precision"] == 0.0
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert m["top5"] == 1.0  # 3 classes: top-5 is top-3
    # macro F1: a 0.5, b 0, c 1 → 0.5
    assert m["macro_f1"] == pytest.approx(0.5)


def test_perfect_predictions_give_position_one():
    probabilities = np.eye(4)[[0, 1, 2, 3, 3]]
    m = metrics_from_probabilities(probabilities, np.array([0, 1, 2, 3, 3]), list("abcd"))
    assert m["accuracy"] == 1.0 and m["average_position"] == 1.0 and m["macro_f1"] == 1.0


def test_resolve_split_prefers_test(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / split / "x").mkdir(parents=True)
    assert resolve_split(tmp_path) == tmp_path / "test"
    (tmp_path / "test" / "x").rmdir()
    (tmp_path / "test").rmdir()
    assert resolve_split(tmp_path) == tmp_path / "valid"


def test_evaluate_cli_json(own_bundle, tiny_data_session, tmp_path):
    run = subprocess.run([sys.executable, "-m", "classify", "evaluate", "--model", str(own_bundle),
                          "--data", str(tiny_data_session), "--json", "--out", str(tmp_path / "ev")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["n"] == 12 and result["split"].endswith("test")
    assert result["accuracy"] >= 0.75  # three colour classes: chance is 0.33
    assert {"accuracy", "top5", "average_position", "per_class"} <= set(result)
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "ev" / "per_class.csv").read_text().count("\n") == 4


def test_evaluate_against_lists_a_planted_near_twin(trained_bundle, tiny_data_session, tmp_path):
    import shutil

    from PIL import Image

    from classify.twins import NEAR_TWIN_BITS
    from curate.dedup import DEFAULT_THRESHOLD_BITS

    assert NEAR_TWIN_BITS == DEFAULT_THRESHOLD_BITS  # classify's leak check uses dedup's threshold

    def against(train):
        run = subprocess.run([sys.executable, "-m", "classify", "evaluate", "--model", str(trained_bundle),
                              "--data", str(tiny_data_session), "--json", "--against", str(train)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    train = shutil.copytree(tiny_data_session / "train", tmp_path / "train")
    before = against(train)
    assert before["near_twins_in_train"] == len(before["near_twins"])
    test_photo = sorted((tiny_data_session / "test").rglob("*.jpg"))[0]
    image = Image.open(test_photo)
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(train / test_photo.parent.name / "twin.jpg", quality=70)
    after = against(train)
    assert after["near_twins_in_train"] == before["near_twins_in_train"] + 1
    planted = [t for t in after["near_twins"] if t["train"].endswith("twin.jpg")]
    assert len(planted) == 1 and planted[0]["test"] == str(test_photo) and planted[0]["bits"] <= NEAR_TWIN_BITS
    assert after["accuracy"] == before["accuracy"]  # the check lists, it changes no score


def test_evaluate_against_a_missing_folder_is_one_line(trained_bundle, tiny_data_session, tmp_path):
    from badinput import assert_refused, run, tree_digest

    before = tree_digest(tmp_path)
    done = run("classify", "evaluate", "--model", str(trained_bundle), "--data", str(tiny_data_session),
               "--against", str(tmp_path / "nope"))
    assert_refused(done, "training folder not found")
    assert tree_digest(tmp_path) == before


def test_evaluate_out_never_replaces_a_report_it_did_not_write(own_bundle, tiny_data_session, tmp_path):
    """A user's evaluation.json in --out is refused before any work, and kept; a file of another name stays; a folder
    evaluate wrote itself is written again; an --out that is a file is refused up front."""
    from badinput import assert_refused, run

    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluation.json").write_text("mine")
    (out / "notes.txt").write_text("also mine")
    args = ("evaluate", "--model", str(own_bundle), "--data", str(tiny_data_session))  # --out adds held_out.json
    assert_refused(run("classify", *args, "--out", str(out)), "was not written by classify evaluate")
    assert (out / "evaluation.json").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [
        "evaluation.json", "notes.txt"]
    (out / "evaluation.json").unlink()
    for _ in range(2):  # the second run replaces the first one's reports
        done = run("classify", *args, "--out", str(out))
        assert done.returncode == 0, done.stderr
    assert json.loads((out / "evaluation.json").read_text())["n"] > 0 and (out / "notes.txt").read_text() == "also mine"
    (out / "errors.html").write_text("edited by hand")
    assert_refused(run("classify", *args, "--out", str(out)), "errors.html exists")
    assert (out / "errors.html").read_text() == "edited by hand"
    (tmp_path / "file").write_text("x")
    assert_refused(run("classify", *args, "--out", str(tmp_path / "file")), "is not a folder")


def test_retraining_keeps_photos_a_user_added_to_examples(tmp_path):
    from classify.train import _remove_old_examples

    folder = tmp_path / "examples"
    for name in ("pho/0.jpg", "pho/1.jpg", "pho/my_best.jpg", "ramen/0.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"jpeg")
    _remove_old_examples(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["pho", "pho/my_best.jpg"]
