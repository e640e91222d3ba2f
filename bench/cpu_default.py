"""Claim: the CPU default of `classify train` (no flags) is chosen on food-dev valid + food-dev-extra together (1,720
photos, not the 220 of valid alone) and reaches >= 80 % on food-dev-extra, trains in <= 5 min on food-dev on the
2-core CPU and predicts one image in <= 60 ms p50 (bench/predict_latency.py).

Each candidate is the real CLI, as a user would run it: `classify train` on food-dev (train 880 / valid 220) with the
candidate's flags, then scored as `classify evaluate --unknown nonfood-dev` scores it on food-dev-extra (1,500
photos of the same classes from Food-101's uncleaned train list: noisier labels, see its SOURCES.md; nonfood-dev:
468 non-food photos), from the backbones' pooled features of those photos, computed once per set of backbones (a bundle's
head and on-menu statistics applied to them, with the functions `classify evaluate` uses). Candidates on the same
backbones share a feature cache, so a second head on them costs seconds; the wall time shown for such a run is that
of a retrain, and the first run on those backbones gives the cold figure.
  python bench/cpu_default.py [--work /tmp/platekit-cpu-default] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

SHARED = FOOD_DEV.parent
TRIO = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"
PAIR = "efficientnet_lite0+efficientnet_lite2"
CANDIDATES = {  # name -> (backbones, extra flags)
    "lite0, linear (the old default)": ("efficientnet_lite0", []),
    "lite0+lite2, linear": (PAIR, []),
    "lite0+lite2, mlp": (PAIR, ["--head", "mlp"]),
    "lite0+lite1+lite2, linear": (TRIO, []),
    "lite0+lite1+lite2, mlp": (TRIO, ["--head", "mlp"]),
    "lite0+lite1+lite2, mlp, 50 epochs": (TRIO, ["--head", "mlp", "--epochs", "50"]),
    "lite0+lite1+lite2, mlp, lr 3e-3": (TRIO, ["--head", "mlp", "--lr", "3e-3"]),
    "lite0+lite1+lite2, mlp, weight decay 0.5": (TRIO, ["--head", "mlp", "--weight-decay", "0.5"]),
    "lite0+lite1+lite2, mlp, 8 views": (TRIO, ["--head", "mlp", "--views", "8"]),
    # the default's three backbones at a smaller input: (224/260)^2 = 0.74 of the pixels, for the demo's throughput
    "lite0+lite1+lite2, mlp, 240 px": (TRIO, ["--head", "mlp", "--image-size", "240"]),
    "lite0+lite1+lite2, mlp, 224 px": (TRIO, ["--head", "mlp", "--image-size", "224"]),
}


def scored_features(predictor, work: Path, backbones: str) -> dict:
    """{"extra": (features, labels), "nonfood": (features, None)}: the frozen backbones' pooled features, computed
    once per set of backbones (work/features-BACKBONES.npz). Head-only bundles on the same backbones differ only in
    their heads (and on-menu statistics), so each is scored on these arrays exactly as `classify evaluate` would
    score it (same forward pass, same metric functions)."""
    from classify import data as D

    store = work / f"features-{backbones}-{predictor.image_size}px.npz"
    if store.is_file():
        loaded = np.load(store, allow_pickle=False)
        return {"extra": (loaded["extra_x"], loaded["extra_y"]), "nonfood": (loaded["nonfood_x"], None),
                "seconds": float(loaded["seconds"])}
    started = time.time()
    extra = SHARED / "food-dev-extra"
    samples = [D.Sample(path, predictor.classes.index(name)) for name in predictor.classes
               for path in D.images_in(extra / name)]
    cache = D.load_cache(samples, predictor.cache_size)
    extra_x, _ = predictor.features_and_logits(cache.images)
    nonfood = D.load_cache([D.Sample(p, 0) for p in D.images_in(SHARED / "nonfood-dev")], predictor.cache_size)
    nonfood_x, _ = predictor.features_and_logits(nonfood.images)
    seconds = time.time() - started
    np.savez(store, extra_x=extra_x, extra_y=cache.labels.numpy(), nonfood_x=nonfood_x, seconds=seconds)
    return {"extra": (extra_x, cache.labels.numpy()), "nonfood": (nonfood_x, None), "seconds": seconds}


def score(predictor, arrays: dict) -> dict:
    import torch
    from classify.evaluate import calibration_metrics, metrics_from_probabilities

    (extra_x, extra_y), (nonfood_x, _) = arrays["extra"], arrays["nonfood"]
    with torch.inference_mode():
        logits = predictor.model.head(torch.from_numpy(extra_x).float()).numpy()
        nonfood_logits = predictor.model.head(torch.from_numpy(nonfood_x).float()).numpy()
    metrics = metrics_from_probabilities(predictor.probabilities_from_logits(logits), extra_y, predictor.classes)
    metrics.update(calibration_metrics(logits, extra_y, predictor.temperature))
    kept = predictor.on_menu(predictor.menu_scores(extra_x, logits), len(extra_x)).mean()
    rejected = 1 - predictor.on_menu(predictor.menu_scores(nonfood_x, nonfood_logits), len(nonfood_x)).mean()
    return {**metrics, "on_menu_kept": float(kept), "rejected": float(rejected)}


RUN_COLUMNS = ("valid acc (220)", "extra acc (1,500)", "both (1,720)", "extra top-5", "extra ECE", "extra kept on menu",
               "non-food rejected", "train wall s", "extra + non-food features s")  # run's row after the name


def run(name: str, backbones: str, flags: list[str], work: Path) -> list:
    import classify

    out = work / "".join(c if c.isalnum() else "_" for c in name)
    cache = work / f"cache-{backbones}"
    command = [sys.executable, "-m", "classify", "train", "--data", str(FOOD_DEV), "--out", str(out), "--quiet",
               "--model", backbones, "--feature-cache", str(cache), *flags]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    valid = json.loads((out / "metrics.json").read_text())
    predictor = classify.load(out)
    arrays = scored_features(predictor, work, backbones)
    extra = score(predictor, arrays)
    n_valid, n_extra = valid["n"], extra["n"]
    both = (valid["accuracy"] * n_valid + extra["accuracy"] * n_extra) / (n_valid + n_extra)
    row = [name, f"{valid['accuracy']:.3f}", f"{extra['accuracy']:.3f}", f"{both:.3f}", f"{extra['top5']:.3f}",
           f"{extra['ece']:.3f}", f"{extra['on_menu_kept']:.3f}", f"{extra['rejected']:.3f}", f"{wall:.0f}",
           f"{arrays['seconds']:.0f}"]
    print(" | ".join(row), flush=True)
    return row


def work_folder(path: str) -> Path:
    """The scratch folder for runs and features, once food-dev and food-dev-extra are known to be there."""
    if not (FOOD_DEV / "train").is_dir() or not (SHARED / "food-dev-extra").is_dir():
        raise SystemExit(f"food-dev and food-dev-extra not found under {SHARED}")
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/platekit-cpu-default")
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    work = work_folder(args.work)
    machine_line = machine()
    chosen = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    rows = [run(name, backbones, flags, work) for name, (backbones, flags) in chosen.items()]
    body = table(["candidate (head only, 4 cached views, 25 epochs)", *RUN_COLUMNS], rows)
    print(body)
    if not args.no_record:
        append("cpu_default.py: candidates for the CPU default, scored on food-dev valid + food-dev-extra", body,
               machine_line)


if __name__ == "__main__":
    main()
