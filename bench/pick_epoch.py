"""Claim: for the CPU default (head only on frozen features, the whole 25-epoch cosine schedule), keeping the last
epoch scores higher on food-dev-extra, and varies less from seed to seed, than keeping the epoch of the highest
accuracy on food-dev's 220 valid photos. Also: the same three backbones at 224 px instead of 260 px (0.74 of the
pixels, for the demo's and predict's speed).

Each row is cpu_default.py's candidate run (the real `classify train` CLI on food-dev, then scored on the 1,500
photos of food-dev-extra and the 468 of nonfood-dev with `classify evaluate`'s functions) with `--seed` and
`--pick-epoch`; one seed's two picks share the same cached views, so the second costs a retrain of seconds.
  python bench/pick_epoch.py [--work /tmp/platekit-cpu-default] [--seeds 0 1 2 3 4] [--sizes 260 224]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cpu_default import RUN_COLUMNS, TRIO, run, work_folder  # noqa: E402
from record import append, machine, table  # noqa: E402

PICKS = ("best", "last")
EXTRA_COLUMN, BOTH_COLUMN, KEPT_COLUMN = (1 + RUN_COLUMNS.index(name) for name in (  # in run's row, after its name
    "extra acc (1,500)", "both (1,720)", "extra kept on menu"))


def summary(rows: dict, sizes: list[str]) -> list[list]:
    """Per size and pick: the mean and standard deviation over seeds of extra, both and extra kept on the menu."""
    lines = []
    for size in sizes:
        for pick in PICKS:
            runs = rows[size, pick]
            cells = [f"{size} px, {pick}", str(len(runs))]
            for column in (EXTRA_COLUMN, BOTH_COLUMN, KEPT_COLUMN):
                values = np.array([float(row[column]) for row in runs])
                cells.append(f"{values.mean():.3f} (sd {values.std(ddof=1) if len(values) > 1 else 0:.3f})")
            cells.append(f"{min(float(row[EXTRA_COLUMN]) for row in runs):.3f}")
            lines.append(cells)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/platekit-cpu-default")
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2", "3", "4"])
    parser.add_argument("--sizes", nargs="+", default=["260", "224"])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    work = work_folder(args.work)
    machine_line = machine()
    rows, every = {}, []
    for size in args.sizes:
        for seed in args.seeds:
            for pick in PICKS:
                row = run(f"{size} px, seed {seed}, {pick}", TRIO,
                          ["--head", "mlp", "--image-size", size, "--seed", seed, "--pick-epoch", pick], work)
                rows.setdefault((size, pick), []).append(row)
                every.append(row)
    header = ["candidate (lite0+lite1+lite2, mlp head, 4 cached views, 25 epochs)", *RUN_COLUMNS]
    means = table(["size, epoch kept", "seeds", "extra acc, mean", "both, mean", "extra kept on menu, mean",
                   "extra acc, worst seed"], summary(rows, args.sizes))
    body = table(header, every) + "\n\n" + means
    print(body)
    if not args.no_record:
        append("pick_epoch.py: the epoch kept (best on valid or last) and the input size of the CPU default", body,
               machine_line)


if __name__ == "__main__":
    main()
