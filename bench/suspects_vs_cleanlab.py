"""Claim: `curate suspects` ranks injected label flips and off-topic images at least as well as cleanlab does.

Data: bench/curation.py's folds and noise (its split_folds and make_noisy: 8 % label flips, 2 % byte and 4 % near
duplicates, 6 % off-topic images in each fold's 880 training images). Per fold, as curation.py's prepare() does:
`import`, `dedup` (by hash), `suspects` in a workspace; the ranked images (the byte duplicates dedup caught are not) are the
queue. Every ranking below orders those same images:
  - platekit queue: `curate suspects`' order as shipped (held-back images, e.g. flagged off_topic, last);
  - platekit score: the same scores without moving held-back images last;
  - cleanlab label quality: `cleanlab.rank.get_label_quality_scores` (self_confidence, its default) ascending, on the
    very out-of-fold probe probabilities `suspects` computes (probe_probabilities on the stored embeddings: same
    embeddings, folds, groups and seed, so the same numbers);
  - cleanlab find_label_issues: `cleanlab.filter.find_label_issues(..., return_indices_ranked_by="self_confidence")`
    first, the other images after them by label quality;
  - cleanlab OutOfDistribution: `cleanlab.outlier.OutOfDistribution().fit_score(features=embeddings)` ascending (the
    embeddings `suspects` uses: lite2, the mean of the photo's and its mirror's, curate.embeddings);
  - cleanlab combined: the minimum of label quality and OOD score, ascending (one queue for both kinds).
Reported, summed over the folds: label flips and off-topic images in the top 5 / 10 / 20 % of each queue, and the
precision there (any injected image counts). Embeddings are computed once per image content for all folds (a cache in
--work keyed on sha256, fed into each fold's workspace), as `suspects` would find them cached.

  python bench/suspects_vs_cleanlab.py --folds 5       # appends to bench/RESULTS.md
  python bench/suspects_vs_cleanlab.py --folds 5 --use 2 --no-record --work /tmp/w
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from curation import keep_embeddings, make_noisy, reuse_embeddings, split_folds  # noqa: E402
from record import FOOD_DEV, append, machine, table  # noqa: E402

BUDGETS = (5, 10, 20)


def score_fold(work: Path, fold_root: Path, noise_seed: int, cache: dict[str, bytes]) -> dict:
    """Rankings of one fold's queue: name → list of (kind) in queue order; the kinds of injected images."""
    from curate.dedup import dedup
    from curate.importer import import_images
    from curate.suspects import SuspectsConfig, _group_of, find_suspects, near_duplicate_pairs, probe_probabilities
    from curate.workspace import Workspace

    config = SuspectsConfig()
    truth = make_noisy(fold_root / "train", work / "noisy", noise_seed)
    with Workspace(work / "ws") as ws:
        import_images(ws, str(work / "noisy"))
        dedup(ws, by="hash")  # as curation.py's prepare() does
        reuse_embeddings(ws, cache, config.model)
        started = time.time()
        report = find_suspects(ws, config)
        suspects_s = time.time() - started
        keep_embeddings(ws, cache, config.model)
        stored = ws.embeddings(config.model)
        records = {r.id: r for r in ws.list_images()}
    ids = [s.image_id for s in report.suspects if s.image_id in stored]
    kinds = np.array([truth[records[i].sha256].kind for i in ids])
    # The probe's inputs exactly as find_suspects builds them (readable images, sorted categories, twin groups).
    features = np.stack([np.frombuffer(stored[i][1], dtype=np.float32) for i in ids])
    categories = sorted({records[i].category for i in ids})
    labels = np.array([categories.index(records[i].category) for i in ids])
    order = sorted(range(len(ids)), key=lambda k: ids[k])  # find_suspects' readable order: list_images, by id
    pair_i, pair_j, _ = near_duplicate_pairs(features[order], config.near_duplicate_similarity)
    groups = np.empty(len(ids), np.int64)
    groups[order] = _group_of(len(ids), pair_i, pair_j)
    probabilities = np.empty((len(ids), len(categories)))
    probabilities[order] = probe_probabilities(features[order], labels[order], len(categories), groups[order],
                                               config.folds, config.probe_c, config.seed)
    return {"kinds": kinds.tolist(), "rankings": rankings(report, ids, labels, probabilities, features),
            "suspects_s": suspects_s}


def rankings(report, ids, labels, probabilities, features) -> dict[str, list[int]]:
    """Each method's queue, as positions into `ids` (most suspect first)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    score = {s.image_id: s.score for s in report.suspects}
    quality = get_label_quality_scores(labels, probabilities)
    issues = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    flagged = set(issues.tolist())
    ood = OutOfDistribution().fit_score(features=features.astype(np.float32))
    by = lambda values: np.argsort(values, kind="stable").tolist()  # noqa: E731
    return {
        "platekit queue (as shipped)": list(range(len(ids))),
        "platekit score (held not last)": by([-score[i] for i in ids]),
        "cleanlab get_label_quality_scores": by(quality),
        "cleanlab find_label_issues, then quality": issues.tolist() + [k for k in by(quality) if k not in flagged],
        "cleanlab OutOfDistribution": by(ood),
        "cleanlab min(label quality, OOD)": by(np.minimum(quality, ood)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5, help="stratified folds of food-dev train+valid (curation.py's)")
    parser.add_argument("--use", type=int, default=0, help="score only the first N folds (0: all)")
    parser.add_argument("--noise-seed", type=int, default=0, help="fold f gets noise seed + f, as in curation.py")
    parser.add_argument("--work", help="work folder kept between runs (default: a temporary one)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    if not (FOOD_DEV / "train").is_dir():
        print(f"bench: food-dev not found at {FOOD_DEV} (set PLATEKIT_FOOD_DEV)", file=sys.stderr)
        return 2
    import cleanlab

    machine_line = machine()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="suspects-cleanlab-"))
    if not (work / "folds").exists():
        split_folds(FOOD_DEV, work / "folds-tmp", args.folds, args.noise_seed)
        (work / "folds-tmp").rename(work / "folds")
    cache: dict[str, bytes] = {}
    scored = []
    for f in range(args.use or args.folds):
        saved = work / f"fold{f}.json"
        if saved.exists():
            scored.append(json.loads(saved.read_text()))
            continue
        fold_work = work / f"fold{f}"
        fold_work.mkdir(parents=True, exist_ok=True)
        result = score_fold(fold_work, work / "folds" / f"fold{f}", args.noise_seed + f, cache)
        saved.write_text(json.dumps(result))
        scored.append(result)
        print(f"fold {f}: {len(result['kinds'])} ranked, suspects {result['suspects_s']:.0f} s", flush=True)
    rows = []
    for method in scored[0]["rankings"]:
        found = {b: {"flip": 0, "off_topic": 0, "noise": 0, "k": 0} for b in BUDGETS}
        for result in scored:
            kinds = np.array(result["kinds"])[result["rankings"][method]]
            for b in BUDGETS:
                top = kinds[:round(b / 100 * len(kinds))]
                found[b]["flip"] += int((top == "flip").sum())
                found[b]["off_topic"] += int((top == "off_topic").sum())
                found[b]["noise"] += int((top != "clean").sum())
                found[b]["k"] += len(top)
        rows.append([method, *(f"{found[b]['flip']} / {found[b]['off_topic']} / {found[b]['noise'] / found[b]['k']:.2f}"
                               for b in BUDGETS)])
    totals = {kind: sum(int((np.array(r["kinds"]) == kind).sum()) for r in scored) for kind in ("flip", "off_topic",
                                                                                                 "near_duplicate")}
    n = sum(len(r["kinds"]) for r in scored)
    body = table(["ranking", *(f"top {b} %: flips / off-topic / precision" for b in BUDGETS)], rows)
    notes = (f"{len(scored)} of bench/curation.py's {args.folds} folds (noise seeds {args.noise_seed}.."
             f"{args.noise_seed + len(scored) - 1}): {n} images ranked, of them {totals['flip']} label flips, "
             f"{totals['off_topic']} off-topic, {totals['near_duplicate']} near duplicates; precision counts any "
             f"injected image. Same lite2 embeddings and out-of-fold probe probabilities for every ranking; "
             f"cleanlab {cleanlab.__version__}, defaults.")
    print(body)
    print(notes)
    if not args.no_record:
        append("suspects_vs_cleanlab.py", f"{body}\n\n{notes}\n", machine_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
