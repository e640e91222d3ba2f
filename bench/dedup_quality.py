"""Claim: curate's phash dedup matches imagededup's precision/recall on food-dev near-duplicates, much faster; picks the default threshold."""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from curate.dedup import find_groups, pairs_within
from curate.hashing import hash_files

FOOD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "food-dev"
TRANSFORMS = {
    "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2)),
    "jpeg q30": lambda im: im,  # saved at quality 30 below
    "crop 5%": lambda im: im.crop((im.width // 20, im.height // 20, im.width - im.width // 20, im.height - im.height // 20)),
    "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "flip": ImageOps.mirror,
    "watermark": lambda im: _watermark(im),
}


def _watermark(im: Image.Image) -> Image.Image:
    im = im.copy()
    draw = ImageDraw.Draw(im, "RGBA")
    draw.rectangle((0, im.height - 40, im.width, im.height), fill=(255, 255, 255, 110))
    draw.text((10, im.height - 30), "© platekit stock photos", fill=(0, 0, 0, 200))
    return im


def build_set(n_originals: int, n_distinct: int, root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Originals, one copy per transform (same group), plus distinct photos; returns (paths, group, kind)."""
    files = sorted(FOOD_DEV.rglob("*.jpg"))
    rng = np.random.default_rng(0)
    picks = rng.permutation(len(files))[: n_originals + n_distinct]
    paths, group, kind = [], [], []
    for g, k in enumerate(picks):
        image = Image.open(files[k]).convert("RGB")
        paths.append(files[k]); group.append(g); kind.append("original")
        if g >= n_originals:
            continue
        for name, fn in TRANSFORMS.items():
            out = root / f"{g}-{name.replace(' ', '_').replace('%', '')}.jpg"
            fn(image).save(out, "JPEG", quality=30 if name == "jpeg q30" else 90)
            paths.append(out); group.append(g); kind.append(name)
    return paths, group, kind


def score(pairs: set[tuple[int, int]], group: list[int], kind: list[str]) -> dict:
    truth = {(i, j) for i in range(len(group)) for j in range(i + 1, len(group)) if group[i] == group[j]}
    tp = len(pairs & truth)
    per_kind = {}
    for name in TRANSFORMS:  # recall of original <-> transformed copy
        want = {(i, j) for (i, j) in truth if kind[i] == "original" and kind[j] == name}
        per_kind[name] = len(want & pairs) / max(1, len(want))
    return {"precision": tp / max(1, len(pairs)), "recall": tp / max(1, len(truth)), "per_kind": per_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--originals", type=int, default=150)
    parser.add_argument("--distinct", type=int, default=600)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[4, 6, 8, 10, 12])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not FOOD_DEV.exists():
        raise SystemExit(f"{FOOD_DEV} not found")
    from imagededup.methods import PHash

    with tempfile.TemporaryDirectory() as tmp:
        paths, group, kind = build_set(args.originals, args.distinct, Path(tmp))
        rows = []
        t = time.perf_counter()
        hashes, ok = hash_files(paths, workers=2)
        ours_hash_s = time.perf_counter() - t
        # imagededup wants one folder or a path per call; encode each file (its own API)
        phasher = PHash(verbose=False)
        t = time.perf_counter()
        encodings = {str(k): phasher.encode_image(image_file=str(p)) for k, p in enumerate(paths)}
        theirs_hash_s = time.perf_counter() - t
        for threshold in args.thresholds:
            t = time.perf_counter()
            i, j = pairs_within(hashes, threshold)
            find_groups(hashes, threshold)
            ours_s = time.perf_counter() - t
            ours = score(set(zip(i.tolist(), j.tolist())), group, kind)
            t = time.perf_counter()
            dupes = phasher.find_duplicates(encoding_map=encodings, max_distance_threshold=threshold)
            theirs_s = time.perf_counter() - t
            theirs_pairs = {(min(int(a), int(b)), max(int(a), int(b))) for a, bs in dupes.items() for b in bs}
            theirs = score(theirs_pairs, group, kind)
            for name, s, secs in (("curate", ours, ours_s), ("imagededup", theirs, theirs_s)):
                rows.append([name, threshold, f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                             *(f"{s['per_kind'][k]:.2f}" for k in TRANSFORMS), f"{secs:.3f}"])
    headers = ["tool", "bits", "precision", "recall", *TRANSFORMS, "search s"]
    print(f"{len(paths)} images ({args.originals} originals x {len(TRANSFORMS)} copies + {args.distinct} distinct); "
          f"hashing: curate {len(paths) / ours_hash_s:,.0f} img/s, imagededup {len(paths) / theirs_hash_s:,.0f} img/s")
    print(" | ".join(headers))
    for r in rows:
        print(" | ".join(str(v) for v in r))
    if not args.no_record:
        results = Path(__file__).with_name("RESULTS.md")
        if not results.exists():
            results.write_text("# Benchmark results\n")
        with results.open("a") as fh:
            fh.write(f"\n### dedup_quality.py, {date.today()} ({platform.node()}): {len(paths)} images from food-dev "
                     f"({args.originals} originals x {len(TRANSFORMS)} transformed copies + {args.distinct} distinct); "
                     f"hashing curate {len(paths) / ours_hash_s:,.0f} img/s vs imagededup {len(paths) / theirs_hash_s:,.0f} img/s\n\n"
                     f"| {' | '.join(headers)} |\n|{' --- |' * len(headers)}\n")
            fh.writelines(f"| {' | '.join(str(v) for v in r)} |\n" for r in rows)


if __name__ == "__main__":
    main()
