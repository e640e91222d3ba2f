"""Claim: grouping 1,000,000 hashes at threshold 8 takes <= 30 s, and one query against a 1M index <= 10 ms."""
from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from curate.dedup import HashIndex, find_groups, pairs_within


def synthetic_hashes(n: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """n random 64-bit hashes, 5% of them near copies (1-8 bit flips) of others; returns (hashes, planted)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    planted = n // 20
    src = rng.choice(n - planted, planted, replace=False)
    flips = np.zeros(planted, dtype=np.uint64)
    n_flips = rng.integers(1, 9, planted)
    for k in range(8):
        bit = rng.integers(0, 64, planted).astype(np.uint64)
        flips |= np.where(k < n_flips, np.uint64(1) << bit, np.uint64(0))
    base[n - planted:] = base[src] ^ flips
    return base, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--threshold", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    hashes, planted = synthetic_hashes(args.n)
    t0 = time.perf_counter()
    groups = find_groups(hashes, args.threshold)
    group_s = time.perf_counter() - t0
    in_groups = sum(len(g) for g in groups)

    index = HashIndex(hashes)
    rng = np.random.default_rng(1)
    queries = hashes[rng.integers(0, args.n, args.queries)] ^ np.uint64(0b1011)
    index.query(int(queries[0]), args.threshold)  # warm up
    times = []
    for q in queries:
        t = time.perf_counter()
        ids, _ = index.query(int(q), args.threshold)
        times.append((time.perf_counter() - t) * 1000)
        assert len(ids) >= 1
    p50, p99 = np.percentile(times, [50, 99])

    rows = [("hashes", f"{args.n:,}"), ("threshold (bits)", args.threshold), ("planted near copies", f"{planted:,}"),
            ("groups found", f"{len(groups):,}"), ("images in groups", f"{in_groups:,}"),
            ("grouping time (s)", f"{group_s:.1f}"), ("query p50 (ms)", f"{p50:.2f}"), ("query p99 (ms)", f"{p99:.2f}")]
    width = max(len(str(k)) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if not args.no_record:
        results = Path(__file__).with_name("RESULTS.md")
        if not results.exists():
            results.write_text("# Benchmark results\n")
        with results.open("a") as fh:
            fh.write(f"\n### dedup_scale.py, {date.today()} ({platform.node()}, {platform.processor() or platform.machine()}, "
                     f"numpy {np.__version__})\n\n| measure | value |\n| --- | --- |\n")
            fh.writelines(f"| {k} | {v} |\n" for k, v in rows)


if __name__ == "__main__":
    main()
