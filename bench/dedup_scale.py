"""Claims: grouping 1,000,000 hashes at threshold 8 takes <= 30 s, and one query against a 1M index <= 10 ms;
grouping 100,000 embeddings takes <= 60 s, and one query against a 1,000,000-embedding index <= 50 ms.

Embeddings are random unit vectors of lite2's dimension (1,280), 5 % of them planted near copies of others at cosine
similarity 0.90-0.99 (uniform); "planted pairs found" is how many of those the cell search returns. The index is
checked against brute force: of the exact neighbours (cosine >= DEFAULT_SIMILARITY, the query itself left out) of each
query, how many it returns, at 8, 16 and CELLS_PROBED cells. Random vectors have no clusters: the hardest case for cells.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import faiss
import numpy as np

from curate.dedup import CELLS_PROBED, DEFAULT_SIMILARITY, EmbeddingIndex, HashIndex, find_groups, similar_pairs


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


def synthetic_embeddings(n: int, dimensions: int = 1280, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random unit vectors, the last 5 % near copies (cosine 0.90-0.99) of others; returns (vectors, their sources)."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, dimensions), dtype=np.float32)
    for start in range(0, n, 65536):  # in chunks: a 1M x 1280 float64 draw would need 10 GB
        chunk = rng.standard_normal((min(65536, n - start), dimensions), dtype=np.float32)
        vectors[start:start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    planted = n // 20
    src = rng.choice(n - planted, planted, replace=False)
    similarity = rng.uniform(0.90, 0.99, planted).astype(np.float32)[:, None]
    noise = vectors[n - planted:]
    noise -= (noise * vectors[src]).sum(1, keepdims=True) * vectors[src]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors[n - planted:] = similarity * vectors[src] + np.sqrt(1 - similarity ** 2) * noise
    return vectors, src


def grouping_rows(n_group: int) -> list[tuple[str, object]]:
    vectors, src = synthetic_embeddings(n_group)
    planted = len(src)
    t0, c0 = time.perf_counter(), time.process_time()
    i, j, _ = similar_pairs(vectors, 0.9)
    group_s, group_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    found = set((i * n_group + j).tolist())
    hits = sum(int(a) * n_group + b in found for a, b in zip(src, range(n_group - planted, n_group)))
    return [("embeddings grouped", f"{n_group:,} x 1280"), ("planted pairs (cosine 0.90-0.99)", f"{planted:,}"),
            ("planted pairs found at cosine 0.90", f"{hits:,} ({hits / planted:.1%})"), ("pairs found", f"{len(i):,}"),
            ("embedding grouping time (s, wall / CPU of all threads)", f"{group_s:.1f} / {group_cpu_s:.1f}")]


def exact_neighbours(vectors: np.ndarray, rows: np.ndarray, threshold: float) -> list[set[int]]:
    """For each row in `rows`, every other row with cosine similarity >= threshold (brute force)."""
    sims = vectors[rows] @ vectors.T
    return [set(np.flatnonzero(s >= threshold).tolist()) - {int(r)} for s, r in zip(sims, rows)]


def index_rows(n_index: int, queries: int) -> list[tuple[str, object]]:
    """Index build, then one query at a time: latency and recall of the exact neighbours above DEFAULT_SIMILARITY."""
    vectors, src = synthetic_embeddings(n_index, seed=1)
    t0, c0 = time.perf_counter(), time.process_time()
    index = EmbeddingIndex(vectors)
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rng = np.random.default_rng(2)
    picks = rng.integers(0, len(src), queries)  # query with a planted copy: its source must come back
    rows_q = n_index - len(src) + picks
    truth = exact_neighbours(vectors, rows_q, DEFAULT_SIMILARITY)
    out = [("embedding index", f"{n_index:,} x 1280"), ("index build (s, wall / CPU)", f"{build_s:.1f} / {build_cpu_s:.1f}"),
           (f"exact neighbours at {DEFAULT_SIMILARITY} of the queries (brute force)", f"{sum(map(len, truth)):,}")]
    index.query(vectors[-1], DEFAULT_SIMILARITY)  # warm up
    for probed in sorted({8, 16, CELLS_PROBED}):
        times, found = [], 0
        for row, true in zip(rows_q, truth):
            t = time.perf_counter()
            ids, _ = index.query(vectors[row], DEFAULT_SIMILARITY, cells_probed=probed)
            times.append((time.perf_counter() - t) * 1000)
            found += len(true & set(ids.tolist()))
        p50, p99 = np.percentile(times, [50, 99])
        mark = " (default)" if probed == CELLS_PROBED else ""
        out += [(f"{probed} cells{mark}: exact neighbours found", f"{found}/{sum(map(len, truth))}"),
                (f"{probed} cells{mark}: embedding query p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--threshold", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embeddings", type=int, default=100_000, help="embeddings to group")
    parser.add_argument("--index", type=int, default=1_000_000, help="embeddings in the query index")
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
    rows += grouping_rows(args.embeddings) + index_rows(args.index, args.queries)
    width = max(len(str(k)) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if not args.no_record:
        results = Path(__file__).with_name("RESULTS.md")
        if not results.exists():
            results.write_text("# Benchmark results\n")
        with results.open("a") as fh:
            fh.write(f"\n### dedup_scale.py, {date.today()} ({platform.node()}, {platform.processor() or platform.machine()}, "
                     f"numpy {np.__version__}, faiss {faiss.__version__}, load average {os.getloadavg()[0]:.1f} at the end)\n\n| measure | value |\n| --- | --- |\n")
            fh.writelines(f"| {k} | {v} |\n" for k, v in rows)


if __name__ == "__main__":
    main()
