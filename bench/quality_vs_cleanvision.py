"""Claim: `curate check`'s blurry / dark / too_small flags find injected defects as well as CleanVision's issue types.

Images: the first --per-class food-dev valid photos of every class (sorted by name; 384 px on the short side), each
written once as is and once per defect, two strengths each (Pillow, JPEG quality 90):
  blurry: ImageFilter.GaussianBlur(radius) with radius 1.5 (mild) and 3 (strong) px, at the photo's own size;
  dark:   ImageEnhance.Brightness(factor) with factor 0.5 (mild) and 0.25 (strong);
  tiny:   downscaled (LANCZOS) by 0.5 (mild: ~192 px short side) and 0.25 (strong: ~96 px).
platekit: `curate.quality.flags_for_file` (what `curate check` stores) with its default QualityConfig. CleanVision:
`Imagelab(filepaths=...).find_issues({"blurry": {}, "dark": {}, "odd_size": {}, ...})` with its default thresholds
(CleanVision has no "too small" type: odd_size, a size far from the set's typical one, is the nearest).
Reported per defect: precision of the flag over all images, recall per strength (a mild defect counted as positive).
Then the dark flag's false-flag rate on real photos as they are: every photo of food-dev (train and valid) and
food-dev-extra, which hold genuinely dim restaurant shots but no darkened copy (`dark` does not block `accept`: each
flag there is one more photo a reviewer is pointed to).

  python bench/quality_vs_cleanvision.py            # appends to bench/RESULTS.md
  python bench/quality_vs_cleanvision.py --no-record --per-class 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

DEFECTS = {
    "blurry": {"mild": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
               "strong": lambda im: im.filter(ImageFilter.GaussianBlur(3))},
    "dark": {"mild": lambda im: ImageEnhance.Brightness(im).enhance(0.5),
             "strong": lambda im: ImageEnhance.Brightness(im).enhance(0.25)},
    "tiny": {"mild": lambda im: im.resize((round(im.width * 0.5), round(im.height * 0.5)), Image.LANCZOS),
             "strong": lambda im: im.resize((round(im.width * 0.25), round(im.height * 0.25)), Image.LANCZOS)},
}
PLATEKIT_FLAG = {"blurry": "blurry", "dark": "dark", "tiny": "too_small"}
CLEANVISION_ISSUE = {"blurry": "blurry", "dark": "dark", "tiny": "odd_size"}


def make_set(out: Path, per_class: int) -> list[tuple[Path, str, str]]:
    """(file, defect or "clean", strength or "") for every written image."""
    written = []
    for category in sorted(p for p in (FOOD_DEV / "valid").iterdir() if p.is_dir()):
        for photo in sorted(category.iterdir())[:per_class]:
            with Image.open(photo) as opened:
                image = opened.convert("RGB")
            variants = [("clean", "", image)] + [(defect, strength, make(image)) for defect, by_strength in DEFECTS.items()
                                                 for strength, make in by_strength.items()]
            for defect, strength, picture in variants:
                path = out / f"{category.name}-{photo.stem}-{defect}{strength}.jpg"
                picture.save(path, quality=90)
                written.append((path, defect, strength))
    return written


def score(flagged: list[bool], images: list[tuple[Path, str, str]], defect: str) -> list[str]:
    """precision, then recall at each strength, as table cells."""
    hits = [f for f, (_, d, _) in zip(flagged, images) if d == defect]
    precision = sum(hits) / max(1, sum(flagged))
    cells = [f"{precision:.2f} ({sum(hits)}/{sum(flagged)})"]
    for strength in DEFECTS[defect]:
        found = [f for f, (_, d, s) in zip(flagged, images) if d == defect and s == strength]
        cells.append(f"{sum(found) / max(1, len(found)):.2f}")
    false_on_clean = sum(f for f, (_, d, _) in zip(flagged, images) if d == "clean")
    return cells + [str(false_on_clean)]


def real_photo_rows(lab_class) -> list[list]:
    """Per set of real photos: how many `dark` flags platekit and CleanVision put on them."""
    from curate.quality import flags_for_file

    rows = []
    for name, folder in (("food-dev", FOOD_DEV), ("food-dev-extra", FOOD_DEV.parent / "food-dev-extra")):
        photos = sorted(str(p) for p in folder.rglob("*.jpg"))
        if not photos:
            continue
        platekit = sum("dark" in flags_for_file(p) for p in photos)
        lab = lab_class(filepaths=photos)
        lab.find_issues({"dark": {}}, verbose=False)
        cleanvision = int(lab.issues["is_dark_issue"].sum())
        rows.append([name, len(photos), f"{platekit} ({platekit / len(photos):.2%})",
                     f"{cleanvision} ({cleanvision / len(photos):.2%})"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=15, help="food-dev valid photos per class")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--no-real", action="store_true", help="skip the false-flag count on real photos")
    args = parser.parse_args()
    if not (FOOD_DEV / "valid").is_dir():
        print(f"bench: food-dev not found at {FOOD_DEV} (set PLATEKIT_FOOD_DEV)", file=sys.stderr)
        return 2
    from cleanvision import Imagelab

    from curate.quality import flags_for_file

    machine_line = machine()
    with tempfile.TemporaryDirectory() as tmp:
        images = make_set(Path(tmp), args.per_class)
        started = time.time()
        platekit = [flags_for_file(path) for path, _, _ in images]
        platekit_s = time.time() - started
        started = time.time()
        lab = Imagelab(filepaths=[str(path) for path, _, _ in images])
        lab.find_issues({"blurry": {}, "dark": {}, "odd_size": {}, "light": {}, "low_information": {}}, verbose=False)
        cleanvision_s = time.time() - started
        issues = lab.issues.reindex([str(path) for path, _, _ in images])
    rows = []
    for defect in DEFECTS:
        rows.append([defect, f"platekit `{PLATEKIT_FLAG[defect]}`",
                     *score([PLATEKIT_FLAG[defect] in flags for flags in platekit], images, defect)])
        column = f"is_{CLEANVISION_ISSUE[defect]}_issue"
        rows.append([defect, f"CleanVision `{CLEANVISION_ISSUE[defect]}`",
                     *score([bool(v) for v in issues[column]], images, defect)])
    body = table(["defect", "flag", "precision (hits/flagged)", "recall, mild", "recall, strong",
                  "clean photos flagged"], rows)
    clean = sum(1 for _, d, _ in images if d == "clean")
    notes = (f"{clean} food-dev valid photos ({args.per_class} a class, first by name), each also blurred (Gaussian "
             f"radius 1.5 / 3 px), darkened (brightness x0.5 / x0.25) and downscaled (x0.5 / x0.25): {len(images)} "
             f"images. platekit: curate.quality.flags_for_file, default thresholds, {platekit_s:.0f} s; CleanVision "
             f"Imagelab.find_issues, default thresholds, {cleanvision_s:.0f} s. Precision counts every image the flag "
             f"is on (another defect's image flagged is a false positive).")
    if not args.no_real:
        body += "\n\n" + table(["real photos", "photos", "platekit `dark`", "CleanVision `dark`"], real_photo_rows(Imagelab))
    print(body)
    print(notes)
    if not args.no_record:
        append("quality_vs_cleanvision.py", f"{body}\n\n{notes}\n", machine_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
