"""classify.predict: the Python API, bundles missing files or damaged, the predict command."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import classify
from classify import ClassifyError


def test_predict_api(trained_bundle, tiny_data_session):
    predictor = classify.load(trained_bundle)
    image = next((tiny_data_session / "test" / "green_salad").glob("*.jpg"))
    top = predictor.predict(image, k=5)
    assert len(top) == 3  # k is capped by the number of classes
    assert top[0][0] == "green_salad"
    assert abs(sum(p for _, p in top) - 1) < 1e-4
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    from PIL import Image
    assert predictor.predict(Image.open(image), k=1)[0][0] == "green_salad"
    many = predictor.predictions([image, image], k=2)
    assert len(many) == 2 and many[0].top == many[1].top and len(many[0].top) == 2


def test_predict_rejects_non_image(trained_bundle, tmp_path):
    (tmp_path / "x.jpg").write_text("hello")
    with pytest.raises(ClassifyError, match="unreadable"):
        classify.load(trained_bundle).predict(tmp_path / "x.jpg")


@pytest.mark.parametrize("remove", ["config.json", "model.safetensors"])
def test_bundle_missing_files(trained_bundle, tmp_path, remove):
    import shutil
    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    (copy / remove).unlink()
    with pytest.raises(ClassifyError, match=f"missing {remove}"):
        classify.load(copy)


def test_bundle_with_damaged_weights(trained_bundle, tmp_path):
    import shutil
    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    (copy / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ClassifyError, match="does not fit"):
        classify.load(copy)


def test_predict_cli_json(trained_bundle, tiny_data_session, tmp_path):
    images = sorted((tiny_data_session / "test" / "red_soup").glob("*.jpg"))[:2]
    run = subprocess.run([sys.executable, "-m", "classify", "predict", "--model", str(trained_bundle), "--top-k", "2",
                          "--json", *map(str, images)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [len(line["predictions"]) for line in lines] == [2, 2]
    assert all(line["predictions"][0]["label"] == "red_soup" for line in lines)


def test_predict_cli_folder(trained_bundle, tiny_data_session, tmp_path):
    folder = tiny_data_session / "test"  # class folders inside: every image, recursively, in path order
    expected = sorted(str(p) for p in folder.rglob("*.jpg"))
    run = subprocess.run([sys.executable, "-m", "classify", "predict", "--model", str(trained_bundle), "--json",
                          str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["image"] for line in lines] == expected
    right = sum(line["predictions"][0]["label"] == Path(line["image"]).parent.name for line in lines)
    assert right >= 0.8 * len(lines)
    (tmp_path / "empty").mkdir()
    run = subprocess.run([sys.executable, "-m", "classify", "predict", "--model", str(trained_bundle),
                          str(tmp_path / "empty")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.strip() == f"error: no images in folder {tmp_path / 'empty'}"
