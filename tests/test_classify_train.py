"""classify.train: strategies, the bundle it writes, resume, and real training on food-dev."""
import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from classify import ClassifyError
from classify.train import RunConfig, train
from conftest import FAST, make_imagefolder

BUNDLE = ("config.json", "model.safetensors", "metrics.json", "history.csv", "curves.png", "confusion_matrix.png",
          "confusion_matrix.csv", "per_class.csv")


def test_bundle_contents(trained_bundle, tiny_data_session):
    for name in BUNDLE:
        assert (trained_bundle / name).stat().st_size > 0, name
    config = json.loads((trained_bundle / "config.json").read_text())
    assert config["classes"] == ["blue_cheese", "green_salad", "red_soup"]
    assert config["architecture"] == "efficientnet_lite0" and config["image_size"] == 64
    assert config["strategy"] == "all" and config["mean"] == [0.5, 0.5, 0.5]
    assert {"torch", "timm", "platekit"} <= set(config["versions"])
    assert config["lr"] == FAST["lr"] and config["label_smoothing"] == RunConfig.label_smoothing
    assert config["backbone_lr_scale"] == 0.1  # resolved, not the 0 that means "by strategy"
    metrics = json.loads((trained_bundle / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["accuracy"] >= 0.75
    with open(trained_bundle / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    examples = sorted(p.parent.name for p in (trained_bundle / "examples").rglob("*.jpg"))
    assert examples == ["blue_cheese"] * 3 + ["green_salad"] * 3 + ["red_soup"] * 3
    assert not (trained_bundle / "checkpoint.json").exists()
    assert not list(trained_bundle.glob("*.pt")) and not list(trained_bundle.glob("*.pth"))  # no pickle


@pytest.mark.parametrize("freeze", ["partial", "none"])
def test_other_strategies_learn(tiny_data, tmp_path, freeze):
    config = RunConfig(data=str(tiny_data), out=str(tmp_path / freeze),
                       **{**FAST, "freeze": freeze, "epochs": 8, "lr": 3e-3, "backbone_lr_scale": 0.3})
    result = train(config)
    assert result.metrics["strategy"] == freeze
    assert result.metrics["accuracy"] >= 0.75
    state = load_file(str(tmp_path / freeze / "model.safetensors"))
    assert any(k.startswith("backbone.blocks") for k in state)
    assert json.loads((tmp_path / freeze / "config.json").read_text())["backbone_lr_scale"] == 0.3


def test_schedule_defaults_by_device():
    """A full fine-tune on a GPU runs 40 epochs to the end (bench/train_gpu.py); on a CPU, where an epoch costs real
    time, 15 epochs with early stopping after 5. The backbone learns at 0.3x the head's rate there, 0.1x in partial."""
    from classify.train import default_backbone_lr_scale, default_epochs, default_patience
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert (default_epochs("none", cuda), default_patience("none", 40, cuda)) == (40, 40)
    assert (default_epochs("none", cpu), default_patience("none", 15, cpu)) == (15, 5)
    assert (default_backbone_lr_scale("none"), default_backbone_lr_scale("partial")) == (0.3, 0.1)
    assert (default_epochs("all", cuda), default_patience("all", 25, cpu)) == (25, 25)
    with pytest.raises(ClassifyError, match="backbone-lr-scale"):
        RunConfig(backbone_lr_scale=-1).check()


def test_mlp_head_and_plateau_schedule(tiny_data, tmp_path):
    result = train(RunConfig(data=str(tiny_data), out=str(tmp_path / "m"),
                             **{**FAST, "head": "mlp", "schedule": "plateau", "epochs": 2}))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["head"] == "mlp"
    assert len(result.history) == 2


class Stop(Exception):
    """Raised from train's log callback: a real interruption after an epoch."""


def interrupted(config: RunConfig, after_epoch: int) -> None:
    """Train `config` and stop it once epoch `after_epoch` has been logged (what its checkpoint holds stays)."""
    def stop(message):
        if message.startswith(f"epoch {after_epoch}/"):
            raise Stop
    with pytest.raises(Stop):
        train(config, log=stop)


def test_checkpoints_are_written_after_the_first_epoch_then_every_interval(tiny_data, tmp_path):
    out = tmp_path / "r"
    # three quick epochs: well inside CHECKPOINT_SECONDS of the first one's checkpoint
    interrupted(RunConfig(data=str(tiny_data), out=str(out), **{**FAST, "epochs": 4, "views": 2}), after_epoch=3)
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1


def test_resume_continues_after_interruption(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("classify.train.CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch
    with pytest.raises(ClassifyError, match="nothing to resume"):
        train(RunConfig(data=str(tiny_data), out=str(tmp_path / "empty"), resume=True, **FAST))

    # A real interruption: stop the run from its log callback after epoch 2 of 4, then resume it.
    out = tmp_path / "r"
    config = RunConfig(data=str(tiny_data), out=str(out), **{**FAST, "epochs": 4, "views": 2})
    interrupted(config, after_epoch=2)
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 2
    # The frozen backbone's weights stay out of the checkpoint (rebuilt as pretrained); the head and buffers are in
    saved = load_file(str(out / "checkpoint.safetensors"))
    assert any(k.startswith("model.head.") for k in saved) and any(k.startswith("best.head.") for k in saved)
    assert not any(k.startswith(("model.backbone.", "best.backbone.")) and k.endswith(".weight") for k in saved)
    (out / "held_out.json").write_text('{"accuracy": 0.99}')  # an earlier model's held-out figures
    (out / "examples" / "mine").mkdir(parents=True)
    (out / "examples" / "mine" / "best.jpg").write_bytes(b"a user's photo")
    resumed = train(RunConfig(**{**config.__dict__, "resume": True}))
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    assert not (out / "checkpoint.json").exists()
    assert not (out / "held_out.json").exists()  # the demo's card must not show them for the new model
    assert (out / "examples" / "mine" / "best.jpg").read_bytes() == b"a user's photo"
    # The resumed run is the run that was not interrupted: every epoch's draws are keyed, not carried in a generator.
    whole = train(RunConfig(**{**config.__dict__, "out": str(tmp_path / "whole")}))
    assert [row["valid_loss"] for row in whole.history] == pytest.approx([row["valid_loss"] for row in resumed.history])
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


@pytest.mark.parametrize("freeze", ["all", "none"])
def test_file_names_do_not_change_the_model(tiny_data, tmp_path, freeze):
    """Randomness is keyed on image content: the same images under other names (so in another order) and the same
    seed give the same weights, with augmented views (frozen) and per-epoch augmentation (full fine-tune)."""
    renamed = tmp_path / "renamed"
    for k, path in enumerate(sorted(tiny_data.rglob("*.jpg"), reverse=True)):
        target = renamed / path.relative_to(tiny_data).parent / f"{k:03d}_{path.stem[::-1]}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    # feature_cache none: every run computes its views (with the cache, b would read a's: test_classify_features)
    options = {**FAST, "freeze": freeze, "views": 2 if freeze == "all" else None, "epochs": 3, "aug": 1.0,
               "feature_cache": "none"}
    weights = []
    for name, root in (("a", tiny_data), ("b", renamed), ("c", tiny_data)):
        seed = 1 if name == "c" else 0
        train(RunConfig(data=str(root), out=str(tmp_path / name), seed=seed, **options))
        weights.append(load_file(str(tmp_path / name / "model.safetensors")))
    a, b, c = weights
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed still matters


def test_head_only_runs_the_whole_schedule_and_keeps_its_last_epoch(tiny_data, tmp_path):
    """Head-only epochs cost next to nothing, so by default they are not stopped early (tiny_data is learned within
    a few epochs, so patience 5 would stop this 12-epoch run), and the annealed last epoch is kept, not the one whose
    valid accuracy peaked (on 220 valid photos a peak is often an early, undertrained head)."""
    options = {**FAST, "patience": 0, "epochs": 12}
    result = train(RunConfig(data=str(tiny_data), out=str(tmp_path / "all"), **options))
    config = json.loads((tmp_path / "all" / "config.json").read_text())
    assert len(result.history) == 12 and result.metrics["best_epoch"] == 12
    assert config["patience"] == 12 and config["pick_epoch"] == "last"
    assert result.metrics["accuracy"] == pytest.approx(result.history[-1]["valid_accuracy"])
    best = train(RunConfig(data=str(tiny_data), out=str(tmp_path / "best"), **options, pick_epoch="best"))
    accuracies = [row["valid_accuracy"] for row in best.history]
    assert best.metrics["best_epoch"] == accuracies.index(max(accuracies)) + 1 < 7
    assert best.metrics["accuracy"] == pytest.approx(max(accuracies))
    last, peak = load_file(tmp_path / "all" / "model.safetensors"), load_file(tmp_path / "best" / "model.safetensors")
    assert any(not torch.equal(last[name], peak[name]) for name in last)  # the same run, other weights kept
    stopped = train(RunConfig(data=str(tiny_data), out=str(tmp_path / "p3"), **{**options, "patience": 3}))
    assert len(stopped.history) < 12


def test_corrupt_training_image_is_skipped(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=(6, 2, 0))
    (root / "train" / "red_soup" / "broken.jpg").write_bytes(b"<html>")
    messages = []
    result = train(RunConfig(data=str(root), out=str(tmp_path / "o"), **{**FAST, "epochs": 1}), log=messages.append)
    assert [p.name for p, _ in result.skipped] == ["broken.jpg"]
    assert any("broken.jpg" in m for m in messages)
    assert result.class_counts["red_soup"] == (6, 2)


def test_class_with_only_unreadable_images(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=(4, 1, 0))
    (root / "train" / "grey_pho").mkdir()
    (root / "train" / "grey_pho" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(ClassifyError, match="'grey_pho' has no readable training images"):
        train(RunConfig(data=str(root), out=str(tmp_path / "o"), **FAST))


def test_bad_options():
    with pytest.raises(ClassifyError, match="--freeze"):
        RunConfig(freeze="some").check()
    with pytest.raises(ClassifyError, match="--aug"):
        RunConfig(aug=2).check()
    with pytest.raises(ClassifyError, match="--pick-epoch must be one of auto, best, last"):
        RunConfig(pick_epoch="first").check()


@pytest.mark.slow
def test_default_backbone_learns_real_food(food_dev, tmp_path):
    """The real thing, briefly: the default backbone on 4 food-dev classes, 30 images each, must beat chance by far."""
    subset = tmp_path / "food"
    classes = sorted(p.name for p in (food_dev / "train").iterdir())[:4]
    for split, count in (("train", 30), ("valid", 12)):
        for name in classes:
            (subset / split / name).mkdir(parents=True)
            for path in sorted((food_dev / split / name).glob("*.jpg"))[:count]:
                (subset / split / name / path.name).symlink_to(path)
    result = train(RunConfig(data=str(subset), out=str(tmp_path / "run"), freeze="all", views=2, epochs=10))
    assert result.metrics["accuracy"] >= 0.6  # chance is 0.25
    assert result.metrics["average_position"] < 1.6


def test_mlflow_logs_to_a_local_file_store(tiny_data, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    train(RunConfig(data=str(tiny_data), out=str(tmp_path / "run"), mlflow=str(store), **{**FAST, "epochs": 2}))
    mlflow.set_tracking_uri(str(store))
    runs = mlflow.search_runs(experiment_ids=["0"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.architecture"] == "efficientnet_lite0" and run["params.strategy"] == "all"
    assert 0 <= run["metrics.accuracy"] <= 1
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "valid_accuracy")
    assert [m.step for m in history] == [1, 2]
    artifacts = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run["run_id"], "bundle")]
    assert "bundle/model.safetensors" in artifacts and "bundle/config.json" in artifacts
