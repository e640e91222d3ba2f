"""What the 10 % review leaves behind, by kind: on a finished `curation.py --repeats ...` work folder, retrain the
review-10 % arm of every fold (training seed 0) with one kind of the injected noise it still holds also fixed (left-over
off-topic images removed; or near duplicates removed; or label flips put back), and report each variant's share of
the clean-vs-noisy gap next to the arm's own. Exploratory: which kind of noise the last part of the gap comes from.

  python bench/curation_leftover.py --work /tmp/cur7 --repeats 1 2 3 4 5 6   # 90 runs, about 8 min with the cache
Prints its table; nothing is appended to RESULTS.md (measured: see "## curation" there).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from curation import injected_truth, train_arm  # noqa: E402
from record import table  # noqa: E402

KINDS = ("off_topic", "near_duplicate", "flip")
REVIEW10_ARM = 4  # runs/arm<k>: (a) clean 0, (b) noisy 1, (c) auto 2, review 5 % 3, review 10 % 4 ...


def left_over(fold_work: Path, clean_train: Path, noise_seed: int) -> list[tuple[Path, str, str, str]]:
    """(file, its class folder, kind, true class) of every image the review-10 % arm trains on."""
    truth = injected_truth(clean_train, noise_seed)
    files = []
    for link in sorted(p for p in (fold_work / "data-arm2" / "train").rglob("*") if p.is_file()):
        t = truth[hashlib.sha256(link.read_bytes()).hexdigest()]
        category = link.parent.name
        kind = "clean" if t.kind == "clean" or (t.kind == "flip" and category == t.label) else t.kind
        files.append((link, category, kind, t.label))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="the curation.py work folder")
    parser.add_argument("--repeats", type=int, nargs="+", required=True)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    work = Path(args.work)
    accuracy = {k: [] for k in ("(a) clean", "(b) noisy", "(d) review 10 %", *KINDS)}
    counts = {k: [] for k in KINDS}
    for r in args.repeats:
        base = work if r == 0 else work / f"repeat{r}"
        for f in range(args.folds):
            fold_work = base / f"fold{f}"
            files = left_over(fold_work, base / "folds" / f"fold{f}" / "train", r * args.folds + f)
            for kind in KINDS:
                counts[kind].append(sum(k == kind for _, _, k, _ in files))
                root = work / "leftover" / f"repeat{r}-fold{f}-{kind}"
                if not (root / "run" / "metrics.json").exists():
                    for link, category, k, label in files:
                        if k == kind and kind != "flip":
                            continue
                        dest = root / "train" / (label if k == kind else category) / link.name
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        if not dest.is_symlink():
                            dest.symlink_to(link.resolve())
                    if not (root / "valid").is_symlink():
                        (root / "valid").symlink_to((fold_work / "data-arm2" / "valid").resolve())
                    train_arm(root, root / "run", 0, feature_cache=str(work / "feature-cache"))
                accuracy[kind].append(json.loads((root / "run" / "metrics.json").read_text())["accuracy"])
            for arm, k in (("(a) clean", 0), ("(b) noisy", 1), ("(d) review 10 %", REVIEW10_ARM)):
                metrics = json.loads((fold_work / "runs" / f"arm{k}-seed0" / "metrics.json").read_text())
                accuracy[arm].append(metrics["accuracy"])
            print(f"repeat {r} fold {f}: left {dict((k, counts[k][-1]) for k in KINDS)}", flush=True)
    a, b = np.array(accuracy["(a) clean"]), np.array(accuracy["(b) noisy"])
    picks = np.random.default_rng(0).integers(0, len(a), size=(2000, len(a)))
    gap = a[picks].mean(1) - b[picks].mean(1)
    rows = []
    for name in ("(d) review 10 %", *KINDS):
        d = np.array(accuracy[name])
        share = (d[picks].mean(1) - b[picks].mean(1)) / gap
        label = name if name.startswith("(") else {"off_topic": "... and its off-topic images removed",
                                                    "near_duplicate": "... and its near duplicates removed",
                                                    "flip": "... and its label flips put back"}[name]
        rows.append([label, f"{np.mean(counts[name]):.1f}" if name in counts else "-", f"{d.mean():.4f}",
                     f"{(d.mean() - b.mean()) / (a.mean() - b.mean()):.0%}",
                     "{:.0%} to {:.0%}".format(*np.percentile(share, [5, 95]))])
    print(table(["arm (training seed 0)", "images of that kind left a fold", "valid accuracy", "gap recovered",
                 "90 % interval (bootstrap)"], rows))
    print(f"{len(a)} paired runs; (a) {a.mean():.4f}, (b) {b.mean():.4f}, gap {a.mean() - b.mean():.4f}")


if __name__ == "__main__":
    main()
