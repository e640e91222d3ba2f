"""Suspicion ranking: score every pending/accepted image by how likely it is wrong, most suspicious first.

What is computed (``find_suspects``):

1. Backbone embeddings from ``classify.embed.Embedder`` (mirror-invariant; ``curate.embeddings``, shared with dedup),
   cached in the manifest's ``embeddings`` table under (image id, model) with the sha256 and crop they were made
   from: only new or re-cropped images are embedded again.
2. A cross-validated linear probe (k-fold multinomial logistic regression on the current labels; near-
   duplicates kept in one fold so a copy cannot vouch for its twin) giving out-of-fold probabilities.
3. Four signals per image, each in 0..1, combined as a noisy-OR ``1 - prod(1 - s)``:
   - label: 1 - out-of-fold probability of the given label (confident learning's self-confidence; it ranked the
     bench's flips better than the normalized margin) — "looks more like baklava (91 %)" or "unsure of its label (22 % for it)";
   - outlier: distance to its class centroid in robust z-units (median/MAD of its class) — "far from its class";
     and distance to the nearest centroid of any class, in z-units over all images — "far from every category"
     (off-topic images: screenshots, text, non-food photos; for these the label signal is left out, so an off-topic
     image ranks with a confident label flip instead of above every one);
   - quality: from its flags (QUALITY_WEIGHTS) — "blurry", "near_blank", ...;
   - duplicate: a near-twin by embedding (cosine >= near_duplicate_similarity) that dedup's hashes missed
     (flips, crops); the smaller/newer of the two is marked — "near-duplicate of #12 (97 % similar)".
   Unreadable images score 1.0. An image far from every category gets no suggested label: it wants rejecting.

An image whose "far from every category" signal reaches ``off_topic_at`` also gets the quality flag ``off_topic``
(cleared again when a later run finds it near a category), which `accept` treats as blocking: it stays pending, out
of the export, until someone looks at it (the review UI filters by it and rejects all with it in one action).

Order: most suspicious first among the images `accept` would let through, then the pending images a blocking flag
already holds back (off-topic, unreadable, near-blank, too small), each part by score. The review queue goes to the
images that can still reach the training set: on bench/curation.py this put 59 of a fold's 70 label flips in the
top 10 % instead of 55, where the off-topic images had taken 15 of its 95 places.

Scores, suggested labels (the probe's top category when it is not the current one) and reasons are stored on
the images (columns suspicion, suggested_label, suspicion_reason); the review UI orders by them (curate/views.py).
Duplicates and rejected images are not scored: dedup and the reviewer already decided about them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from curate.dedup import near_duplicate_pairs
from curate.embeddings import DEFAULT_MODEL, embed_records
from curate.quality import FLAGS, SET_BY_SUSPECTS, is_held
from curate.workspace import ImageRecord, Workspace

SCORED_STATUSES = ("pending", "accepted")

# How much a quality flag alone makes an image suspect (noisy-OR with the other signals).
QUALITY_WEIGHTS = {"unreadable": 1.0, "near_blank": 0.9, "too_small": 0.6, "extreme_aspect": 0.4,
                   "blurry": 0.5, "dark": 0.3, "bright": 0.3, "grayscale": 0.2}


@dataclass(frozen=True)
class SuspectsConfig:
    """Settings of one scoring run; the CLI takes its defaults from here."""

    # Embedding backbone. lite2 (260 px) over lite0: on bench/curation.py, 5 folds, its probe put 279 of the 350 flips
    # in the top 10 % against 250 with lite0 (same weights below), for ~25 s instead of ~10 s per 1,000 images on 2 cores.
    model: str = DEFAULT_MODEL
    folds: int = 5
    # Inverse L2 strength of the probe on the unit-length embeddings: on the bench's noisy set C=3 ranked flips best
    # (top 5 %: 98 % noise) among 3/10/30 and standardized features with C=0.01-0.5 (83-88 %).
    probe_c: float = 3.0
    # Robust z where the outlier signals start and where they reach 1: of the distance to the class centroid (median/MAD
    # within the class) and of the distance to the nearest centroid (over all images). Chosen on bench/curation.py (noise
    # seed 0) among (1, 4) / (2, 6) and (2, 5) / (3, 6) / (4, 8) / no global term: the global term lifts the top 5 % from
    # 92 % to 100 % injected noise (off-topic images sit at z 5.3-7.2, the clean ones at -1.3-2.1, 5-95th percentile).
    outlier_z: tuple[float, float] = (2.0, 6.0)
    global_outlier_z: tuple[float, float] = (2.0, 5.0)
    # Cosine similarity of lite0 embeddings to the nearest other image: distinct food-dev photos 0.53-0.77 (5-95th
    # percentile), injected near copies 0.85-0.98. 0.90 or 0.93 found no more noise in the bench's top 20 %.
    # Mirror-invariant vectors (curate.embeddings) sit closer: 0.96, where a mirror still scores 1.00 and a 5 % crop
    # mostly above (bench/dedup_quality.py); at 0.95 two flat-colour test drawings became twins. dedup itself groups
    # from DEFAULT_SIMILARITY (0.82) on, so this signal is for the twins a hash-only dedup left.
    near_duplicate_similarity: float = 0.96
    # Strength of "far from every category" (when it is >= 0.5 the label signal is dropped, not compounded): 0.9 ranks
    # an off-topic image with a flip whose label the probe gives 10 %, so confident flips (which cost accuracy) come
    # before the off-topic images (which a head on frozen features mostly tolerates), and all off-topic images still
    # come within the top 20 %. bench/curation.py, 5 folds, lite2, flips + off-topic in the top 10 % / 20 %:
    # 0.97: 188 + 255 / 313 + 257; 0.9: 279 + 76 / 313 + 257; 0.8: 289 + 47 / 324 + 110 (of 350 + 264).
    off_topic_weight: float = 0.9
    # "Far from every category" at or above this (robust z 4.7 with global_outlier_z) flags the image off_topic. On the
    # bench's 30 tuning folds (bench/curation.py repeats 1-6), per fold: 50.6 of its 53 off-topic images flagged, 2.8 of
    # its ~800 clean ones (Food-101 oddities: foil parcels, photos under coloured light) and 0.2 flips; at 0.5, 52.8 /
    # 11.5 / 1.3, and the top 10 % of the queue held the same 58.7 flips either way.
    off_topic_at: float = 0.9
    seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class Suspect:
    """One scored image; `suggested_label` is None when the probe agrees with the current label."""

    image_id: int
    score: float
    category: str
    suggested_label: str | None
    reason: str
    origin: str  # source URL, or the original path for imports
    label_probability: float | None  # out-of-fold probability of its current label
    held: bool = False  # pending with a blocking flag: `accept` leaves it out (ranked after the others)


@dataclass(frozen=True)
class SuspectsReport:
    suspects: tuple[Suspect, ...]  # most suspicious first
    embedded: int  # images embedded in this run (the others came from the cache)
    cached: int
    probe_accuracy: float | None  # out-of-fold agreement of the probe with the current labels


def probe_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, groups: np.ndarray,
                        folds: int = 5, c: float = 3.0, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold class probabilities (N x num_classes) of a k-fold logistic-regression probe.

    None when there is too little to cross-validate (fewer than 2 classes of 2 images, or fewer than 2 groups).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    counts = np.bincount(labels, minlength=num_classes)
    k = int(min(folds, np.sort(counts)[-2], len(np.unique(groups))))  # classes smaller than k sit out some folds
    if k < 2:
        return None
    probabilities = np.full((len(labels), num_classes), 1.0 / num_classes)
    # One BLAS thread: with the default one per core the lbfgs fit of ~1,000 x 1,280 was ~100x slower on a busy 2-core
    # machine (65 s against 0.5 s for the 5 folds).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # tiny classes: "least populated class has fewer members than n_splits"
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(features, labels, groups)
        for train_idx, test_idx in splits:
            present = np.unique(labels[train_idx])
            if len(present) < 2:
                continue
            probe = LogisticRegression(C=c, max_iter=1000)
            probe.fit(features[train_idx], labels[train_idx])
            fold = np.zeros((len(test_idx), num_classes))
            fold[:, probe.classes_] = probe.predict_proba(features[test_idx])
            probabilities[test_idx] = fold
    return probabilities


def _group_of(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    from curate.dedup import group_labels

    return group_labels(n, i.astype(np.int64), j.astype(np.int64))


def far_from_every_category(features: np.ndarray, labels: np.ndarray, num_classes: int,
                            config: SuspectsConfig = SuspectsConfig()) -> np.ndarray:
    """The "far from every category" signal (0..1) of each row of unit-length `features`: the distance to the nearest
    class centroid in robust z-units over all images, ramped over `config.global_outlier_z`; zeros for fewer than 2
    classes or 3 images."""
    if num_classes < 2 or len(features) < 3:
        return np.zeros(len(features))
    centroids = np.stack([features[labels == k].mean(0) for k in range(num_classes)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-12)
    nearest = 1 - (features @ centroids.T).max(1)
    median = np.median(nearest)
    mad = 1.4826 * np.median(np.abs(nearest - median)) or 1e-6
    lo, hi = config.global_outlier_z
    return np.clip(((nearest - median) / mad - lo) / (hi - lo), 0, 1)


def _percent(share: float) -> str:
    """A probability or similarity as a reviewer reads it: 0.914 -> "91 %"."""
    return f"{100 * float(share):.0f} %"


def _embedding_twins(readable: list[ImageRecord], features: np.ndarray,
                     similarity: float) -> tuple[dict[int, tuple[int, float]], np.ndarray]:
    """Near-duplicates by embedding: {index of the one to suspect: (index of its twin, cosine)}, the smaller/newer of
    each pair suspected; and a group label per image, so that a pair always shares a probe fold."""
    n = len(readable)
    pair_i, pair_j, pair_sim = near_duplicate_pairs(features, similarity)
    twin: dict[int, tuple[int, float]] = {}
    for a, b, sim in zip(pair_i.tolist(), pair_j.tolist(), pair_sim.tolist()):
        keep, drop = sorted((a, b), key=lambda k: (-readable[k].pixels, readable[k].created_at, readable[k].id))
        if drop not in twin or twin[drop][1] < sim:
            twin[drop] = (keep, sim)
    groups = _group_of(n, pair_i, pair_j) if n else np.zeros(0, np.int64)
    return twin, groups


def far_from_class(features: np.ndarray, labels: np.ndarray, num_classes: int,
                   config: SuspectsConfig = SuspectsConfig()) -> np.ndarray:
    """The "far from its class" signal (0..1): the distance to the class centroid in robust z-units of that class,
    ramped over `config.outlier_z`; zero in classes of fewer than 3 images."""
    signal = np.zeros(len(features))
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        if len(members) < 3:
            continue
        centroid = features[members].mean(0)
        centroid /= np.linalg.norm(centroid) or 1.0
        distance = 1 - features[members] @ centroid
        median = np.median(distance)
        mad = 1.4826 * np.median(np.abs(distance - median)) or 1e-6
        z = (distance - median) / mad
        lo, hi = config.outlier_z
        signal[members] = np.clip((z - lo) / (hi - lo), 0, 1)
    return signal


def _score(record: ImageRecord, signals: list[tuple[float, str]], flags: tuple[str, ...],
           twin: tuple[float, str] | None, suggested: str | None, given: float | None) -> Suspect:
    """One image's Suspect from its signals (strength, reason), its quality flags' and its twin's: their noisy-OR, and
    the two strongest as the reason."""
    for flag in flags:
        if flag in SET_BY_SUSPECTS:
            continue  # its signal is the distance itself, already counted
        signals.append((QUALITY_WEIGHTS.get(flag, 0.0), flag.replace("_", " ")))
    if twin is not None:
        signals.append(twin)
    score = 1 - float(np.prod([1 - s for s, _ in signals]))
    signals.sort(key=lambda s: -s[0])
    shown = [text for s, text in signals[:2] if s >= 0.3] or [signals[0][1]]
    shown.sort(key=lambda text: not text.startswith("looks more like"))  # the actionable reason first
    return Suspect(record.id, score, record.category, suggested, ", ".join(shown), record.source_url or record.path,
                   None if given is None else round(float(given), 4), is_held(record.status, flags))


def find_suspects(ws: Workspace, config: SuspectsConfig = SuspectsConfig(), progress: bool = False) -> SuspectsReport:
    """Score every pending/accepted image, store the scores in the manifest, return them most suspicious first."""
    records = ws.list_images(status=SCORED_STATUSES)
    if not records:
        ws.set_suspicion({})
        return SuspectsReport((), 0, 0, None)
    vectors, unreadable, embedded = embed_records(ws, records, config.model, config.batch_size, progress)
    readable = [r for r in records if r.id in vectors]
    n = len(readable)
    categories = sorted({r.category for r in readable})
    class_index = {name: k for k, name in enumerate(categories)}
    labels = np.array([class_index[r.category] for r in readable], dtype=np.int64)
    features = np.stack([vectors[r.id] for r in readable]) if n else np.zeros((0, 1), np.float32)
    twin, groups = _embedding_twins(readable, features, config.near_duplicate_similarity)
    probabilities = given = probe_accuracy = None
    if len(categories) >= 2:
        probabilities = probe_probabilities(features, labels, len(categories), groups, config.folds, config.probe_c,
                                            config.seed)
    if probabilities is not None:
        given = probabilities[np.arange(n), labels]
        probe_accuracy = float((probabilities.argmax(1) == labels).mean())
    s_far = far_from_class(features, labels, len(categories), config)
    s_away = far_from_every_category(features, labels, len(categories), config)

    results: dict[int, Suspect] = {}
    new_flags: dict[int, tuple[str, ...]] = {}  # image id → its flags, where off_topic came or went
    for idx, r in enumerate(readable):
        signals = []  # (strength, reason)
        suggested = None
        if s_away[idx] >= 0.5:  # off-topic: it needs rejecting, not another label; its label's probability says nothing more
            signals.append((config.off_topic_weight * s_away[idx], "far from every category"))
        else:
            if probabilities is not None:
                top = int(probabilities[idx].argmax())
                if top != labels[idx]:
                    suggested = categories[top]
                    signals.append((1 - given[idx], f"looks more like {suggested} ({_percent(probabilities[idx, top])})"))
                else:
                    signals.append((1 - given[idx], f"unsure of its label ({_percent(given[idx])} for it)"))
            # far from every category implies far from its own: say only the stronger statement
            signals.append((s_away[idx], "far from every category") if s_away[idx] >= 0.3 else (s_far[idx], "far from its class"))
        flags = [f for f in r.flags if f not in SET_BY_SUSPECTS] + (["off_topic"] if s_away[idx] >= config.off_topic_at else [])
        flags = tuple(f for f in FLAGS if f in flags)
        if flags != r.flags:
            new_flags[r.id] = flags
        twin_signal = None
        if idx in twin:
            keep, sim = twin[idx]
            twin_signal = (0.9, f"near-duplicate of #{readable[keep].id} ({_percent(sim)} similar)")
        results[r.id] = _score(r, signals, flags, twin_signal, suggested, None if given is None else given[idx])
    for r in records:
        if r.id in unreadable:
            results[r.id] = Suspect(r.id, 1.0, r.category, None, "unreadable", r.source_url or r.path, None,
                                    is_held(r.status, r.flags))
    ordered = tuple(sorted(results.values(), key=lambda s: (s.held, -s.score, s.image_id)))
    with ws.transaction():  # the flags and the scores land together
        for image_id, flags in new_flags.items():
            ws.set_flags(image_id, flags)
        ws.set_suspicion({s.image_id: (s.score, s.suggested_label, s.reason) for s in ordered})
    return SuspectsReport(ordered, embedded, len(records) - embedded - len(unreadable), probe_accuracy)

