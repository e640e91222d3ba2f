"""classify.bundle: the config.json format's round trip, bundles written before it had a version, bad configs."""
import json
import logging
import shutil

import pytest

import classify
from badinput import assert_refused, run, tree_digest
from classify import ClassifyError
from classify import bundle as bundle_format
from conftest import make_image

# What config.json held before the format had a version: the RunConfig and the resolved choices, no temperature,
# no on-menu statistics, no splits.
OLD_ONLY = ("format_version", "temperature", "calibrated", "menu_method", "menu_threshold", "menu_k", "menu_mix",
            "splits")


def test_round_trip_keeps_every_field(tmp_path):
    made = bundle_format.Bundle(architecture="efficientnet_lite0", classes=("a", "b"), image_size=64, cache_size=73,
                                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), strategy="all", temperature=0.83,
                                calibrated=True, menu_method="knn+max-logit", menu_threshold=0.61,
                                menu_mix={"knn_mean": 0.8, "knn_std": 0.05, "max_logit_mean": 6.0,
                                          "max_logit_std": 1.5, "max_logit_weight": 2.0},
                                splits={"train": "/d/train", "valid": "/d/valid"}, settings={"lr": 0.01, "seed": 3})
    bundle_format.write(tmp_path, made)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert bundle_format.read(tmp_path) == made
    flat = json.loads((tmp_path / "config.json").read_text())
    assert flat["lr"] == 0.01 and flat["classes"] == ["a", "b"]
    assert flat["format_version"] == bundle_format.FORMAT_VERSION
    assert not (tmp_path / "config.json.tmp").exists()


def test_trained_bundle_is_the_current_format(trained_bundle, tiny_data_session):
    bundle = bundle_format.read(trained_bundle)
    assert bundle.format_version == bundle_format.FORMAT_VERSION and bundle.calibrated and bundle.temperature > 0
    assert bundle.menu_method == "knn+max-logit" and set(bundle.menu_mix) == {
        "knn_mean", "knn_std", "max_logit_mean", "max_logit_std", "max_logit_weight"}
    assert (trained_bundle / bundle_format.MENU_FILE).stat().st_size > 1000
    assert bundle.splits["valid"] == str((tiny_data_session / "valid").resolve())
    assert bundle.settings["lr"] == 1e-2 and bundle.settings["keep"] == 0.95


def test_old_bundle_loads_with_temperature_one_and_says_so_once(trained_bundle, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(trained_bundle, old)
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in OLD_ONLY}))
    (old / bundle_format.MENU_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="classify"):
        predictor = classify.load(old)
        images = sorted((old / "examples").rglob("*.jpg"))
        predictions = predictor.predictions(images)
    assert predictor.bundle.format_version == 1 and predictor.temperature == 1.0
    assert [p.on_menu for p in predictions] == [True] * len(images) and predictions[0].menu_score is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # once per load, not once per image
    assert "temperature 1" in warnings[0] and "no on-menu statistics" in warnings[1]
    # the same weights: only the temperature differs, so the ranking is the new bundle's
    current = classify.load(trained_bundle).predictions(images)
    assert [p.top[0][0] for p in predictions] == [p.top[0][0] for p in current]


def test_find_latest_skips_incomplete_bundles(tmp_path):
    import os
    assert bundle_format.find_latest(tmp_path / "none") is None
    for name, stamp, complete in (("a", 1_000_000, True), ("b/c", 2_000_000, True), ("d", 3_000_000, False)):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
        os.utime(folder / "model.safetensors", (stamp, stamp))
        if complete:
            (folder / "config.json").write_text("{}")
    assert bundle_format.find_latest(tmp_path) == tmp_path / "b" / "c"


BAD_CONFIGS = {
    "not_utf8": (b'{"classes": ["cr\xe8me br\xfbl\xe9e"]}', "not UTF-8 text"),
    "corrupt": (b'{"architecture": "efficientnet_lite0", "classes": [', "not valid JSON"),
    "not_object": (b'["a", "b"]', "not a JSON object"),
    "no_classes": (b'{"architecture": "efficientnet_lite0", "image_size": 64}', "lacks a required field"),
    "future": (None, "upgrade platekit"),
    "bad_size": ({"image_size": "large"}, "image_size is \"large\": it must be a whole number"),
    # what the classify/demo audit (2026-12-04) found giving tracebacks, gigabytes of memory or wrong answers
    "architecture_number": ({"architecture": 123}, "architecture must be"),
    "size_overflow": ({"image_size": 1e999}, "image_size is"),
    "size_zero": ({"image_size": 0}, "image_size is 0"),
    "size_huge": ({"image_size": 20000, "cache_size": 20000}, "from 32 to 1024"),
    "cache_below_input": ({"cache_size": 10}, "cache_size is 10"),
    "mean_two": ({"mean": [0.5, 0.5]}, "mean must be 3 numbers"),
    "std_zero": ({"std": [0, 0, 0]}, "std is 0"),
    "temperature_inf": ({"temperature": 1e999}, "temperature is"),
    "menu_k_text": ({"menu_k": "x"}, "menu_k is \"x\""),
    "menu_k_zero": ({"menu_k": 0}, "menu_k is 0"),
    "threshold_null": ({"menu_method": "knn", "menu_threshold": None}, "menu_threshold is null"),
    "threshold_text": ({"menu_method": "knn", "menu_threshold": "high"}, "menu_threshold is \"high\""),
    "mix_incomplete": ({"menu_method": "knn+max-logit", "menu_threshold": 0.1, "menu_mix": {"knn_std": 1}},
                       "menu_mix must hold"),
    "duplicate_classes": ({"classes": ["a", "a"]}, "classes name 'a' twice"),
    "classes_text": ({"classes": "ab"}, "classes must be a list"),
    "format_negative": ({"format_version": -1}, "format_version is -1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_error(case, trained_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained_bundle, bad)
    content, words = BAD_CONFIGS[case]
    if not isinstance(content, bytes):
        config = json.loads((trained_bundle / "config.json").read_text())
        config.update(content or {"format_version": 99})
        content = json.dumps(config).encode()
    (bad / "config.json").write_bytes(content)
    with pytest.raises(ClassifyError) as error:
        bundle_format.read(bad)
    assert words in str(error.value) and "\n" not in str(error.value)
    image = make_image(tmp_path / "plate.jpg", (200, 40, 30), 1)
    before = tree_digest(tmp_path)
    assert_refused(run("classify", "predict", "--model", bad, image), "config.json", *words.split(), code=2)
    assert tree_digest(tmp_path) == before


def test_the_largest_input_size_train_allows_makes_a_bundle_that_loads():
    from classify import data as D

    values = {"architecture": "efficientnet_lite0", "classes": ["a", "b"], "image_size": bundle_format.MAX_IMAGE_SIZE,
              "cache_size": D.eval_size(bundle_format.MAX_IMAGE_SIZE, 0.875), "mean": [0.5] * 3, "std": [0.5] * 3}
    assert bundle_format.from_json(values).cache_size > bundle_format.MAX_IMAGE_SIZE
    with pytest.raises(ClassifyError, match="image_size is 31"):
        bundle_format.from_json({**values, "image_size": bundle_format.MIN_IMAGE_SIZE - 1})
