"""Off-topic images held back instead of reviewed first, tried on a finished `curation.py --repeats ...` work folder
made before `suspects` flagged them: for every fold, the images whose "far from every category" signal reaches CUT
(recomputed from the lite2 embeddings stored in the fold's workspace by curate.suspects.far_from_every_category) are left
pending, the simulated reviewer checks the first 10 % (of all images scored) of the suspicion order without them,
and with --train the arm is trained (classify train defaults, the work folder's feature cache) and its share of the
clean-vs-noisy gap reported next to the fold's own review-10 % arm. Exploratory: how the change in curate.suspects
was tuned (bench/RESULTS.md, "## curation").

  python bench/curation_offtopic.py --work /tmp/cur7 --repeats 1 2 3 4 5 6 --cut 0.9            # counts only, 2 min
  python bench/curation_offtopic.py --work /tmp/cur7 --repeats 1 2 3 4 5 6 --cut 0.9 --train --seeds 0 1 2   # 90 runs
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from curation import _review, injected_truth, train_arm  # noqa: E402

from curate.quality import BLOCKING_FLAGS  # noqa: E402
from curate.suspects import SuspectsConfig, far_from_every_category  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

KINDS = ("clean", "flip", "near_duplicate", "off_topic")
REVIEW10_ARM = 4  # runs/arm<k>: (a) clean 0, (b) noisy 1, (c) auto 2, review 5 % 3, review 10 % 4 ...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="the curation.py work folder")
    parser.add_argument("--repeats", type=int, nargs="+", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cut", type=float, default=SuspectsConfig.off_topic_at, help="signal from which an image is held")
    parser.add_argument("--budget", type=float, default=10, help="review budget, %% of the images scored")
    parser.add_argument("--train", action="store_true", help="train the arm and report the gap recovered")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    work = Path(args.work)
    flips_found, held_counts = [], []
    accuracy = {"(a) clean": [], "(b) noisy": [], "(d) review 10 %": [], "held back": []}
    for r in args.repeats:
        base = work if r == 0 else work / f"repeat{r}"
        for f in range(args.folds):
            fold_work = base / f"fold{f}"
            truth = injected_truth(base / "folds" / f"fold{f}" / "train", r * args.folds + f)
            with Workspace(fold_work / "ws-base") as ws:
                scored = sorted((x for x in ws.list_images() if x.suspicion is not None), key=lambda x: (-x.suspicion, x.id))
                stored = ws.embeddings(SuspectsConfig.model)
            features = np.stack([np.frombuffer(stored[x.id][1], dtype=np.float32) for x in scored])
            categories = sorted({x.category for x in scored})
            labels = np.array([categories.index(x.category) for x in scored])
            held = far_from_every_category(features, labels, len(categories)) >= args.cut
            queue = [x for x, h in zip(scored, held) if not h][:round(args.budget / 100 * len(scored))]
            held_ids = {x.id for x, h in zip(scored, held) if h}
            kind = lambda x: truth[x.sha256].kind  # noqa: E731
            flips_found.append(sum(kind(x) == "flip" for x in queue))
            held_counts.append({k: sum(kind(x) == k for x, h in zip(scored, held) if h) for k in KINDS})
            line = f"repeat {r} fold {f}: flips in the queue {flips_found[-1]}, held {held_counts[-1]}"
            if args.train:
                root = work / "offtopic" / f"repeat{r}-fold{f}-cut{args.cut}"
                if not (root / "data").exists():
                    shutil.rmtree(root, ignore_errors=True)
                    (root / "ws").mkdir(parents=True)
                    shutil.copyfile(fold_work / "ws-base" / "manifest.sqlite", root / "ws" / "manifest.sqlite")
                    (root / "ws" / "images").symlink_to(fold_work / "ws-base" / "images")
                    with Workspace(root / "ws") as ws:
                        _review(ws, truth, [x.id for x in queue])
                        for x in ws.list_images(status="pending"):  # accept, with the held images left pending
                            if x.id not in held_ids and not set(x.flags) & set(BLOCKING_FLAGS):
                                ws.set_status(x.id, "accepted")
                        accepted = ws.list_images(status="accepted")
                    for x in accepted:
                        dest = root / "data" / "train" / x.category / f"{x.id}{Path(x.path).suffix}"
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.symlink_to((root / "ws" / x.path).resolve())
                    (root / "data" / "valid").symlink_to((fold_work / "data-arm0" / "valid").resolve())
                for seed in args.seeds:
                    run = root / f"run-seed{seed}"
                    if not (run / "metrics.json").exists():
                        train_arm(root / "data", run, seed, feature_cache=str(work / "feature-cache"))
                    accuracy["held back"].append(json.loads((run / "metrics.json").read_text())["accuracy"])
                    for arm, k in (("(a) clean", 0), ("(b) noisy", 1), ("(d) review 10 %", REVIEW10_ARM)):
                        metrics = json.loads((fold_work / "runs" / f"arm{k}-seed{seed}" / "metrics.json").read_text())
                        accuracy[arm].append(metrics["accuracy"])
                line += f", accuracy {accuracy['held back'][-1]:.4f}"
            print(line, flush=True)
    print(f"flips in the queue's top {args.budget:g} %, a fold: {np.mean(flips_found):.1f}; held back a fold: "
          + ", ".join(f"{k} {np.mean([h[k] for h in held_counts]):.1f}" for k in KINDS))
    if args.train:
        a, b = np.array(accuracy["(a) clean"]), np.array(accuracy["(b) noisy"])
        picks = np.random.default_rng(0).integers(0, len(a), size=(2000, len(a)))
        gap = a[picks].mean(1) - b[picks].mean(1)
        for arm in ("(d) review 10 %", "held back"):
            d = np.array(accuracy[arm])
            share = (d[picks].mean(1) - b[picks].mean(1)) / gap
            print(f"{arm}: {d.mean():.4f}, gap recovered {(d.mean() - b.mean()) / (a.mean() - b.mean()):.0%} "
                  f"({np.percentile(share, 5):.0%} to {np.percentile(share, 95):.0%}); {len(a)} paired runs")


if __name__ == "__main__":
    main()
