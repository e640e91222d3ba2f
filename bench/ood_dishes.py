"""Question (issue 18, what to tell a user of `classify train --not-on-menu`): does supplying photos of *more* other
dishes take the share of never-seen dishes rejected past 50 %, and how many dishes does it take?

bench/ood_exposure_dose.py varied the number of photos of one other dish (10 to 110); with 10 classes in food-dev a
7-class menu leaves only 3 other dishes, so this protocol makes the menu smaller to have more of them:
  5 classes on the menu (4 menus: classes 0-4, 5-9, the even and the odd ones), the other 5 are not on it;
  each of those 5 in turn is the unseen dish (its 150 food-dev-extra photos), and k = 0..4 of the other 4 are
  supplied as --not-on-menu (their food-dev train + valid photos, 110 each; for 1 <= k <= 3, the k dishes of a seeded
  draw), so every k is measured on 20 (menu, unseen dish) pairs;
  in-menu kept: food-dev-extra's photos of the menu's 5 classes; non-food rejected: all of nonfood-dev.
The rule for k >= 1 is rebuilt from the arrays as `classify train --not-on-menu` builds it
(ood_exposure_dose.served_rule, each menu's own trained 5-class bundle for the max-logit part); k = 0 is the bundle's
own rule as served (Predictor.menu_scores and its threshold). Thresholds keep 95 % of the menu's food-dev valid.

  --menu-size 3: 3 classes on the menu (4 menus: 0-2, 3-5, 6-8, 7-9), 7 other dishes, k = 0..6 supplied, 28 pairs
  for each k: the curve further out, on a smaller menu.

  python bench/ood_dishes.py [--menu-size 5|3] [--work /tmp/platekit-ood-exposure] [--no-record]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ood import head_logits, subset_folder  # noqa: E402
from ood_exposure import features, of, share_cells, shares, work_parser  # noqa: E402
from ood_exposure_dose import served_rule  # noqa: E402
from record import FOOD_DEV, append, machine, table  # noqa: E402

MENUS = {5: ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9), (0, 2, 4, 6, 8), (1, 3, 5, 7, 9)),
         3: ((0, 1, 2), (3, 4, 5), (6, 7, 8), (7, 8, 9))}


def menu_bundle(work: Path, classes: list[str], menu: tuple):
    """`classify train` (no flags) on food-dev's train/valid of the menu's classes, kept in work/runs."""
    import classify
    from classify.train import RunConfig, train

    tag = "-".join(map(str, menu))
    out = work / "runs" / f"menu-{tag}"
    if not (out / "metrics.json").is_file():
        data = subset_folder(work, FOOD_DEV, [classes[c] for c in menu], f"menu-data-{tag}")
        train(RunConfig(data=str(data), out=str(out), feature_cache=str(work / "cache")))
    return classify.load(out, runtime="onnx")


def plain_rule(p):
    """The bundle's own rule as served, nothing supplied: (score function, threshold)."""
    return (lambda x: p.menu_scores(x, head_logits(p, x))), p.bundle.menu_threshold


def runs_of(f: dict, work: Path, classes: list[str], rng, size: int = 5) -> dict[int, list]:
    """{k: [(unseen rejected, in-menu kept, non-food rejected), ...]} over every menu of `size` classes and unseen
    dish, k = 0 to all the other dishes but the unseen one supplied."""
    supplied_counts = range(len(classes) - size)
    runs: dict[int, list] = {k: [] for k in supplied_counts}
    for menu in MENUS[size]:
        p = menu_bundle(work, classes, menu)
        order = [classes.index(c) for c in p.classes]
        others = [c for c in range(len(classes)) if c not in menu]
        in_x = of(f, "extra", order)
        for unseen in others:
            rest = [c for c in others if c != unseen]
            unseen_x = of(f, "extra", [unseen])
            for k in supplied_counts:
                if k == 0:
                    score, threshold = plain_rule(p)
                else:
                    dishes = sorted(rng.choice(rest, size=k, replace=False).tolist())
                    supplied = np.concatenate([of(f, split, dishes) for split in ("train", "valid")])
                    score, threshold = served_rule(p, f, order, supplied)
                runs[k].append(shares(score, threshold, unseen_x, in_x, f["nonfood"][0]))
    return runs


def main() -> None:
    parser = work_parser(__doc__)
    parser.add_argument("--menu-size", type=int, choices=sorted(MENUS), default=5)
    args = parser.parse_args()
    machine_line, started, work = machine(), time.time(), Path(args.work)
    f = features(work / "run", work)
    classes = sorted(path.name for path in (FOOD_DEV / "train").iterdir() if path.is_dir())
    runs = runs_of(f, work, classes, np.random.default_rng(0), args.menu_size)
    rows = []
    for k, values in runs.items():
        cells = share_cells(values)
        rows.append([f"{k} other dish{'es' if k != 1 else ''}" + (f" ({110 * k} photos)" if k else ", nothing supplied"),
                     cells[0], f"{100 * np.median([v[0] for v in values]):.1f} %", *cells[1:]])
    size, pairs, others = args.menu_size, len(runs[0]), len(classes) - args.menu_size
    body = table(["--not-on-menu", f"unseen dish rejected (mean of {pairs}, range)", "median", "in-menu extra kept",
                  "non-food rejected"], rows)
    body += (f"\n\n{size} classes on the menu ({len(MENUS[size])} menus), 1 of the other {others} unseen in turn, k of "
             f"the other {others - 1} supplied; thresholds keep 95 % of food-dev valid of the {size}. Features: the CPU "
             f"default's three frozen backbones. Wall {time.time() - started:.0f} s.")
    print(body)
    if not args.no_record:
        append(f"ood_dishes.py --menu-size {args.menu_size}: photos of how many other dishes `--not-on-menu` needs",
               body, machine_line)


if __name__ == "__main__":
    main()
