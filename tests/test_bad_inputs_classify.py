"""Bad input to `python -m classify`: every numeric option checked at the command line with its range, and paths that
are the wrong kind of thing (a file for a folder, a folder or a pipe for an image). Real subprocesses."""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from badinput import assert_refused, run, tree_digest
from conftest import make_imagefolder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("cli") / "data", per_class=(3, 1, 0))


@pytest.mark.parametrize("flag, value, words", [
    ("--epochs", "-1", ["--epochs", ">= 0", "<= 10000"]),
    ("--batch-size", "0", ["--batch-size", ">= 1"]),
    ("--lr", "nan", ["--lr", "> 0"]),
    ("--lr", "0", ["--lr", "> 0"]),
    ("--weight-decay", "inf", ["--weight-decay", "<= 1"]),
    ("--aug", "1.5", ["--aug", ">= 0", "<= 1"]),
    ("--label-smoothing", "1", ["--label-smoothing", "< 1"]),
    ("--valid-fraction", "0", ["--valid-fraction", "> 0", "< 1"]),
    ("--valid-fraction", "1", ["--valid-fraction", "< 1"]),
    ("--image-size", "-224", ["--image-size", ">= 0"]),
    ("--image-size", "16", ["--image-size 16", "32-1024"]),  # a bundle of 16 px would not load
    ("--views", "-1", ["--views", ">= 0"]),
    ("--patience", "2.5", ["--patience", "whole number"]),
    ("--warmup-epochs", "-0.5", ["--warmup-epochs", ">= 0"]),
    ("--backbone-lr-scale", "-1", ["--backbone-lr-scale", ">= 0"]),
    ("--examples-per-class", "-3", ["--examples-per-class", ">= 0"]),
    ("--seed", "-1", ["--seed", ">= 0"]),
])
def test_train_numbers_are_checked_before_anything_is_written(flag, value, words, data, tmp_path):
    before = tree_digest(data)
    done = run("classify", "train", "--data", data, "--out", tmp_path / "run", flag, value)
    assert_refused(done, *words, code=2)
    assert not (tmp_path / "run").exists() and tree_digest(data) == before


def test_every_numeric_run_option_has_a_range():
    from classify.__main__ import RANGES
    from classify.train import RunConfig

    numeric = {f.name for f in fields(RunConfig) if type(f.default) in (int, float)}
    assert numeric == set(RANGES)


def test_compare_checks_the_same_numbers(data, tmp_path):
    done = run("classify", "compare", "--data", data, "--compare-out", tmp_path / "cmp", "--epochs", "nan")
    assert_refused(done, "--epochs", "whole number", code=2)
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_predict_top_k_is_checked(value, tmp_path):
    done = run("classify", "predict", "--model", tmp_path, "x.jpg", "--top-k", value)
    assert_refused(done, "--top-k", ">= 1", code=2)


def test_train_data_that_is_a_file_or_empty(tmp_path):
    text = tmp_path / "data.txt"
    text.write_text("not a folder")
    assert_refused(run("classify", "train", "--data", text, "--out", tmp_path / "run"), "is not a folder", code=2)
    (tmp_path / "empty").mkdir()
    assert_refused(run("classify", "train", "--data", tmp_path / "empty", "--out", tmp_path / "run"),
                   "0 class folder", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "empty"]


def test_train_out_that_is_a_file_is_refused_up_front(data, tmp_path):
    out = tmp_path / "run.txt"
    out.write_text("keep me")
    done = run("classify", "train", "--data", data, "--out", out, "--feature-cache", "none")
    assert_refused(done, "--out", "is a file", code=2)
    assert out.read_text() == "keep me"
    assert "cache train" not in done.stderr  # refused before any work


def test_model_that_is_not_a_bundle(data, tmp_path):
    not_bundle = tmp_path / "notes"
    not_bundle.mkdir()
    (not_bundle / "readme.txt").write_text("hello")
    for command in (["evaluate", "--model", not_bundle, "--data", data], ["predict", "--model", not_bundle, "x.jpg"],
                    ["evaluate", "--model", not_bundle / "readme.txt", "--data", data]):
        assert_refused(run("classify", *command), code=2)
    assert (not_bundle / "readme.txt").read_text() == "hello" and len(list(not_bundle.iterdir())) == 1


def test_predict_on_a_pipe_a_non_image_and_a_missing_file(trained_bundle, tmp_path):
    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)  # opening it would wait for a writer for ever
    text = tmp_path / "menu.txt"
    text.write_text("soup of the day")
    done = run("classify", "predict", "--model", trained_bundle, pipe, text, tmp_path / "gone.jpg", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, done.stderr[-2000:]
    assert errors[0] == f"error: {pipe}: unreadable image: not a file (a folder, pipe or device)"
    assert errors[1].startswith(f"error: {text}: unreadable image")
    assert errors[2] == f"error: {tmp_path / 'gone.jpg'}: unreadable image: no such file"
    assert pipe.exists() and text.read_text() == "soup of the day"


def test_evaluate_data_that_is_a_file(trained_bundle, tmp_path):
    text = tmp_path / "split.txt"
    text.write_text("x")
    assert_refused(run("classify", "evaluate", "--model", trained_bundle, "--data", text), "is not a folder", code=2)
    assert [p.name for p in tmp_path.iterdir()] == ["split.txt"]


def test_evaluate_a_split_of_unreadable_images_says_why(trained_bundle, tmp_path):
    import json

    classes = json.loads((trained_bundle / "config.json").read_text())["classes"]
    (tmp_path / "split" / classes[0]).mkdir(parents=True)
    (tmp_path / "split" / classes[0] / "a.jpg").write_bytes(b"")
    (tmp_path / "split" / classes[0] / "b.jpg").write_bytes(b"not a jpeg at all")
    done = run("classify", "evaluate", "--model", trained_bundle, "--data", tmp_path / "split")
    assert_refused(done, "none of the 2 images", "could be read", code=2)  # was: "no images to evaluate"


def test_export_check_data_missing_or_a_file(trained_bundle, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    for check, words in ((tmp_path / "nope", "--check-data folder not found"), (photo, "is a file")):
        done = run("classify", "export", "--model", trained_bundle, "--format", "onnx", "--out",
                   tmp_path / "model.onnx", "--check-data", check)
        assert_refused(done, words, code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]
