"""The classify command line: bad input gives one clear line on stderr and a non-zero exit, never a traceback."""
import pytest

import badinput
from conftest import make_image, make_imagefolder


def run(*args, timeout=300):
    return badinput.run("classify", *args, timeout=timeout)


def assert_one_line_error(result, expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_bad_training_inputs(tmp_path):
    one = tmp_path / "one"
    make_image(one / "train" / "pho" / "a.jpg", (1, 2, 3), 0)
    make_image(one / "valid" / "pho" / "a.jpg", (1, 2, 3), 1)
    assert_one_line_error(run("train", "--data", one, "--out", tmp_path / "o"), "at least 2")
    nosplit = make_imagefolder(tmp_path / "nosplit", per_class=(2, 0, 0))
    assert_one_line_error(run("train", "--data", nosplit, "--out", tmp_path / "o"), "no valid/ split")
    assert_one_line_error(run("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "o"), "not found")
    data = make_imagefolder(tmp_path / "d", per_class=(2, 1, 0))
    (data / "train" / "empty").mkdir()
    assert_one_line_error(run("train", "--data", data, "--out", tmp_path / "o"), "'empty' has no images")
    (data / "train" / "empty").rmdir()
    assert_one_line_error(run("train", "--data", data, "--out", tmp_path / "o", "--model", "bogus_net"),
                          "unknown model 'bogus_net'")
    assert_one_line_error(run("train", "--data", data, "--out", tmp_path / "o", "--freeze", "half"), "--freeze")
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_full_disk_while_writing_the_run(tmp_path, small_disk):
    data = make_imagefolder(tmp_path / "d", per_class=(4, 2, 0))
    disk = small_disk(1024)  # the lite0 weights alone are 13 MB
    result = run("train", "--data", data, "--out", disk / "run", "--freeze", "all", "--epochs", "1", "--views", "1",
                 "--image-size", "64")
    assert_one_line_error(result, "No space left on device")
    assert "--resume" in result.stderr
    assert not (disk / "run" / "model.safetensors").exists()


def test_bad_model_folder(tmp_path, trained_bundle):
    (tmp_path / "empty_run").mkdir()
    image = make_image(tmp_path / "a.jpg", (1, 2, 3), 0)
    assert_one_line_error(run("predict", "--model", tmp_path / "empty_run", image), "missing config.json")
    assert_one_line_error(run("evaluate", "--model", tmp_path / "nope", "--data", tmp_path), "not found")
    result = run("predict", "--model", trained_bundle, tmp_path / "missing.jpg")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "missing.jpg" in result.stderr


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "export", "compare"):
        assert command in result.stdout


def test_compare_sweep(tiny_data, tmp_path):
    result = run("compare", "--data", tiny_data, "--model", "efficientnet_lite0", "--freeze", "all",
                 "--image-size", "64", "--epochs", "1", "--views", "1", "--sweep", "head=linear,mlp",
                 "--compare-out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("run,accuracy") and [r.split(",")[0] for r in rows[1:]] == ["head=linear", "head=mlp"]
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_defaults_come_from_the_library():
    """In-process: each default the parser gives is the one the library function or dataclass has."""
    from dataclasses import fields

    from classify.__main__ import build_parser
    from classify.compare import DEFAULT_OUT
    from classify.export import FORMATS
    from classify.predict import TOP_K
    from classify.train import RunConfig

    parser = build_parser()
    train = vars(parser.parse_args(["train", "--data", "d"]))
    assert {f.name: train[f.name] for f in fields(RunConfig) if f.name != "data"} == \
        {f.name: f.default for f in fields(RunConfig) if f.name != "data"}
    assert parser.parse_args(["predict", "--model", "m", "x.jpg"]).top_k == TOP_K
    assert parser.parse_args(["compare", "--data", "d"]).compare_out == DEFAULT_OUT
    for fmt in FORMATS:
        assert parser.parse_args(["export", "--model", "m", "--format", fmt, "--out", "o"]).format == fmt
