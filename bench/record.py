"""Shared by the bench scripts: describe the machine and append a dated section to bench/RESULTS.md."""
from __future__ import annotations

import os
import platform
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
FOOD_DEV = Path(os.environ.get("PLATEKIT_FOOD_DEV", Path(__file__).resolve().parents[2] / "shared" / "data" / "food-dev"))


LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
MODELS = LITE + ("+".join(LITE),)  # and the CPU default: all three side by side


def head_only_bundle(data: str | Path, out: Path, model: str) -> Path:
    """A 1-epoch head-only bundle: enough for latency, which the head's weights do not change."""
    from classify.train import RunConfig, train
    train(RunConfig(data=str(data), out=str(out), model=model, freeze="all", epochs=1, views=1))
    return out


def machine() -> str:
    import torch
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} CPUs ({cpu}){gpu}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def append(title: str, body: str, machine_line: str | None = None) -> None:
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n")
    with RESULTS.open("a") as f:
        f.write(f"\n### {title}, {date.today()}\n\n{machine_line or machine()}\n\n{body}\n")
