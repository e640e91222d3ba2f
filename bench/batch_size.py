"""Claim behind classify/batching.py's largest batch: per-image forward time on the CPU by batch size, for each
offline backbone and the CPU default's side-by-side set, at their default input sizes. Random weights (speed does not
depend on them), channels_last, inference mode, 2 torch threads; the sizes interleaved, median of 5 rounds.
  python bench/batch_size.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import MODELS, append, machine, table  # noqa: E402

from classify import models  # noqa: E402

SIZES = (1, 2, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    machine_line = machine()
    rows = []
    for name in MODELS:
        model, spec, _ = models.create(name, 10, pretrained=False)
        model = model.eval().to(memory_format=torch.channels_last)
        times = {b: [] for b in SIZES}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for b in SIZES:
                    x = torch.randn(b, 3, spec.image_size, spec.image_size).contiguous(memory_format=torch.channels_last)
                    model(x)  # warm-up at this shape
                    started = time.perf_counter()
                    model(x)
                    times[b].append(1000 * (time.perf_counter() - started) / b)
        medians = {b: float(np.median(v)) for b, v in times.items()}
        best = min(medians, key=medians.get)
        rows.append([name, spec.image_size, *(f"{medians[b]:.1f}" for b in SIZES), best])
        print(rows[-1], flush=True)
    body = table(["backbone", "input px", *(f"batch {b}: ms/image" for b in SIZES), "fastest batch"], rows)
    print(body)
    if not args.no_record:
        append("batch_size.py (CPU forward, ms per image by batch size)", body, machine_line)


if __name__ == "__main__":
    main()
