"""Claims: default `classify train` on food-dev reaches >= 78 % valid accuracy in <= 10 min on a 2-core CPU;
`--freeze all` (the CPU default) runs its 25 epochs in <= 60 s; retraining on the same images once their features are
in the feature cache (classify/features.py) takes <= 10 s and trains the same weights. Also the strategy table behind
the choice of the default.

Every run starts with an empty feature cache of its own, except the retrain, which reuses the default run's.

Runs the real CLI in a subprocess, as a user would, training on food-dev train/ and scoring on valid/.
  python bench/train_cpu.py                     the default run
  python bench/train_cpu.py --strategies        also the strategy/backbone table (about 30 min)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

RUNS = {"default (no flags)": [],  # on a CPU: lite0, --freeze all, 25 epochs, no early stop
        "default, retrain (feature cache warm)": []}
STRATEGIES = {
    "lite0 all": ["--model", "efficientnet_lite0", "--freeze", "all"],
    "lite1 all": ["--model", "efficientnet_lite1", "--freeze", "all"],
    "lite2 all": ["--model", "efficientnet_lite2", "--freeze", "all"],
    "lite2 all, mlp head": ["--model", "efficientnet_lite2", "--freeze", "all", "--head", "mlp"],
    "lite2 partial": ["--model", "efficientnet_lite2", "--freeze", "partial"],
    "lite0 none, 4 epochs": ["--model", "efficientnet_lite0", "--freeze", "none", "--epochs", "4"],
}


def run(name: str, flags: list[str], data: Path, scratch: Path) -> list:
    out = scratch / name.replace(" ", "_").replace("-", "").replace(",", "").replace("(", "").replace(")", "")
    cache = scratch / ("cache-default" if name.startswith("default") else f"cache-{out.name}")
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "classify", "train", "--data", str(data), "--out", str(out),
                           "--quiet", "--feature-cache", str(cache), *flags], capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stderr.strip().splitlines()[-1]}")
    m = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    row = [name, config["architecture"], m["strategy"], config["views"], f"{m['best_epoch']}/{m['epochs_run']}",
           f"{m['accuracy']:.3f}", f"{m['top5']:.3f}", f"{m['average_position']:.3f}", f"{wall:.1f}"]
    print(" | ".join(map(str, row)), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--strategies", action="store_true", help="also run the strategy table")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train").is_dir():
        raise SystemExit(f"food-dev not found at {data}")
    machine_line = machine()
    header = ["run", "backbone", "strategy", "views", "best/run epochs", "valid acc", "top-5", "avg position",
              "wall s"]
    runs = {**RUNS, **(STRATEGIES if args.strategies else {})}
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run(name, flags, data, Path(scratch)) for name, flags in runs.items()]
        first, again = (Path(scratch) / name / "model.safetensors" for name in ("default_no_flags",
                                                                                "default_retrain_feature_cache_warm"))
        same = first.read_bytes() == again.read_bytes()
    print(f"retrain weights identical to the first run's: {same}")
    if not same:
        raise SystemExit("the retrain from the feature cache trained other weights")
    body = table(header, rows)
    print(body)
    if not args.no_record:
        append("train_cpu.py: classify train on food-dev (train 880 / valid 220), CPU", body, machine_line)


if __name__ == "__main__":
    main()
