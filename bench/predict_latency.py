"""Claim: single-image `predict` latency on the CPU (p50, p95), file to top-5, for each offline backbone and the CPU default's.
  python bench/predict_latency.py [--runs 60]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, MODELS, append, head_only_bundle, machine, table  # noqa: E402

import classify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="backbones (default: each offline Lite model and the CPU default's side-by-side set)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = sorted((Path(args.data) / "valid").rglob("*.jpg"))[: args.runs]
    machine_line = machine()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            predictor = classify.load(head_only_bundle(args.data, Path(scratch) / name, name))
            for image in images[:3]:
                predictor.predict(image)  # warm-up
            latencies = []
            for image in images:
                started = time.perf_counter()
                predictor.predict(image, k=5)
                latencies.append(1000 * (time.perf_counter() - started))
            rows.append([name, predictor.image_size, f"{np.percentile(latencies, 50):.1f}",
                         f"{np.percentile(latencies, 95):.1f}"])
            print(rows[-1], flush=True)
    body = table(["backbone", "input px", "p50 ms", "p95 ms"], rows)
    body += f"\n\n{len(images)} food-dev valid JPEGs (384 px), one at a time, decode + resize + forward + top-5, " \
            f"{torch.get_num_threads()} torch threads."
    print(body)
    if not args.no_record:
        append("predict_latency.py (CPU, single image)", body, machine_line)


if __name__ == "__main__":
    main()
