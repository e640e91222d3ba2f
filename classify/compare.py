"""Compare: train several backbones, or several values of one option, on the same data and tabulate them."""
from __future__ import annotations

import csv
import time
from dataclasses import fields, replace
from pathlib import Path

from classify import ClassifyError
from classify.train import RunConfig, check_out, config_from_args, train

DEFAULT_OUT = "runs/compare"  # the runs, compare.csv and compare.png

HEADER = ("run", "accuracy", "top5")  # how compare.csv starts


def plan_runs(base: RunConfig, models: str | None, sweep: str | None) -> list[tuple[str, RunConfig]]:
    """(name, config) per run: one per model in `models`, or one per value in `sweep` ("aug=0,0.5,1")."""
    if models and sweep:
        raise ClassifyError("give --models or --sweep, not both")
    if models:
        names = [name.strip() for name in models.split(",") if name.strip()]
        if not names:
            raise ClassifyError(f"--models {models!r} names no backbone; give --models A,B,C")
        return [(name, replace(base, model=name)) for name in names]
    if sweep:
        option, _, values = sweep.partition("=")
        option = option.strip().replace("-", "_")
        known = {f.name: f for f in fields(RunConfig)}
        if option not in known or not values:
            raise ClassifyError(f"--sweep takes OPTION=V1,V2,... with a training option, not {sweep!r}")
        kind = type(known[option].default)
        runs = []
        for value in values.split(","):
            try:
                typed = kind(value)
            except ValueError:
                raise ClassifyError(f"--sweep value {value!r} is not a valid {option}") from None
            runs.append((f"{option}={value}", replace(base, **{option: typed})))
        return runs
    raise ClassifyError("give --models A,B,C or --sweep OPTION=V1,V2")


def compare(values: dict, models: str | None = None, sweep: str | None = None, out: str = DEFAULT_OUT,
            progress: bool = False) -> list[dict]:
    """Train each planned run into out/<name>; write out/compare.csv and out/compare.png; return the rows."""
    base = config_from_args(values)
    out = Path(out)
    runs = [("".join(c if c.isalnum() or c in "-_.=" else "_" for c in name), name, config)
            for name, config in plan_runs(base, models, sweep)]
    _check_compare_out(out, [safe for safe, _, _ in runs])
    rows = []
    for safe, name, config in runs:
        started = time.time()
        result = train(replace(config, out=str(out / safe)), progress=progress)
        m = result.metrics
        rows.append({"run": name, "accuracy": m["accuracy"], "top5": m["top5"],
                     "average_position": m["average_position"], "macro_f1": m["macro_f1"],
                     "seconds": round(time.time() - started, 1), "run_dir": str(out / safe)})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(out / "compare.png", rows)
    return rows


def _check_compare_out(out: Path, names: list[str]) -> None:
    """Before any training: refuse to write compare.csv/.png or a run over files compare and train did not write."""
    if out.exists() and not out.is_dir():
        raise ClassifyError(f"--compare-out {out} is a file; give a folder")
    try:
        ours = (out / "compare.csv").read_text(encoding="utf-8").startswith(",".join(HEADER))
    except (OSError, UnicodeDecodeError):
        ours = False
    for name in ("compare.csv", "compare.png"):
        if (out / name).exists() and not ours:
            raise ClassifyError(f"{out / name} was not written by classify compare; pick another --compare-out or "
                                f"move it away")
    for name in names:
        check_out(out / name)


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(max(4, 1.3 * len(rows) + 2), 3.5))
    names = [row["run"] for row in rows]
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], [row["accuracy"] for row in rows], width=0.4, label="accuracy")
    axis.bar([p + 0.2 for p in positions], [row["top5"] for row in rows], width=0.4, label="top-5")
    axis.set_xticks(list(positions), names, rotation=20)
    axis.set(ylim=(0, 1), title="valid scores")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
