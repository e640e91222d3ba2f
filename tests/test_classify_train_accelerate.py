"""`accelerate launch -m classify train` with two real processes (gloo on the CPU), against the same run in one."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_imagefolder

ACCELERATE = Path(sys.executable).with_name("accelerate")
# 3 classes x 17 training images: 51, which two processes would split 26 / 25, last batches of 2 and 1 at batch 8: the
# second would skip its step (BatchNorm cannot train on one image) and the first wait for it forever, unless train pads
# the epoch's permutation to equal shards.
PER_CLASS = (17, 4, 0)
BATCH = 8
OPTIONS = ("--model", "efficientnet_lite0", "--image-size", "64", "--epochs", "3", "--batch-size", str(BATCH),
           "--lr", "1e-2", "--warmup-epochs", "0", "--views", "1", "--quiet", "--device", "cpu")


def launch(data: Path, out: Path, freeze: str, processes: int, cache: Path) -> subprocess.CompletedProcess:
    # On a CPU, `accelerate launch --cpu --num_processes 2` starts ONE process (its simple launcher: several CPU
    # processes need mpirun there); --multi_gpu is the launcher that starts N (torchrun), and train's Accelerator(cpu=True)
    # joins them over gloo. CUDA_VISIBLE_DEVICES="" keeps a GPU machine from putting both on one GPU.
    launcher = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"] if processes > 1 \
        else [sys.executable]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PLATEKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "COLUMNS": "500"}  # rich wraps log lines at the terminal width
    return subprocess.run([*launcher, "-m", "classify", "train", "--data", str(data), "--out", str(out),
                           "--freeze", freeze, *OPTIONS], capture_output=True, text=True, env=env, timeout=300)


def history(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.skipif(not ACCELERATE.is_file(), reason="accelerate's launcher is not installed beside this Python")
@pytest.mark.parametrize("freeze", ["all", "none"])
def test_two_processes_train_one_bundle_in_half_the_steps(tmp_path, freeze):
    data = make_imagefolder(tmp_path / "data", per_class=PER_CLASS)
    one, two, cache = tmp_path / "one", tmp_path / "two", tmp_path / "cache"
    done = launch(data, two, freeze, 2, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    single = launch(data, one, freeze, 1, cache)
    assert single.returncode == 0, single.stderr[-3000:]

    config = json.loads((two / "config.json").read_text())
    assert config["processes"] == 2 and json.loads((one / "config.json").read_text())["processes"] == 1
    assert config["classes"] == ["blue_cheese", "green_salad", "red_soup"]
    # One bundle, written once: the main process alone logs and prints the summary; no checkpoint is left behind.
    assert done.stdout.count("valid accuracy") == 1, done.stdout
    assert done.stderr.count("epoch 1/3") == 1, done.stderr[-3000:]
    assert (two / "model.safetensors").is_file() and not (two / "checkpoint.json").exists()
    assert not list(two.glob("*.tmp"))
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5, metrics  # 3 epochs on 51 images; chance is 0.33 (3 colours)

    n_train = PER_CLASS[0] * len(config["classes"])
    steps_one = [int(row["steps"]) for row in history(one)]
    steps_two = [int(row["steps"]) for row in history(two)]
    assert steps_one == [math.ceil(n_train / BATCH)] * 3  # 7
    assert steps_two == [math.ceil(math.ceil(n_train / 2) / BATCH)] * 3  # 4 in each process

    if freeze == "all":
        # The main process filled the feature cache (one writer) and the other read it; the one-process run after
        # finds every view there: the fingerprint does not depend on how many processes computed it.
        views = n_train + PER_CLASS[1] * len(config["classes"])
        assert f"0 of {views} view(s) read, the others computed" in done.stderr, done.stderr[-3000:]
        assert f"{views} of {views} view(s) read" in single.stderr, single.stderr[-3000:]
