"""Question (issue 18, what to tell a user of `classify train --not-on-menu`): how many photos of another dish does
it take, and do non-food photos mixed in help or hurt?

Same protocol as bench/ood_exposure.py (its cached features and its three 7-class bundles, --work): 7 classes on the
menu, 1 of the other 3 supplied, 2 unseen, 9 rotations; in-menu kept on food-dev-extra of the 7. The bundle's rule
with supplied photos is rebuilt here from the arrays as `classify train` builds it (classify.menu.fit_exposure,
fit_rule with the classifier's valid scores, the kNN part against the training photos for the threshold and against
train + valid when served), so each supplied set costs no training run; the 110-photo row is checked against the
bundles that bench/ood_exposure.py trained with --not-on-menu.
  supplied: 10, 30 or all 110 photos of the one dish (a seeded draw); the 110 plus nonfood-dev's even-numbered
  photos (234); those 234 alone. Non-food rejected is measured on the odd-numbered 234 in every row.
  python bench/ood_exposure_dose.py [--work /tmp/platekit-ood-exposure] [--no-record]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from classify import menu as M

sys.path.insert(0, str(Path(__file__).parent))
from ood_exposure import ROTATIONS, features, of, share_cells, shares, work_parser  # noqa: E402
from record import FOOD_DEV, append, machine, table  # noqa: E402

KEEP = 0.95
DOSES = (10, 30, 110)


def served_rule(p, f: dict, order: list[int], supplied: np.ndarray):
    """(score function, threshold) of bundle `p` had it been trained with `supplied` as --not-on-menu."""
    from ood import head_logits

    train_x, valid_x = of(f, "train", order), of(f, "valid", order)
    labels = np.array([order.index(y) for y in f["train"][1] if y in order])  # the bundle's class indices
    train_bank = M.normalized(train_x)
    served_bank = M.normalized(np.concatenate([train_x, valid_x]))
    exposure = M.fit_exposure(train_x, labels, supplied)
    valid_logits = head_logits(p, valid_x)
    _, threshold, mix = M.fit_rule(M.scores(train_bank, valid_x), valid_logits.max(1), KEEP,
                                   M.exposure_scores(exposure, valid_x))

    def score(x):
        rule = M.mixed(M.scores(served_bank, x), head_logits(p, x).max(1), mix)
        return M.exposed(rule, M.exposure_scores(exposure, x), mix)
    return score, threshold


def main() -> None:
    args = work_parser(__doc__).parse_args()
    import classify

    machine_line, started, work = machine(), time.time(), Path(args.work)
    f = features(work / "run", work)
    classes = sorted(path.name for path in (FOOD_DEV / "train").iterdir() if path.is_dir())
    nonfood = f["nonfood"][0]
    given_nonfood, held_nonfood = nonfood[0::2], nonfood[1::2]
    rng = np.random.default_rng(0)
    runs: dict[str, list] = {}
    for left_out in ROTATIONS:
        menu = [c for c in range(10) if c not in left_out]
        p = classify.load(work / "runs" / ("menu-" + "-".join(map(str, menu))), runtime="onnx")
        order = [classes.index(c) for c in p.classes]
        for one in left_out:
            unseen_x, in_x = of(f, "extra", [c for c in left_out if c != one]), of(f, "extra", order)
            dish = np.concatenate([of(f, split, [one]) for split in ("train", "valid")])
            sets = {f"{n} photos of one other dish": dish[np.sort(rng.permutation(len(dish))[:n])] for n in DOSES}
            sets["110 photos of one other dish + 234 non-food"] = np.concatenate([dish, given_nonfood])
            sets["234 non-food photos alone"] = given_nonfood
            for name, supplied in sets.items():
                score, threshold = served_rule(p, f, order, supplied)
                runs.setdefault(name, []).append(shares(score, threshold, unseen_x, in_x, held_nonfood))
    rows = []
    for name, values in runs.items():
        rows.append([name, *share_cells(values)])
    body = table(["--not-on-menu photos", "unseen dishes rejected (mean of 9, range)", "in-menu extra kept",
                  "non-food rejected (the other 234)"], rows)
    body += (f"\n\n7 classes on the menu, 1 other dish supplied, 2 unseen, 9 rotations; thresholds keep 95 % of "
             f"food-dev valid of the 7. Features: the CPU default's three frozen backbones (cached). Wall "
             f"{time.time() - started:.0f} s.")
    print(body)
    if not args.no_record:
        append("ood_exposure_dose.py: how many --not-on-menu photos, and non-food mixed in", body, machine_line)


if __name__ == "__main__":
    main()
