"""Claim: curate hashes >= 1,500 img/s on 384-px food-dev JPEGs with 2 processes (Pillow draft + process pool)."""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import PIL

from curate.hashing import hash_files

FOOD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "food-dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=4, help="hash the file list this many times")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    paths = sorted(Path(args.data).rglob("*.jpg")) * args.repeat  # repeat: enough work to amortise the pool
    if not paths:
        raise SystemExit(f"no JPEGs under {args.data}")
    hash_files(paths[:64], workers=1)  # warm the page cache
    rows = []
    for label, workers, draft in (("full decode, 1 process", 1, None), ("draft 64 px, 1 process", 1, 64),
                                  (f"draft 64 px, {args.workers} processes", args.workers, 64)):
        t = time.perf_counter()
        values, ok = hash_files(paths, workers=workers, draft_px=draft)
        rate = len(paths) / (time.perf_counter() - t)
        rows.append((label, f"{rate:,.0f}"))
        if draft is None:
            full = values
        else:
            bits = np.bitwise_count(full ^ values)
            rows[-1] += (f"{bits.mean():.2f}", int(bits.max()))
    rows[0] += ("0", 0)
    print(f"{len(paths)} images from {args.data}, {os.cpu_count()} CPUs")
    print(f"{'setting':<28} {'img/s':>7}  {'mean bits vs full':>17}  {'max':>3}")
    for r in rows:
        print(f"{r[0]:<28} {r[1]:>7}  {r[2]:>17}  {r[3]:>3}")
    if not args.no_record:
        results = Path(__file__).with_name("RESULTS.md")
        if not results.exists():
            results.write_text("# Benchmark results\n")
        with results.open("a") as fh:
            fh.write(f"\n### hashing.py (phash), {date.today()} ({platform.node()}, {os.cpu_count()} CPUs, Pillow {PIL.__version__}, "
                     f"{len(paths)} food-dev JPEGs)\n\n| setting | img/s | mean bits changed vs full decode | max |\n| --- | --- | --- | --- |\n")
            fh.writelines(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |\n" for r in rows)


if __name__ == "__main__":
    main()
