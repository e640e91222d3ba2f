"""Claim: single-image `predict` latency on the CPU (p50, p95), file to top-5, for each offline backbone and the CPU
default's, scored through ONNX Runtime and through eager PyTorch side by side (the ratio is the claim where the
machine is noisy). Each figure comes from a fresh process that loads the bundle and predicts, as a server or CLI
does: a process that trained first reads faster (its allocator is warm), which once misled us.
  python bench/predict_latency.py [--runs 40] [--rounds 2] [--runtimes onnx torch]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, MODELS, append, head_only_bundle, machine, table  # noqa: E402


def time_one(bundle: str, runtime: str, data: str, runs: int) -> dict:
    """In this (fresh) process: load the bundle, warm up on 3 images, then time `runs` single-image predictions."""
    import torch

    import classify
    images = sorted((Path(data) / "valid").rglob("*.jpg"))[:runs]
    started = time.perf_counter()
    predictor = classify.load(bundle, runtime=runtime)
    load_s = time.perf_counter() - started
    for image in images[:3]:
        predictor.predict(image)
    latencies = []
    for image in images:
        started = time.perf_counter()
        predictor.predict(image, k=5)
        latencies.append(1000 * (time.perf_counter() - started))
    return {"load_s": load_s, "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
            "images": len(images), "threads": torch.get_num_threads()}


def fresh(bundle: Path, runtime: str, data: str, runs: int, cache: str) -> dict:
    command = [sys.executable, __file__, "--time", str(bundle), "--runtimes", runtime, "--data", data,
               "--runs", str(runs)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "PLATEKIT_CACHE": cache})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per backbone and runtime, interleaved")
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="backbones (default: each offline Lite model and the CPU default's side-by-side set)")
    parser.add_argument("--runtimes", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    parser.add_argument("--time", metavar="BUNDLE", help=argparse.SUPPRESS)  # the child: time one bundle, print JSON
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.time:
        print(json.dumps(time_one(args.time, args.runtimes[0], args.data, args.runs)))
        return
    machine_line = machine()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(Path(scratch) / "cache")  # empty: the first ONNX load exports, the later ones read the cache
        for name in args.models:
            bundle = head_only_bundle(args.data, Path(scratch) / name.replace("+", "_"), name)
            seen = {runtime: [] for runtime in args.runtimes}
            for _ in range(args.rounds):
                for runtime in args.runtimes:
                    seen[runtime].append(fresh(bundle, runtime, args.data, args.runs, cache))
            p50 = {runtime: float(np.median([r["p50"] for r in seen[runtime]])) for runtime in args.runtimes}
            for runtime in args.runtimes:
                loads = [r["load_s"] for r in seen[runtime]]
                ratio = f"{p50['torch'] / p50[runtime]:.2f}x" if "torch" in p50 else ""
                rows.append([name, runtime, f"{p50[runtime]:.1f}",
                             f"{np.median([r['p95'] for r in seen[runtime]]):.1f}", ratio,
                             f"{loads[0]:.1f} / {min(loads[1:] or loads):.1f}"])
                print(rows[-1], flush=True)
    images, threads = seen[args.runtimes[0]][0]["images"], seen[args.runtimes[0]][0]["threads"]
    body = table(["backbone", "runtime", "p50 ms", "p95 ms", "torch p50 / this p50", "load s (first / later)"], rows)
    body += (f"\n\n{images} food-dev valid JPEGs (384 px), one at a time, decode + resize + forward + top-5, "
             f"{threads} threads; medians over {args.rounds} fresh processes per row, the runtimes interleaved. "
             f"The first ONNX load includes the export into an empty cache.")
    print(body)
    if not args.no_record:
        append("predict_latency.py (CPU, single image, fresh processes)", body, machine_line)


if __name__ == "__main__":
    main()
