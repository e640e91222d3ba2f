"""Grouping of exact and near duplicates: Hamming search over uint64 hashes, cosine search over embeddings, connected
components, best member kept."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from curate import CurateError
from curate.embeddings import DEFAULT_MODEL
from curate.hashing import DEFAULT_METHOD, METHODS, hash_files
from curate.workspace import select_images

# Chosen by bench/dedup_quality.py (bench/RESULTS.md): on 1,650 food-dev images (150 originals x 6
# transformed copies + 600 distinct photos) phash precision stays 1.000 up to 10 bits and first drops at
# 12 (0.992), while recall of 5% crops rises from 0.15 at 8 bits to 0.38 at 10. Flips are never caught
# by phash at any threshold (recall 0.00), as with imagededup.
DEFAULT_THRESHOLD_BITS = 10

# What dedup compares: perceptual hashes, embeddings (crops, mirrors, rotations) or both (edges of either kind).
SIGNALS = ("hash", "embedding", "both")
DEFAULT_SIGNAL = "both"
# Where near-duplicates are looked for: within each category, or across all of them.
SCOPES = ("category", "all")
DEFAULT_SCOPE = "category"
# Cosine similarity of two mirror-invariant lite2 embeddings (curate.embeddings) at or above which they are
# near-duplicates. Chosen by bench/dedup_quality.py on its tuning half (150 food-dev originals x 8 edits + 300 distinct
# photos): the highest recall at precision >= 0.995 is at 0.82 (precision 0.997, recall 0.996; 0.80: precision 0.986);
# at 0.90 precision is 1.000 but recall 0.84 (5 % crops 0.99, 8-15 % crops 0.95, resized to half 0.67).
DEFAULT_SIMILARITY = 0.82
# Up to this many vectors every pair is compared (blocked matrix products: 20,000 x 20,000 x 1,280 is ~8 s on 2
# cores); above, vectors are put in cells by spherical k-means and compared within cells only.
EXACT_MAX = 20_000
CELLS_PER_VECTOR = 3  # grouping: each vector joins its 3 nearest cells, so twins near a cell border still meet
# One query against an index searches the cells of its 32 nearest centroids (of ~sqrt(N)): on 1M random 1,280-d
# vectors (no clusters, the hardest case) 8 cells return 192-194 of the 200 exact neighbours of 200 queries, 16 198-199,
# 32 199, at p50 21 ms on 2 cores at load 15 (16: 13 ms); bench/dedup_scale.py, bench/RESULTS.md. 32 keeps the margin.
CELLS_PROBED = 32
KMEANS_ITERATIONS = 8
KMEANS_SAMPLE_PER_CELL = 32

_BRUTE_BLOCK_CELLS = 1 << 22  # cells per block of the brute-force distance matrix (~32 MB of uint64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


def _pairs_brute(hashes: np.ndarray, threshold_bits: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(hashes)
    rows = max(1, _BRUTE_BLOCK_CELLS // max(n, 1))
    found_i, found_j = [], []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dist = hamming(hashes[start:stop, None], hashes[None, start:])
        i, j = np.nonzero(dist <= threshold_bits)
        j = j + start
        i = i + start
        keep = i < j
        found_i.append(i[keep])
        found_j.append(j[keep])
    return np.concatenate(found_i), np.concatenate(found_j)


def _chunks(m: int) -> list[tuple[int, int]]:
    """(shift, bits) of m contiguous substrings covering 64 bits."""
    sizes = [64 // m + (1 if k < 64 % m else 0) for k in range(m)]
    shifts = np.cumsum([0] + sizes[:-1])
    return [(int(s), b) for s, b in zip(shifts, sizes)]


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        for positions in combinations(range(bits), r):
            masks.append(sum(1 << p for p in positions))
    return np.array(masks, dtype=np.int64)


def _mih_cost(n: int, m: int, threshold_bits: int) -> float:
    radius = threshold_bits // m
    return sum(sum(comb(b, r) for r in range(radius + 1)) * n * (1 + n / 2 ** b) for _, b in _chunks(m))


def _pairs_mih(hashes: np.ndarray, threshold_bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-index hashing: if two hashes are within r bits, some of the m substrings is within r // m bits.

    Each substring indexes the hashes in a bucket table; every hash probes its own bucket and the
    buckets of keys within r // m flips, and the candidates are verified on all 64 bits.
    """
    radius = threshold_bits // m
    found_i, found_j = [], []
    for shift, bits in _chunks(m):
        keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int32)
        # Work in key order: the probes of a sorted key array walk the bucket table nearly in order,
        # which makes the gathers ~3x faster than in random order (measured on 1M hashes).
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        sorted_hashes = hashes[order]
        counts = np.bincount(keys, minlength=1 << bits).astype(np.int32)
        starts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)[:-1]))
        for mask in _flip_masks(bits, radius):
            probe = keys ^ np.int32(mask)
            cnt = counts[probe]
            hit = np.flatnonzero(cnt != 0)
            if not len(hit):
                continue
            cnt_hit = cnt[hit].astype(np.int64)
            # process in slices so the candidate arrays stay small
            cum = np.cumsum(cnt_hit)
            bounds = np.searchsorted(cum, np.arange(1, 1 + cum[-1] // 4_000_000) * 4_000_000)
            for part in np.split(np.arange(len(hit)), bounds):
                if not len(part):
                    continue
                c = cnt_hit[part]
                total = int(c.sum())
                i = np.repeat(hit[part], c)
                first = starts[probe[hit[part]]]
                j = np.repeat(first - np.cumsum(c) + c, c) + np.arange(total)
                keep = i < j  # each unordered pair once (a mask and its probe are symmetric)
                i, j = i[keep], j[keep]
                keep = hamming(sorted_hashes[i], sorted_hashes[j]) <= threshold_bits
                found_i.append(order[i[keep]])
                found_j.append(order[j[keep]])
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    return np.minimum(i, j), np.maximum(i, j)


def pairs_within(hashes: np.ndarray, threshold_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i < j) whose hashes differ by at most `threshold_bits` bits (pairs may repeat).

    Chooses between blocked brute force (vectorised popcount) and multi-index hashing by an
    estimate of the work each needs, so neither small nor million-sized sets pay a quadratic loop.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brute = n * n / 2 / 8  # a popcount cell is ~8x cheaper than a probe in the bucket tables
    best_m = min(range(2, 12), key=lambda m: _mih_cost(n, m, threshold_bits))
    if brute <= _mih_cost(n, best_m, threshold_bits):
        return _pairs_brute(hashes, threshold_bits)
    return _pairs_mih(hashes, threshold_bits, best_m)


def group_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges (i, j): a label per node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def find_groups(hashes: np.ndarray, threshold_bits: int = DEFAULT_THRESHOLD_BITS) -> list[np.ndarray]:
    """Groups (index arrays, size >= 2) of hashes linked by chains of distances <= threshold_bits."""
    i, j = pairs_within(hashes, threshold_bits)
    labels = group_labels(len(hashes), i, j)
    order = np.argsort(labels, kind="stable")
    bounds = np.nonzero(np.diff(labels[order]))[0] + 1
    return [g for g in np.split(order, bounds) if len(g) > 1]


def near_duplicate_pairs(features: np.ndarray, threshold: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) with cosine similarity >= threshold, and their similarities (blocked, no N x N matrix)."""
    found_i, found_j, found_s = [], [], []
    for start in range(0, len(features), block):
        sims = features[start:start + block] @ features[start:].T  # row i: features[start + i], column j: features[start + j]
        i, j = np.nonzero(sims >= threshold)
        keep = i < j
        i, j = i[keep], j[keep]
        found_i.append(i + start)
        found_j.append(j + start)
        found_s.append(sims[i, j])
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)


def _nearest_cells(features: np.ndarray, centroids: np.ndarray, k: int, block: int = 8192) -> np.ndarray:
    """N x k: the indices of the k centroids of highest cosine similarity to each row (unordered)."""
    out = np.empty((len(features), k), dtype=np.int64)
    for start in range(0, len(features), block):
        sims = features[start:start + block] @ centroids.T
        out[start:start + block] = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.arange(k)
    return out


def cell_centroids(features: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """Unit-length centroids of spherical k-means (faiss) on a sample of KMEANS_SAMPLE_PER_CELL rows a cell."""
    import faiss

    rng = np.random.default_rng(seed)
    sample = features[np.sort(rng.choice(len(features), min(len(features), cells * KMEANS_SAMPLE_PER_CELL), replace=False))]
    # min_points_per_centroid=1: the sample is sized on purpose (faiss would warn on stderr below 39 a cell)
    kmeans = faiss.Kmeans(features.shape[1], cells, niter=KMEANS_ITERATIONS, spherical=True, seed=seed,
                          min_points_per_centroid=1, max_points_per_centroid=KMEANS_SAMPLE_PER_CELL)
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    return kmeans.centroids.astype(features.dtype)


def similar_pairs(features: np.ndarray, threshold: float, exact_max: int = EXACT_MAX,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j, each once) of unit-length rows with cosine similarity >= threshold, and their similarities.

    Exact up to `exact_max` rows. Above, each row joins its CELLS_PER_VECTOR nearest of ~2 sqrt(N) k-means cells and
    rows are compared within each cell (blocked matrix products): ~N^1.5 work instead of N^2, missing only pairs
    that share none of their cells (bench/dedup_scale.py measures how many).
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    n = len(features)
    if n <= exact_max:
        return near_duplicate_pairs(features, threshold)
    centroids = cell_centroids(features, int(round(2 * np.sqrt(n))), seed)
    cells = _nearest_cells(features, centroids, CELLS_PER_VECTOR).ravel()
    owner = np.repeat(np.arange(n), CELLS_PER_VECTOR)
    order = np.argsort(cells, kind="stable")
    cells, owner = cells[order], owner[order]
    found_i, found_j, found_s = [], [], []
    for members in np.split(owner, np.flatnonzero(np.diff(cells)) + 1):
        i, j, sim = near_duplicate_pairs(features[members], threshold)  # members ascending: i < j stays i < j
        found_i.append(members[i])
        found_j.append(members[j])
        found_s.append(sim)
    i, j, sim = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)
    _, first = np.unique(i * n + j, return_index=True)
    return i[first], j[first], sim[first]


class EmbeddingIndex:
    """Embeddings already in a workspace, for checking one new image in milliseconds.

    Up to `exact_max` vectors every one is compared (a matrix-vector product). Above, a faiss inverted-file index:
    ~sqrt(N) k-means cells, vectors stored as float16 (half the memory, and half the bytes a query reads: on 1M x 1280
    p50 9 ms vs 23 ms for float32 at 16 cells in a trial on a loaded machine; similarities within 3e-5 of float32), of which the query's
    `cells_probed` nearest are searched. bench/dedup_scale.py checks it against the exact answer.
    """

    def __init__(self, features: np.ndarray, ids: np.ndarray | None = None, seed: int = 0, exact_max: int = EXACT_MAX):
        features = np.ascontiguousarray(features, dtype=np.float32)
        self.ids = np.arange(len(features)) if ids is None else np.asarray(ids)
        self.features = self.index = None
        if len(features) <= exact_max:
            self.features = features
            return
        import faiss

        centroids = cell_centroids(features, int(round(np.sqrt(len(features)))), seed)
        self._quantizer = faiss.IndexFlatIP(features.shape[1])  # kept: the index holds a pointer to it
        self._quantizer.add(centroids)
        self.index = faiss.IndexIVFScalarQuantizer(self._quantizer, features.shape[1], len(centroids),
                                                   faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        self.index.train(centroids)  # float16 needs no training, and the quantizer has its cells already
        self.index.add(features)

    def query(self, vector: np.ndarray, threshold: float = DEFAULT_SIMILARITY,
              cells_probed: int = CELLS_PROBED) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities) of indexed vectors with cosine similarity >= threshold to `vector`, nearest first."""
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        if self.index is None:
            sims = self.features @ vector
            rows = np.flatnonzero(sims >= threshold)
            sims = sims[rows]
        else:
            self.index.nprobe = min(cells_probed, self.index.nlist)
            _, sims, rows = self.index.range_search(vector[None], threshold - 1e-6)  # faiss keeps sims > radius
            keep = sims >= threshold
            rows, sims = rows[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")
        return self.ids[rows[order]], sims[order]


class HashIndex:
    """Hashes already in a workspace, for checking one new image in a few milliseconds (no rebuild)."""

    def __init__(self, hashes: np.ndarray, ids: np.ndarray | None = None):
        self.hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.ids = np.arange(len(hashes)) if ids is None else np.asarray(ids)

    def query(self, value: int, threshold_bits: int = DEFAULT_THRESHOLD_BITS) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of indexed hashes within threshold_bits of `value`, nearest first."""
        dist = hamming(self.hashes, np.uint64(value))
        hit = np.nonzero(dist <= threshold_bits)[0]
        hit = hit[np.argsort(dist[hit], kind="stable")]
        return self.ids[hit], dist[hit]


@dataclass(frozen=True)
class DedupReport:
    """What dedup found: groups as tuples of image ids, the kept one first."""

    method: str
    threshold_bits: int
    hashed: int
    groups: tuple[tuple[int, ...], ...]
    marked: int
    by_category: dict[str, tuple[int, int]]  # category -> (groups, images marked duplicate)
    dry_run: bool
    by: str = "hash"  # hash, embedding or both
    similarity: float = DEFAULT_SIMILARITY
    embedded: int = 0  # images embedded in this run (the others came from the cache)


def _rank(record) -> tuple:
    # best first: accepted, then most pixels, then oldest
    return (record.status != "accepted", -record.pixels, record.created_at, record.id)


def _hash_records(ws, records, method: str, workers: int | None, progress: bool) -> tuple[dict[int, int], int]:
    """image id → hash of `records` (cached in the manifest; missing ones computed): (hashes, computed)."""
    cached = ws.hashes(method)
    missing = [r for r in records if r.id not in cached]
    if missing:
        values, ok = hash_files([ws.abspath(r) for r in missing], method, workers=workers, progress=progress)
        new = {r.id: int(v) for r, v, good in zip(missing, values, ok) if good}
        ws.set_hashes(method, new)  # one transaction: a kill before it loses only this run's hashing
        cached.update(new)
    return cached, len(missing)


def near_duplicate_edges(members, hashes: dict[int, int] | None, vectors: dict[int, np.ndarray] | None,
                         threshold_bits: int, similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges (index pairs into `members`) of exact duplicates by sha256, and near ones by hash and/or embedding."""
    edges_i, edges_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for values, search in ((hashes, lambda v: pairs_within(np.array(v, dtype=np.uint64), threshold_bits)),
                           (vectors, lambda v: similar_pairs(np.stack(v), similarity)[:2])):
        if values is None:
            continue
        present = np.array([k for k, r in enumerate(members) if r.id in values], dtype=np.int64)
        if len(present) >= 2:
            i, j = search([values[members[k].id] for k in present])
            edges_i.append(present[i])
            edges_j.append(present[j])
    sha_index: dict[str, int] = {}
    for k, r in enumerate(members):  # exact duplicates by content, whatever their hashes
        if sha_index.setdefault(r.sha256, k) != k:
            edges_i.append(np.array([sha_index[r.sha256]]))
            edges_j.append(np.array([k]))
    return np.concatenate(edges_i).astype(np.int64), np.concatenate(edges_j).astype(np.int64)


def _check_options(method: str, threshold_bits: int, scope: str, by: str, similarity: float) -> None:
    if method not in METHODS:
        raise CurateError(f"unknown hash {method!r}; use one of {', '.join(METHODS)}")
    if not 0 <= threshold_bits <= 32:
        raise CurateError(f"--threshold must be between 0 and 32 bits, got {threshold_bits}")
    if scope not in SCOPES:
        raise CurateError(f"--scope must be {' or '.join(map(repr, SCOPES))}, got {scope!r}")
    if by not in SIGNALS:
        raise CurateError(f"--method must be one of {', '.join(SIGNALS)}, got {by!r}")
    if not 0 < similarity <= 1:
        raise CurateError(f"--similarity must be above 0 and at most 1, got {similarity}")


def dedup(ws, method: str = DEFAULT_METHOD, threshold_bits: int = DEFAULT_THRESHOLD_BITS, scope: str = DEFAULT_SCOPE,
          dry_run: bool = False, workers: int | None = None, progress: bool = False, by: str = DEFAULT_SIGNAL,
          similarity: float = DEFAULT_SIMILARITY, model: str = DEFAULT_MODEL) -> DedupReport:
    """Mark exact (sha256) and near duplicates in workspace `ws`: near by perceptual hash (`method`, within
    `threshold_bits`), by embedding (cosine >= `similarity`; crops, mirrors, rotations) or both (`by`).

    Rejected images take no part. Each group keeps its best member (accepted first, then most
    pixels, then oldest); the others become 'duplicate' with duplicate_of = the kept id. Missing
    hashes and embeddings are computed and cached in the manifest (also in a dry run, which changes
    no status); the embeddings are suspects' own (curate.embeddings).
    """
    from curate.embeddings import embed_records

    _check_options(method, threshold_bits, scope, by, similarity)
    records = ws.list_images(status=("pending", "accepted", "duplicate"))
    hashes = vectors = None
    hashed = embedded = 0
    if by in ("hash", "both"):
        hashes, hashed = _hash_records(ws, records, method, workers, progress)
    if by in ("embedding", "both"):
        vectors, _, embedded = embed_records(ws, records, model, progress=progress)
    records = [r for r in records if (hashes is not None and r.id in hashes) or (vectors is not None and r.id in vectors)]
    scopes: dict[str, list] = {}
    for r in records:
        scopes.setdefault(r.category if scope == "category" else "(all)", []).append(r)

    groups, updates, by_category = [], {}, {}
    for name, members in scopes.items():
        i, j = near_duplicate_edges(members, hashes, vectors, threshold_bits, similarity)
        labels = group_labels(len(members), i, j)
        n_groups = n_marked = 0
        by_label: dict[int, list] = {}
        for r, label in zip(members, labels):
            by_label.setdefault(int(label), []).append(r)
        for group in by_label.values():
            if len(group) < 2:
                if group[0].status == "duplicate":  # its twin is gone (rejected): it stands alone again
                    updates[group[0].id] = None
                continue
            group.sort(key=_rank)
            keep = group[0]
            groups.append(tuple(r.id for r in group))
            n_groups += 1
            if keep.status == "duplicate":
                updates[keep.id] = None
            for r in group[1:]:
                if r.status != "duplicate" or r.duplicate_of != keep.id:
                    updates[r.id] = keep.id
                n_marked += 1
        by_category[name] = (n_groups, n_marked)
    if not dry_run and updates:
        with ws.transaction():
            ws.mark_duplicates({i: k for i, k in updates.items() if k is not None})
            for image_id in (i for i, k in updates.items() if k is None):
                ws.set_status(image_id, "pending", log=False)
    return DedupReport(method, threshold_bits, hashed, tuple(groups), sum(n for _, n in by_category.values()),
                       by_category, dry_run, by, similarity, embedded)


def keep_instead(ws, image_id: int):
    """Make a duplicate the kept image of its group (the review UI's choice): it takes the old kept one's status, the
    rest point at it; one batch, so one undo restores the group."""
    with ws.batch():
        record = ws.get(image_id)
        if record.status != "duplicate" or record.duplicate_of is None:
            raise CurateError(f"image {image_id} is not a duplicate; it is already kept")
        old = ws.get(record.duplicate_of)
        members = select_images(ws, "duplicate_of = ? AND id != ?", (old.id, image_id))
        ws.set_status(image_id, old.status if old.status != "duplicate" else "pending")
        for other in [old, *members]:
            ws.set_status(other.id, "duplicate", duplicate_of=image_id)
        return ws.get(image_id)
