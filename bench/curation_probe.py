"""Can a better probe find the label flips the 10 % review leaves? On a finished `curation.py --repeats ...` work
folder, score variants of the out-of-fold probe behind `curate suspects` on every fold's noisy set (what `suspects`
scored in the fold's base workspace), with the injected noise known. Exploratory: nothing is appended to RESULTS.md
(measured: see "## curation" there).

Figures, each the mean over the folds:
  - flip R-precision: among the flipped and the clean images, the share of flips among the n lowest probabilities of
    the given label, n = the number of flips (1.0: every flip below every clean image);
  - flips found in 95 reviews (about the 10 % budget) when the reviewer checks the lowest probabilities of the given
    label, in 1, 2 or 4 stages: after each stage the probe is refitted with the fixes (flips relabelled, off-topic
    images and near duplicates left out), as a review UI that re-scores as one goes would;
  - with --ranking: the injected noise, by kind, in the top 10 % of `find_suspects` itself under a few settings.
Every probe is fitted on the same 5 stratified folds (`suspects` itself also keeps near-duplicate pairs in one fold,
so its own figures differ slightly). Features: the lite2 embeddings `suspects` stored in the workspace, and the
lite0 features of the centre crop and 3 augmented views that `classify train` stored in the work folder's feature
cache (seed 0).

  python bench/curation_probe.py --work /tmp/cur7 --repeats 1 2 3 4 5 6 [--ranking]
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from curation import injected_truth  # noqa: E402
from record import table  # noqa: E402

from curate.suspects import SCORED_STATUSES, SuspectsConfig, find_suspects  # noqa: E402
from curate.workspace import Workspace  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def fold_data(base: Path, fold: int, noise_seed: int, cache: sqlite3.Connection) -> dict:
    """The scored images of one fold: labels, injected kind and true label, lite2 embeddings, lite0 views."""
    truth = injected_truth(base / "folds" / f"fold{fold}" / "train", noise_seed)
    with Workspace(base / f"fold{fold}" / "ws-base") as ws:
        embeddings = ws.embeddings(SuspectsConfig.model)
        records = [r for r in ws.list_images(status=SCORED_STATUSES) if r.id in embeddings]
    categories = sorted({r.category for r in records})
    keys = [int.from_bytes(bytes.fromhex(r.sha256)[:8], "little", signed=True) for r in records]
    settings = dict(cache.execute("SELECT fingerprint, id FROM settings"))
    views = []
    for suffix in (":centre", ":seed 0:aug 0.5:view 1", ":seed 0:aug 0.5:view 2", ":seed 0:aug 0.5:view 3"):
        setting = next(i for name, i in settings.items() if name.endswith(suffix))
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            found.update(cache.execute(f"SELECT key, data FROM features WHERE setting = ? AND key IN "
                                       f"({','.join('?' * len(chunk))})", (setting, *chunk)))
        views.append(np.stack([np.frombuffer(found[k], np.float16).astype(np.float32) for k in keys]))
    return {"sha256": [r.sha256 for r in records], "labels": np.array([categories.index(r.category) for r in records]),
            "kinds": np.array([truth[r.sha256].kind for r in records]),
            "true": np.array([categories.index(truth[r.sha256].label) if truth[r.sha256].label in categories else -1
                              for r in records]),
            "lite2": np.stack([np.frombuffer(embeddings[r.id][1], np.float32) for r in records]),
            "lite0": unit(np.stack(views))}


def splits(labels: np.ndarray):
    from sklearn.model_selection import StratifiedKFold
    return StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels)


def logistic(x: np.ndarray, labels: np.ndarray, c: float = 3.0, trusted: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold probabilities; x is N x D, or V x N x D (fitted on every view, probabilities averaged)."""
    from sklearn.linear_model import LogisticRegression
    p = np.zeros((len(labels), labels.max() + 1))
    for train, test in splits(labels):
        if trusted is not None:
            train = train[trusted[train]]
        if x.ndim == 3:
            model = LogisticRegression(C=c, max_iter=1000).fit(x[:, train].reshape(-1, x.shape[2]),
                                                               np.tile(labels[train], len(x)))
            p[test] = np.mean([model.predict_proba(v[test]) for v in x], 0)
        else:
            p[test] = LogisticRegression(C=c, max_iter=1000).fit(x[train], labels[train]).predict_proba(x[test])
    return p


def knn(x: np.ndarray, labels: np.ndarray, k: int = 15, temperature: float = 0.05) -> np.ndarray:
    p = np.zeros((len(labels), labels.max() + 1))
    for train, test in splits(labels):
        sims = x[test] @ x[train].T
        nearest = np.argsort(-sims, 1)[:, :k]
        weight = np.exp(np.take_along_axis(sims, nearest, 1) / temperature)
        for c in range(p.shape[1]):
            p[test, c] = (weight * (labels[train][nearest] == c)).sum(1)
    return p / p.sum(1, keepdims=True)


def pruned(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Prune and refit: the second probe is fitted only on the images the first one agreed with."""
    return logistic(x, labels, trusted=logistic(x, labels).argmax(1) == labels)


PROBES = {
    "lite2, C 3 (what suspects uses)": lambda d: logistic(d["lite2"], d["labels"]),
    "lite2, C 1": lambda d: logistic(d["lite2"], d["labels"], 1.0),
    "lite2, C 10": lambda d: logistic(d["lite2"], d["labels"], 10.0),
    "lite2, prune and refit": lambda d: pruned(d["lite2"], d["labels"]),
    "lite2, k-nearest neighbours (15)": lambda d: knn(d["lite2"], d["labels"]),
    "lite2, logistic + k-NN averaged": lambda d: (logistic(d["lite2"], d["labels"]) + knn(d["lite2"], d["labels"])) / 2,
    "lite0, centre crop": lambda d: logistic(d["lite0"][0], d["labels"]),
    "lite0, centre + 3 augmented views": lambda d: logistic(d["lite0"], d["labels"]),
    "lite2 + lite0 concatenated": lambda d: logistic(np.hstack([unit(d["lite2"]), d["lite0"][0]]) / 2 ** 0.5, d["labels"]),
}


def r_precision(p: np.ndarray, d: dict) -> float:
    given = p[np.arange(len(d["labels"])), d["labels"]]
    scored = np.isin(d["kinds"], ["flip", "clean"])
    flips = d["kinds"][scored] == "flip"
    return float(flips[np.argsort(given[scored])[:flips.sum()]].mean())


def staged_review(d: dict, budget: int, stages: int) -> int:
    """Flips found by a reviewer checking `budget` images, lowest given-label probability first, re-scored per stage."""
    labels, reviewed, kept, found = d["labels"].copy(), np.zeros(len(d["labels"]), bool), None, 0
    for stage in range(stages):
        p = logistic(d["lite2"], labels, trusted=kept)
        given = p[np.arange(len(labels)), labels]
        given[reviewed] = np.inf
        for i in np.argsort(given)[:budget // stages + (stage < budget % stages)]:
            reviewed[i] = True
            if d["kinds"][i] == "flip":
                found, labels[i] = found + 1, d["true"][i]
        kept = ~(reviewed & np.isin(d["kinds"], ["off_topic", "near_duplicate"]))
    return found


def ranking_counts(base: Path, fold: int, d: dict, config: SuspectsConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        shutil.copyfile(base / f"fold{fold}" / "ws-base" / "manifest.sqlite", root / "manifest.sqlite")
        (root / "images").symlink_to(base / f"fold{fold}" / "ws-base" / "images")
        with Workspace(root) as ws:
            ranking = [s.image_id for s in find_suspects(ws, config).suspects]
            kind = dict(zip(d["sha256"], d["kinds"]))
            kind_of = {r.id: kind.get(r.sha256, "unreadable") for r in ws.list_images(status=SCORED_STATUSES)}
    top = [kind_of.get(i, "unreadable") for i in ranking[:round(0.1 * len(ranking))]]
    return {kind: top.count(kind) for kind in ("flip", "near_duplicate", "off_topic", "clean")}


def main() -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="the curation.py work folder")
    parser.add_argument("--repeats", type=int, nargs="+", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--ranking", action="store_true", help="also count the noise in find_suspects' top 10 %%")
    args = parser.parse_args()
    work = Path(args.work)
    warnings.simplefilter("ignore")
    cache = sqlite3.connect(work / "feature-cache" / "features.sqlite")
    folds = []
    for r in args.repeats:
        base = work if r == 0 else work / f"repeat{r}"
        folds += [(base, f, fold_data(base, f, r * args.folds + f, cache)) for f in range(args.folds)]
    print(f"{len(folds)} folds; flips a fold {np.mean([(d['kinds'] == 'flip').sum() for *_, d in folds]):.1f}", flush=True)
    with threadpool_limits(1):
        rows = [[name, f"{np.mean([r_precision(probe(d), d) for *_, d in folds]):.3f}"] for name, probe in PROBES.items()]
        print(table(["probe (out of fold, 5 folds)", "flip R-precision"], rows), flush=True)
        rows = [[stages, f"{np.mean([staged_review(d, 95, stages) for *_, d in folds]):.1f}"] for stages in (1, 2, 4)]
        print(table(["review stages, probe refitted between", "flips found in 95 reviews"], rows), flush=True)
        if args.ranking:
            rows = []
            for name, config in (("defaults", SuspectsConfig()), ("probe C 10", SuspectsConfig(probe_c=10.0)),
                                 ("off-topic weight 0.6", SuspectsConfig(off_topic_weight=0.6))):
                counts = [ranking_counts(base, f, d, config) for base, f, d in folds]
                rows.append([name] + [f"{np.mean([c[k] for c in counts]):.1f}"
                                      for k in ("flip", "near_duplicate", "off_topic", "clean")])
            print(table(["find_suspects, top 10 %", "flips", "near duplicates", "off-topic", "clean"], rows))


if __name__ == "__main__":
    main()
