"""Claim: reviewing only the 10 % most suspicious images (`curate suspects`) recovers >= 90 % of the valid-accuracy gap
between a clean and a 20 %-noisy training set.

Noise (seeded, --noise-seed, default 0), injected into a copy of food-dev/train (880 images, 10 classes); counts are
fractions of the clean train size, 20 % in all:
  - label flips, 8 %: clean images moved to another class drawn uniformly from the other 9;
  - byte duplicates, 2 %: exact copies of clean images, same class, new file name;
  - near duplicates, 4 %: a clean image, same class, re-made one of four ways (in turn): crop 8 % off every side and
    resize back; resize to 75 % and JPEG quality 50; brightness x1.25 and JPEG quality 85; horizontal flip;
  - off-topic, 6 %, each put in a random class, in equal thirds:
      photos: random crops (40-90 % of the side) of the non-food photos bundled with scikit-image (astronaut, brick,
        camera, chelsea the cat, coins, grass, gravel, hubble deep field, ihc, moon, motorcycle, retina, rocket,
        page, text), resized to 384 px on the short side, mirrored half the time;
      screenshots: 512x384 Pillow drawings of an app window (title bar with three dots, sidebar, rows of grey text
        lines and coloured buttons, random palette);
      text images: 448x336, a random background colour and 4-7 lines of random words in Pillow's default font at
        24-40 px.
  Injected files get random 7-digit names like the originals, so file order gives nothing away.

Data: by default 5-fold cross-fitting, so that all 1,100 food-dev images (train + valid) are scored once and every
arm is compared on the same runs: the images of each class are dealt into 5 folds (seeded); run (fold f, seed s)
trains on the other 4 folds (880 images, noise injected with noise seed f) and is scored on fold f (220). With
`--repeats 1 2 ...`, the images are dealt into folds again (one deal per repeat, each fold with noise of its own):
more independent draws of noise and valid images, which is what the arms' differences vary with most. With
`--folds 1`, food-dev's own train/valid split (the earlier setup: 220 valid images, 1 image = 0.45 points).

Arms, each trained as `python -m classify train --data ARM --seed S` does (the CPU default: since 2026-12-02 three
backbones side by side, lite0+lite1+lite2, mlp head, on 4 cached views; lite0 alone before, which every run recorded so
far used; `--quick`: lite0, views=2, epochs=15), all sharing one feature cache in --work: an image's views are computed
once per seed (about 45 s for the 1,100 food-dev images with lite0 on a quiet 2-core CPU, about 4x that with three
backbones), after which a run takes about 7 s with lite0 (15-30 s with three backbones):
  (a) clean: the fold's clean train as is;
  (b) noisy: the noisy folder as is;
  (c) auto: `import` into a workspace (drops byte duplicates), `dedup` (phash, 10 bits, per class), `suspects`
      (which flags off_topic the images far from every category; an image's embedding is computed once for all folds
      of the run, as a workspace that had embedded it before would hold it), `accept` (images with a blocking flag,
      unreadable/too_small/near_blank/off_topic, stay pending and are left out), accepted images trained on;
  (d) review@P: as (c), but before `accept` a simulated reviewer checks the top P % of `suspects`' order (P % of
      the images scored; that order puts the images a blocking flag already holds back last) and fixes what is
      wrong: flipped labels restored (relabel), near duplicates marked duplicate, off-topic images rejected; clean
      images accepted;
  (e) oracle: as (d), but the reviewer checks exactly the injected images left: the best any review can do through
      the workspace route (import, dedup, accept, export tree).
Reported: valid accuracy per arm (mean ± standard error over the runs), the standard deviation of each arm's
per-run difference from (a) (for (e), which trains on (a)'s images less one or two, that is the noise of a retrain
itself), share of the (a)-(b) gap recovered with a bootstrap interval over the paired runs, and precision@K /
recall@K of the suspicion ranking for the injected noise still present after (c), with a random order for comparison. Finished runs are kept in --work (their bundles'
metrics.json): the same command with the same --work resumes, and more --seeds add runs.

Measured: see bench/RESULTS.md, "## curation".
Requires the "bench" extra (scikit-image) and food-dev (PLATEKIT_FOOD_DEV).

  python bench/curation.py --seeds 0 1 2   # 5 folds x 3 seeds x 7 arms; appends to bench/RESULTS.md
  python bench/curation.py --seeds 0 1 2 --repeats 0 1 2 3 --work W   # 4 deals into folds: 60 paired runs an arm
  python bench/curation.py --folds 1 --seeds 0 --no-record
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, RESULTS, machine, table  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coins.png", "grass.png", "gravel.png",
                  "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
                  "page.png", "text.png")
NOISE = {"flip": 0.08, "byte_duplicate": 0.02, "near_duplicate": 0.04, "off_topic": 0.06}
WORDS = ("invoice total settings login password cancel submit weather news sports update download free offer click "
         "meeting agenda report chapter lorem ipsum dolor amet server error loading profile share subscribe").split()


@dataclass(frozen=True)
class Truth:
    kind: str  # clean | flip | near_duplicate | off_topic (byte duplicates share their original's sha256)
    label: str  # the right class (for off-topic: the class it was put in)


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _near_duplicate(image: Image.Image, variant: int) -> bytes:
    w, h = image.size
    if variant == 0:
        dx, dy = round(0.08 * w), round(0.08 * h)
        return _jpeg(image.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.BICUBIC))
    if variant == 1:
        return _jpeg(image.resize((round(0.75 * w), round(0.75 * h)), Image.BICUBIC), quality=50)
    if variant == 2:
        return _jpeg(ImageEnhance.Brightness(image).enhance(1.25), quality=85)
    return _jpeg(ImageOps.mirror(image))


def _skimage_photo(rng: random.Random) -> bytes:
    import skimage  # the optional "bench" extra; only its bundled sample files are used

    with Image.open(Path(skimage.__file__).parent / "data" / rng.choice(SKIMAGE_PHOTOS)) as photo:
        image = photo.convert("RGB")
    side = rng.uniform(0.4, 0.9)
    cw, ch = round(image.width * side), round(image.height * side)
    x, y = rng.randint(0, image.width - cw), rng.randint(0, image.height - ch)
    image = image.crop((x, y, x + cw, y + ch))
    scale = 384 / min(image.size)
    image = image.resize((max(384, round(image.width * scale)), max(384, round(image.height * scale))), Image.BICUBIC)
    return _jpeg(ImageOps.mirror(image) if rng.random() < 0.5 else image)


def _screenshot(rng: random.Random) -> bytes:
    palette = [tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(3)]
    image = Image.new("RGB", (512, 384), (rng.randint(225, 250),) * 3)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 512, 28), fill=palette[0])
    for k, colour in enumerate(((237, 95, 87), (245, 190, 80), (98, 197, 85))):
        draw.ellipse((8 + 18 * k, 8, 20 + 18 * k, 20), fill=colour)
    sidebar = rng.randint(90, 150)
    draw.rectangle((0, 28, sidebar, 384), fill=tuple(min(255, c + 60) for c in palette[1]))
    font = ImageFont.load_default(size=14)
    for row in range(rng.randint(8, 14)):
        y = 40 + row * 24
        draw.text((sidebar + 12, y), " ".join(rng.choices(WORDS, k=rng.randint(3, 7))), fill=(60, 60, 60), font=font)
        if rng.random() < 0.3:
            x = rng.randint(sidebar + 200, 430)
            draw.rounded_rectangle((x, y - 2, x + 70, y + 18), radius=4, fill=palette[2])
    return _jpeg(image)


def _text_image(rng: random.Random) -> bytes:
    background = tuple(rng.randint(0, 255) for _ in range(3))
    ink = (0, 0, 0) if sum(background) > 380 else (255, 255, 255)
    image = Image.new("RGB", (448, 336), background)
    draw = ImageDraw.Draw(image)
    size = rng.randint(24, 40)
    font = ImageFont.load_default(size=size)
    for row in range(rng.randint(4, 7)):
        draw.text((16, 16 + row * (size + 8)), " ".join(rng.choices(WORDS, k=rng.randint(2, 4))), fill=ink, font=font)
    return _jpeg(image)


def make_noisy(clean: Path, out: Path, seed: int = 0) -> dict[str, Truth]:
    """Write out/<class>/*.jpg: the clean set with the injected noise; returns sha256 → Truth of every file."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in clean.iterdir() if p.is_dir())
    files = [(c, p) for c in classes for p in sorted((clean / c).iterdir())]
    n = len(files)
    counts = {kind: round(rate * n) for kind, rate in NOISE.items()}
    used_names = {p.name for _, p in files}

    def name() -> str:
        while True:
            candidate = f"{rng.randint(1_000_000, 9_999_999)}.jpg"
            if candidate not in used_names:
                used_names.add(candidate)
                return candidate

    truth: dict[str, Truth] = {}

    def write(category: str, filename: str, data: bytes, kind: str, label: str) -> None:
        (out / category).mkdir(parents=True, exist_ok=True)
        (out / category / filename).write_bytes(data)
        truth.setdefault(hashlib.sha256(data).hexdigest(), Truth(kind, label))

    flipped = set(rng.sample(range(n), counts["flip"]))
    for k, (category, path) in enumerate(files):
        data = path.read_bytes()
        if k in flipped:
            write(rng.choice([c for c in classes if c != category]), path.name, data, "flip", category)
        else:
            write(category, path.name, data, "clean", category)
    unflipped = [k for k in range(n) if k not in flipped]
    for k in rng.sample(unflipped, counts["byte_duplicate"]):
        category, path = files[k]
        write(category, name(), path.read_bytes(), "clean", category)  # same bytes: same truth as the original
    for variant, k in enumerate(rng.sample(unflipped, counts["near_duplicate"])):
        category, path = files[k]
        with Image.open(path) as image:
            write(category, name(), _near_duplicate(image.convert("RGB"), variant % 4), "near_duplicate", category)
    makers = (_skimage_photo, _screenshot, _text_image)
    for k in range(counts["off_topic"]):
        category = rng.choice(classes)
        write(category, name(), makers[k % 3](rng), "off_topic", category)
    return truth


def injected_truth(clean: Path, seed: int) -> dict[str, Truth]:
    """What `make_noisy(clean, ..., seed)` injects (sha256 → Truth), for reading a finished work folder: the noise is
    made again in a temporary folder and thrown away."""
    with tempfile.TemporaryDirectory() as tmp:
        return make_noisy(clean, Path(tmp), seed)


def _link_tree(records, ws_root: Path, dest: Path, valid: Path) -> None:
    """dest/train/<category>/<id>.<ext> symlinks to the workspace originals, dest/valid → valid."""
    for r in records:
        target = dest / "train" / r.category / f"{r.id}{Path(r.path).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ws_root / r.path)
    (dest / "valid").symlink_to(valid)


def split_folds(root: Path, out: Path, folds: int, seed: int) -> list[Path]:
    """Pool root/train and root/valid per class, deal them into `folds` stratified folds; return one data root per
    fold: out/fold<f>/{train,valid}/<class>/ symlinks, valid = fold f, train = the other folds."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    roots = [out / f"fold{f}" for f in range(folds)]
    for c in classes:
        files = sorted(p for split in ("train", "valid") for p in (root / split / c).iterdir())
        rng.shuffle(files)
        for k, path in enumerate(files):
            for f, fold_root in enumerate(roots):
                target = fold_root / ("valid" if k % folds == f else "train") / c / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path.resolve())
    return roots


def _review(ws, truth: dict[str, Truth], ids: list[int]) -> None:
    """The simulated reviewer: fixes what is wrong with each image it looks at, through the Workspace API.

    It knows only what it sees: a clean image flagged as the twin of an injected copy is accepted, the copy stays.
    """
    for image_id in ids:
        r = ws.get(image_id)
        t = truth[r.sha256]
        if t.kind == "flip":
            ws.relabel(r.id, t.label)
            ws.set_status(r.id, "accepted")
        elif t.kind in ("near_duplicate", "off_topic"):
            ws.set_status(r.id, "rejected")
        else:
            ws.set_status(r.id, "accepted")


def reuse_embeddings(ws, cache: dict[str, bytes], model: str) -> None:
    """Store in `ws` the vectors `cache` (sha256 → float32 bytes) has for its images, as an earlier run would have left
    them (keyed by curate.embeddings.content_key: suspects then embeds only the others)."""
    from curate.embeddings import content_key

    ws.set_embeddings(model, {r.id: (content_key(r), cache[r.sha256]) for r in ws.list_images()
                              if r.sha256 in cache and r.crop is None})


def keep_embeddings(ws, cache: dict[str, bytes], model: str) -> None:
    """Add the vectors `ws` holds to `cache` (sha256 → float32 bytes), for the next fold."""
    records = {r.id: r for r in ws.list_images()}
    cache.update({records[i].sha256: vector for i, (_, vector) in ws.embeddings(model).items() if records[i].crop is None})


def prepare(work: Path, noise_seed: int, budgets: list[int], clean: Path = FOOD_DEV,
            progress: bool = True, embeddings: dict[str, bytes] | None = None) -> tuple[dict[str, Path], dict]:
    """Build the data folder of every arm from clean/{train,valid}; returns (arm → data root, ranking figures).

    `embeddings` (sha256 → vector bytes), when given, is shared between folds: an image's vector is computed once.
    """
    from curate.dedup import dedup
    from curate.importer import import_images
    from curate.quality import accept_passing
    from curate.suspects import SuspectsConfig, find_suspects
    from curate.workspace import Workspace

    noisy = work / "noisy"
    valid = clean / "valid"
    truth = make_noisy(clean / "train", noisy, noise_seed)
    roots = {"(a) clean": clean, "(b) noisy": work / "data-noisy"}
    (work / "data-noisy").mkdir()
    (work / "data-noisy" / "train").symlink_to(noisy)
    (work / "data-noisy" / "valid").symlink_to(valid)

    base = work / "ws-base"
    started = time.time()
    with Workspace(base) as ws:
        import_images(ws, str(noisy), progress=progress)
        dedup(ws, progress=progress, by="hash")  # the hash dedup these figures were measured with
        if embeddings is not None:
            reuse_embeddings(ws, embeddings, SuspectsConfig().model)
        report = find_suspects(ws, progress=progress)
        if embeddings is not None:
            keep_embeddings(ws, embeddings, SuspectsConfig().model)
    suspects_s = time.time() - started
    ranking = [s.image_id for s in report.suspects]
    figures = {"scored": len(ranking), "suspects_s": suspects_s, "probe_accuracy": report.probe_accuracy}
    with Workspace(base) as ws:
        records = {r.id: r for r in ws.list_images()}
    is_noise = np.array([truth[records[i].sha256].kind != "clean" for i in ranking])
    figures["noise_left"] = int(is_noise.sum())
    figures["noise_by_kind"] = {kind: sum(1 for i in ranking if truth[records[i].sha256].kind == kind)
                                for kind in ("flip", "near_duplicate", "off_topic")}
    figures["held_by_kind"] = {kind: sum(1 for s in report.suspects if s.held and truth[records[s.image_id].sha256].kind == kind)
                               for kind in ("clean", "flip", "near_duplicate", "off_topic")}
    figures["precision"], figures["recall"] = {}, {}
    checked = {"(c) auto": []}  # arm → image ids the simulated reviewer looks at
    for budget in budgets:
        k = round(budget / 100 * len(ranking))
        checked[f"(d) review {budget} %"] = ranking[:k]
        figures["precision"][budget] = float(is_noise[:k].mean())
        figures["recall"][budget] = float(is_noise[:k].sum() / max(1, is_noise.sum()))
    checked["(e) oracle"] = [i for i, noise in zip(ranking, is_noise) if noise]
    for n, (arm, ids) in enumerate(checked.items()):
        ws_root = work / f"ws-arm{n}"
        ws_root.mkdir()
        shutil.copyfile(base / "manifest.sqlite", ws_root / "manifest.sqlite")  # WAL checkpointed on close
        (ws_root / "images").symlink_to(base / "images")
        with Workspace(ws_root) as ws:
            _review(ws, truth, ids)
            accept_passing(ws)
            accepted = ws.list_images(status="accepted")
        _link_tree(accepted, ws_root, work / f"data-arm{n}", valid)
        roots[arm] = work / f"data-arm{n}"
        figures.setdefault("train_images", {})[arm] = len(accepted)
        figures.setdefault("noise_in_train", {})[arm] = sum(truth[r.sha256].kind != "clean" and r.category != truth[r.sha256].label
                                                            or truth[r.sha256].kind in ("near_duplicate", "off_topic")
                                                            for r in accepted)  # a restored flip is clean again
    figures["train_images"]["(a) clean"] = sum(1 for _ in (clean / "train").rglob("*.jpg"))
    figures["train_images"]["(b) noisy"] = sum(1 for _ in noisy.rglob("*.jpg"))
    figures["noise_in_train"]["(a) clean"] = 0
    figures["noise_in_train"]["(b) noisy"] = sum(round(rate * figures["train_images"]["(a) clean"]) for rate in NOISE.values())
    figures["random_precision"] = float(is_noise.mean())
    return roots, figures


def train_arm(root: Path, out: Path, seed: int, quick: bool = False, feature_cache: str = "auto") -> None:
    from classify.train import RunConfig, train

    if quick:
        config = RunConfig(data=str(root), out=str(out), model="efficientnet_lite0", freeze="all", views=2, epochs=15,
                           seed=seed, feature_cache=feature_cache)
    else:  # what `python -m classify train --data ROOT --seed S` does
        config = RunConfig(data=str(root), out=str(out), seed=seed, feature_cache=feature_cache)
    train(config)  # writes out/metrics.json


def arm_key(arm: str) -> str:
    """'(d) review 10 %' → 'review10', '(a) clean' → 'clean': the arm's name on the command line."""
    return arm.split(") ", 1)[1].replace(" %", "").replace(" ", "")


def _recovered(values: dict[str, list[float]], arm: str, draws: int = 2000) -> tuple[float, float, float] | None:
    """Share of the clean-vs-noisy gap that `arm` recovers (higher values better), with the 5th-95th percentile over
    `draws` resamples of the paired runs (fold, seed); None when the gap is not positive."""
    a, b, d = (np.array(values[x]) for x in ("(a) clean", "(b) noisy", arm))
    if a.mean() <= b.mean():
        return None
    picks = np.random.default_rng(0).integers(0, len(a), size=(draws, len(a)))
    gap = a[picks].mean(1) - b[picks].mean(1)
    share = (d[picks].mean(1) - b[picks].mean(1))[gap > 0] / gap[gap > 0]
    return ((d.mean() - b.mean()) / (a.mean() - b.mean()), *np.percentile(share, [5, 95]))


def _prepare_fold(work: Path, fold_root: Path, noise_seed: int, budgets: list[int],
                  embeddings: dict[str, bytes]) -> tuple[dict[str, Path], dict]:
    """prepare() once per folder: a re-run with the same --work reuses the arms (roots and figures are kept in JSON)."""
    saved = work / "prepared.json"
    if saved.exists():
        kept = json.loads(saved.read_text())
        figures = kept["figures"]
        figures["precision"] = {int(k): v for k, v in figures["precision"].items()}
        figures["recall"] = {int(k): v for k, v in figures["recall"].items()}
        return {arm: Path(root) for arm, root in kept["roots"].items()}, figures
    if work.exists():
        shutil.rmtree(work)  # an interrupted prepare
    work.mkdir(parents=True)
    roots, figures = prepare(work, noise_seed, budgets, fold_root, embeddings=embeddings)
    saved.write_text(json.dumps({"roots": {arm: str(root) for arm, root in roots.items()}, "figures": figures}))
    return roots, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5,
                        help="cross-fit: pool food-dev train+valid and take each of K stratified folds as valid in turn "
                             "(1: food-dev's own train/valid split)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds, each run on every fold")
    parser.add_argument("--noise-seed", type=int, default=0, help="noise seed of fold 0 (fold f uses noise seed + f)")
    parser.add_argument("--repeats", type=int, nargs="+", default=[0],
                        help="deals of the images into folds: repeat R deals them with seed noise seed + R x folds and "
                             "its fold f gets noise seed noise seed + R x folds + f (0: the first deal)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20], help="review budgets, %% of ranked images")
    parser.add_argument("--work", help="keep the work folder here, and resume from it (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true",
                        help="train with views=2, epochs=15 instead of classify train's defaults (about half the time)")
    parser.add_argument("--arms", nargs="+", metavar="ARM",
                        help="train only these arms besides clean and noisy (which every gap needs): auto, review5 "
                             "(one per --budgets value), oracle; e.g. --arms review10 to add seeds where the target is "
                             "read (default: all)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    known = {"auto", "oracle", *(f"review{b}" for b in args.budgets)}
    if args.arms and (unknown := set(args.arms) - known):
        parser.error(f"unknown arm {sorted(unknown)[0]!r}: choose from {', '.join(sorted(known))}")
    if args.folds == 1 and args.repeats != [0]:
        parser.error("--repeats needs --folds 2 or more")
    if not (FOOD_DEV / "train").is_dir():
        print(f"bench: food-dev not found at {FOOD_DEV} (set PLATEKIT_FOOD_DEV)", file=sys.stderr)
        return 2
    machine_line = machine()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="curation-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fold_roots = []  # (name, its work folder, its data root, its noise seed)
    for r in args.repeats:
        base, seed0 = (work if r == 0 else work / f"repeat{r}"), args.noise_seed + r * args.folds
        if args.folds == 1:
            fold_roots.append(("fold 0", base / "fold0", FOOD_DEV, seed0))
            continue
        if not (base / "folds").exists():
            split_folds(FOOD_DEV, base / "folds-tmp", args.folds, seed0)
            (base / "folds-tmp").rename(base / "folds")
        fold_roots += [(f"{f'repeat {r} ' if r else ''}fold {f}", base / f"fold{f}", base / "folds" / f"fold{f}", seed0 + f)
                       for f in range(args.folds)]
    # Every arm's training shares one feature store: the views of an image are computed once per seed, whichever
    # fold and arm it is in (classify.features; the runs are bit for bit those without it).
    feature_cache = str(work / "feature-cache")
    folds = []  # (roots, figures) per fold
    embeddings: dict[str, bytes] = {}  # sha256 → suspects' vector: a clean image is embedded once, not once a fold
    for fold_name, fold_work, fold_root, noise_seed in fold_roots:
        roots, figures = _prepare_fold(fold_work, fold_root, noise_seed, args.budgets, embeddings)
        folds.append((roots, figures))
        print(f"{fold_name}: ranked {figures['scored']} images in {figures['suspects_s']:.0f} s; noise left after the automatic "
              f"steps: {figures['noise_left']} {figures['noise_by_kind']}; held back by a flag: {figures.get('held_by_kind')}; "
              f"probe agreement {figures['probe_accuracy']:.3f}; "
              f"precision@K {figures['precision']}", flush=True)
    accuracy: dict[str, list[float]] = {}  # arm → one value per run, runs in the same (seed, fold) order for every arm
    position: dict[str, list[float]] = {}  # the same for -average position (mean rank of the true class, 1 = perfect)
    for seed in args.seeds:
        for (fold_name, fold_work, _, _), (roots, _) in zip(fold_roots, folds):
            for k, (arm, root) in enumerate(roots.items()):
                if args.arms and arm_key(arm) not in {"clean", "noisy", *args.arms}:
                    continue
                run = fold_work / "runs" / f"arm{k}-seed{seed}"
                trained = not (run / "metrics.json").exists()  # a finished run is kept: the same command resumes
                t0 = time.time()
                if trained:
                    train_arm(root, run, seed, args.quick, feature_cache)
                metrics = json.loads((run / "metrics.json").read_text())
                if trained:
                    print(f"{fold_name} seed {seed} {arm}: {metrics['accuracy']:.4f} ({time.time() - t0:.0f} s)", flush=True)
                accuracy.setdefault(arm, []).append(metrics["accuracy"])
                position.setdefault(arm, []).append(-metrics["average_position"])  # negated: higher is better, like accuracy
    mean = {arm: float(np.mean(v)) for arm, v in accuracy.items()}
    per_fold = lambda name, key: np.mean([figures[name][key] for _, figures in folds])  # noqa: E731
    rows = []
    for arm, values in accuracy.items():
        budget = int(arm.split()[-2]) if "%" in arm else None
        recovered = interval = by_position = "-"
        if arm not in ("(a) clean", "(b) noisy"):
            if (share := _recovered(accuracy, arm)) is not None:
                recovered, interval = f"{share[0]:.0%}", "{:.0%} to {:.0%}".format(*share[1:])
            if (share := _recovered(position, arm)) is not None:
                by_position = "{:.0%} ({:.0%} to {:.0%})".format(*share)
        paired = np.array(accuracy["(a) clean"]) - np.array(values)
        paired_sd = "-" if arm == "(a) clean" or len(values) < 2 else f"{paired.std(ddof=1):.4f}"
        rows.append([arm, f"{per_fold('train_images', arm):.0f}", f"{per_fold('noise_in_train', arm):.0f}",
                     f"{mean[arm]:.4f} ± {np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0:.4f}",
                     paired_sd, recovered, interval, f"{-np.mean(position[arm]):.3f}", by_position,
                     "-" if budget is None else f"{per_fold('precision', budget):.2f}",
                     "-" if budget is None else f"{per_fold('recall', budget):.2f}"])
    body = table(["arm", "train images", "injected noise in train", "valid accuracy, mean ± s.e.",
                  "s.d. of its difference from (a) over the paired runs", "gap recovered",
                  "90 % interval (bootstrap)", "average position", "its gap recovered (90 % interval)", "precision@K",
                  "recall@K"], rows)
    runs = [f"{name} seed {s}" for s in args.seeds for name, *_ in fold_roots]
    per_run = table(["run", *accuracy], [[run, *(f"{accuracy[arm][i]:.3f}" for arm in accuracy)] for i, run in enumerate(runs)])
    kinds = {kind: sum(fig["noise_by_kind"][kind] for _, fig in folds) for kind in folds[0][1]["noise_by_kind"]}
    held = ({kind: sum(fig["held_by_kind"][kind] for _, fig in folds) for kind in folds[0][1]["held_by_kind"]}
            if all("held_by_kind" in fig for _, fig in folds) else None)
    split = (f"{args.folds} stratified folds of food-dev train+valid (1,100 images; each fold's 220 are valid once, the "
             f"other 880 are the clean train), dealt {len(args.repeats)} time(s) (repeats {' '.join(map(str, args.repeats))}); "
             f"noise seeds {', '.join(str(seed) for *_, seed in fold_roots)}"
             if args.folds > 1 else f"food-dev train/valid as shipped (valid 220 images); noise seed {args.noise_seed}")
    notes = (f"{split}; training seeds {' '.join(map(str, args.seeds))}: {len(runs)} paired runs per arm. After the "
             f"automatic steps {sum(fig['noise_left'] for _, fig in folds)} injected images were left among "
             f"{sum(fig['scored'] for _, fig in folds)} ranked, all folds together ({kinds}); a random order finds noise with "
             f"precision {np.mean([fig['random_precision'] for _, fig in folds]):.2f}"
             + (f"; held back by a blocking flag (ranked last, left out by `accept`): {held}" if held else "")
             + f". Probe agreement with the noisy labels "
             f"{np.mean([fig['probe_accuracy'] for _, fig in folds]):.3f}; embedding + ranking "
             f"{np.mean([fig['suspects_s'] for _, fig in folds]):.0f} s a fold. Training: "
             f"{'lite0, freeze=all, views=2, epochs=15 (--quick)' if args.quick else 'classify train defaults'}; "
             f"(e) oracle = every injected image still present fixed, the ceiling of the workspace route. Interval: 5th-95th "
             f"percentile of the share recovered over 2,000 resamples of the paired runs. Total {time.time() - started:.0f} s.")
    print(body)
    print(per_run)
    print(notes)
    if not args.no_record:
        with RESULTS.open("a") as f:
            f.write(f"\n### curation.py, {date.today()}\n\n{machine_line}\n\n{body}\n\n{notes}\n\n"
                    f"<details><summary>per run</summary>\n\n{per_run}\n\n</details>\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
