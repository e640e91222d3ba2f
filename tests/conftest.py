"""Shared fixtures: tiny Pillow-made image sets, the real food-dev folder when present, one small trained bundle."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
FOOD_DEV = Path(os.environ.get("PLATEKIT_FOOD_DEV", ROOT.parent / "shared" / "data" / "food-dev"))


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory):
    """Training's feature cache (classify.features) in a folder of this session's, never the user's ~/.cache; CLI
    subprocesses inherit it."""
    old = os.environ.get("PLATEKIT_CACHE")
    os.environ["PLATEKIT_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield Path(os.environ["PLATEKIT_CACHE"])
    if old is None:
        del os.environ["PLATEKIT_CACHE"]
    else:
        os.environ["PLATEKIT_CACHE"] = old

# Three visually distinct classes: a model that learns anything scores far above chance on them.
COLOURS = {"red_soup": (200, 40, 30), "green_salad": (40, 170, 60), "blue_cheese": (40, 60, 200)}


def make_image(path: Path, colour, seed: int, size=(96, 80), fmt=None) -> Path:
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in colour))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, size[0] - 10), rng.randint(0, size[1] - 10)
        shade = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x, y, x + rng.randint(5, 25), y + rng.randint(5, 25)), fill=shade)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_imagefolder(root: Path, per_class=(12, 4, 0), classes=COLOURS, size=(96, 80)) -> Path:
    """root/train|valid[|test]/<class>/*.jpg with `per_class` images per split."""
    seed = 0
    for split, count in zip(("train", "valid", "test"), per_class):
        for name, colour in classes.items():
            for i in range(count):
                seed += 1
                make_image(root / split / name / f"{i}.jpg", colour, seed, size=size)
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_data_session(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"), per_class=(12, 4, 4))


# Small and fast: lite0 at 64 px, head only. Used by evaluate/predict/export tests and by the demo tests.
FAST = dict(model="efficientnet_lite0", freeze="all", head="linear", image_size=64, epochs=8, views=1, patience=10, batch_size=8,
            lr=1e-2, warmup_epochs=0.0)


@pytest.fixture(scope="session")
def trained_bundle(tiny_data_session, tmp_path_factory):
    from classify.train import RunConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(RunConfig(data=str(tiny_data_session), out=str(out), **FAST))
    yield out
    # a test that wrote held-out figures here changed the card every later test reads: it wants own_bundle
    assert not (out / "held_out.json").exists(), "a test wrote held_out.json into the shared bundle: use own_bundle"


OTHER_DISH = (230, 120, 30)  # orange blobs: not on the tiny menu, but nearer its red soup than paper is


def make_other_dishes(folder: Path, count: int, first_seed: int) -> list[Path]:
    """Photos of a dish that is not on the tiny menu, in nested folders (--not-on-menu reads any depth)."""
    return [make_image(folder / f"batch{i % 2}" / f"{i}.jpg", OTHER_DISH, first_seed + i) for i in range(count)]


@pytest.fixture(scope="session")
def exposed_bundle(tiny_data_session, tmp_path_factory) -> Path:
    """trained_bundle's settings with --not-on-menu: 12 photos of another dish supplied at training time."""
    from classify.train import RunConfig, train

    root = tmp_path_factory.mktemp("exposed")
    make_other_dishes(root / "other", 12, first_seed=5000)
    train(RunConfig(data=str(tiny_data_session), out=str(root / "run"), **FAST, not_on_menu=str(root / "other")))
    return root / "run"


@pytest.fixture
def own_bundle(trained_bundle, tmp_path) -> Path:
    """A copy of trained_bundle for a test that writes into its bundle (`evaluate --out` on a held-out split adds
    held_out.json): the shared one stays as trained."""
    import shutil

    return Path(shutil.copytree(trained_bundle, tmp_path / "own-bundle"))


@pytest.fixture
def food_dev() -> Path:
    if not (FOOD_DEV / "train").is_dir():
        pytest.skip(f"real food photos not found at {FOOD_DEV} (set PLATEKIT_FOOD_DEV)")
    return FOOD_DEV


@pytest.fixture
def small_disk(tmp_path):
    """A real, nearly full disk: a tmpfs mounted under tmp_path (needs root or CAP_SYS_ADMIN, else skipped).

    Call it with a size in KiB; it returns the mount point. Unmounted at the end of the test.
    """
    import subprocess

    mounts = []

    def mount(kib: int) -> Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not permitted'})")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill_disk(point: Path, leave_kib: int) -> None:
    """Fill the filesystem of `point` up to `leave_kib` KiB of free space."""
    stat = os.statvfs(point)
    free = stat.f_bavail * stat.f_frsize
    (point / "filler").write_bytes(b"\0" * max(0, free - leave_kib * 1024))


def make_nonfood(path: Path, seed: int = 0, size=(160, 120)) -> Path:
    """Not a dish: black text lines and a grid on white paper, nothing like the colour-blob classes above."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 16 + seed % 5):
        draw.line((x, 0, x, size[1]), fill=(180, 180, 180))
    for row in range(4, size[1] - 10, 12):
        draw.text((4, row), "".join(rng.choice("abcdefghij 0123456789") for _ in range(24)), fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
