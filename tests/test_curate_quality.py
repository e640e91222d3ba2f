"""Tests for curate.quality: flags on real photos and planted defects, `check`, `accept` and its blocking flags."""
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from conftest import COLOURS, make_image
from curate import CurateError
from curate.__main__ import main
from curate.importer import import_images
from curate.quality import BLOCKING_FLAGS, accept_passing, flags_for_file, flags_for_image, measure
from curate.workspace import Workspace
from test_curate_importer import FOOD_DEV, photo, run_cli
from test_curate_suspects import add


def test_food_dev_subset_quality_flags(tmp_path):
    if not FOOD_DEV.exists():
        pytest.skip(f"{FOOD_DEV} not present")
    src = tmp_path / "src"
    for p in sorted((FOOD_DEV / "valid" / "apple_pie").glob("*.jpg"))[:6]:
        (src / "apple_pie").mkdir(parents=True, exist_ok=True)
        (src / "apple_pie" / p.name).write_bytes(p.read_bytes())
    blurred = Image.open(p).filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(4))
    blurred.save(src / "apple_pie" / "blurred.jpg")
    Image.open(p).convert("L").convert("RGB").save(src / "apple_pie" / "gray.jpg")
    Image.new("RGB", (300, 300), (250, 250, 250)).save(src / "apple_pie" / "blank.jpg")
    with Workspace(tmp_path / "ws") as ws:
        assert import_images(ws, str(src)).added == 9
        flags = {Path(r.source_url).name: r.flags for r in ws.list_images()}
    assert "blurry" in flags["blurred.jpg"] and "grayscale" in flags["gray.jpg"]
    assert "near_blank" in flags["blank.jpg"] and "bright" in flags["blank.jpg"]
    assert sum(1 for name, f in flags.items() if f and name[0].isdigit()) == 0  # real photos: no flags


def test_cli_check_recomputes_flags(tmp_path):
    src = tmp_path / "src" / "ramen"
    photo(src / "ok.jpg", seed=1, size=(240, 200))
    photo(src / "wide.jpg", seed=2, size=(700, 200))
    Image.new("RGB", (200, 200), (12, 12, 12)).save(src / "dark.png")
    ws_dir = tmp_path / "ws"
    assert run_cli("--workspace", str(ws_dir), "import", str(tmp_path / "src")).returncode == 0
    with Workspace(ws_dir) as ws:
        records = {Path(r.source_url).name: r for r in ws.list_images()}
        assert "extreme_aspect" in records["wide.jpg"].flags and "dark" in records["dark.png"].flags
        for r in records.values():  # as if flagged by an older version, or by hand
            ws.set_flags(r.id, ("blurry",))
        originals = {r.path: ws.abspath(r).read_bytes() for r in records.values()}
    out = run_cli("--workspace", str(ws_dir), "check")
    assert out.returncode == 0, out.stderr
    assert "extreme_aspect" in out.stdout  # the summary table
    with Workspace(ws_dir) as ws:
        after = {Path(r.source_url).name: r.flags for r in ws.list_images()}
        assert all(ws.abspath(r).read_bytes() == originals[r.path] for r in ws.list_images())
    assert after["ok.jpg"] == () and "extreme_aspect" in after["wide.jpg"] and "blurry" not in after["wide.jpg"]
    assert "dark" in after["dark.png"] and "near_blank" in after["dark.png"]


def flat(path, size=(160, 160), colour=(128, 128, 128)):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def mixed_ws(tmp_path):
    """A workspace with 4 clean images, one near-blank, one too-small, one blurry one and a duplicate."""
    ws = Workspace(tmp_path / "ws")
    ids = {}
    for i in range(4):
        ids[f"ok{i}"] = add(ws, make_image(tmp_path / f"ok{i}.jpg", COLOURS["red_soup" if i < 2 else "green_salad"], i,
                                           size=(160, 160)), "red_soup" if i < 2 else "green_salad").id
    ids["blank"] = add(ws, flat(tmp_path / "blank.png"), "red_soup").id
    ids["small"] = add(ws, make_image(tmp_path / "small.png", COLOURS["red_soup"], 50, size=(60, 50)), "red_soup").id
    ids["blurry"] = add(ws, make_image(tmp_path / "blurry.png", COLOURS["green_salad"], 51, size=(160, 160)),
                        "green_salad", flags=("blurry",)).id
    ids["dup"] = add(ws, make_image(tmp_path / "dup.png", COLOURS["green_salad"], 52, size=(160, 160)), "green_salad").id
    ws.mark_duplicates({ids["dup"]: ids["ok2"]})
    assert ws.get(ids["blank"]).flags == ("near_blank", "grayscale") and "too_small" in ws.get(ids["small"]).flags
    yield ws, ids
    ws.close()


def test_accept_passing_respects_blocking_flags_and_is_undoable(mixed_ws):
    ws, ids = mixed_ws
    assert BLOCKING_FLAGS == ("unreadable", "too_small", "near_blank", "off_topic")
    report = accept_passing(ws)
    assert report.accepted == {"red_soup": 2, "green_salad": 3}
    assert report.held == {"red_soup": {"near_blank": 1, "too_small": 1}}
    assert ws.get(ids["blurry"]).status == "accepted"
    assert ws.get(ids["dup"]).status == "duplicate" and ws.get(ids["blank"]).status == "pending"
    decisions = ws.decisions()
    assert len(decisions) == 5 and {d["new"]["status"] for d in decisions} == {"accepted"}
    assert len(ws.undo()) == 5  # one undo takes the whole run back
    assert ws.count(status="accepted") == 0 and ws.count(status="pending") == 7


def test_accept_options(mixed_ws):
    ws, ids = mixed_ws
    assert accept_passing(ws, category="green_salad", exclude_flags=("blurry",)).accepted == {"green_salad": 2}
    assert ws.get(ids["blurry"]).status == "pending" and ws.get(ids["ok0"]).status == "pending"
    assert accept_passing(ws, exclude_flags=()).accepted == {"red_soup": 4, "green_salad": 1}
    assert ws.count(status="pending") == 0 and ws.get(ids["dup"]).status == "duplicate"
    with pytest.raises(CurateError, match="unknown quality flag 'fuzzy'"):
        accept_passing(ws, exclude_flags=("fuzzy",))
    with pytest.raises(CurateError, match="unknown category"):
        accept_passing(ws, category="pho")


def test_accept_cli(mixed_ws, capsys):
    ws, ids = mixed_ws
    root = str(ws.root)
    assert main(["--workspace", root, "accept", "--exclude-flag", "too_small", "--exclude-flag", "blurry"]) == 0
    out = capsys.readouterr().out
    assert "accepted 5 pending images; blocking flags: too_small, blurry; 2 left pending for review" in out
    assert main(["--workspace", root, "accept", "--all-flags-ok"]) == 0
    assert "accepted 2 pending images; blocking flags: none" in capsys.readouterr().out
    assert ws.count(status="accepted") == 7
    assert main(["--workspace", root, "undo"]) == 0  # the second accept, as one
    assert capsys.readouterr().out.strip() == "undone: a bulk action on 2 images; now 2 pending"
    assert ws.count(status="accepted") == 5
    ws.set_status(ids["ok0"], "rejected")
    assert main(["--workspace", root, "undo"]) == 0
    assert capsys.readouterr().out.strip() == f"undone: #{ids['ok0']}; now 1 accepted"
    assert main(["--workspace", root, "undo"]) == 0 and ws.count(status="accepted") == 0
    capsys.readouterr()
    assert main(["--workspace", root, "undo"]) == 0 and capsys.readouterr().out.strip() == "nothing to undo"
    run = subprocess.run([sys.executable, "-m", "curate", "--workspace", root, "accept", "--category", "pho"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip() == "curate: unknown category 'pho'"


def _photos(food_dev, count):
    return sorted((food_dev / "valid").rglob("*.jpg"))[:count]


def test_darkened_photo_is_dark(food_dev, tmp_path):
    for k, path in enumerate(_photos(food_dev, 6)):
        with Image.open(path) as opened:
            photo = opened.convert("RGB")
        assert "dark" not in flags_for_image(photo)
        darkened = tmp_path / f"darkened{k}.jpg"
        ImageEnhance.Brightness(photo).enhance(0.25).save(darkened, quality=90)
        assert "dark" in flags_for_file(darkened)


def test_dim_restaurant_photos_are_not_dark(food_dev):
    # Two real photos taken in dim rooms, a lit plate in each: their mean gray is below 35 (the rule before flagged
    # both), but their brightest pixels are bright.
    for name in ("beignets/2350619.jpg", "baby_back_ribs/1202936.jpg"):
        path = food_dev / "train" / name
        with Image.open(path) as opened:
            assert measure(opened)["mean"] < 35
        assert "dark" not in flags_for_file(path)


def test_dark_rule_on_made_images():
    night = Image.new("RGB", (200, 200), (20, 24, 30))
    assert "dark" in flags_for_image(night)
    lamp = night.copy()
    lamp.paste((250, 240, 200), (80, 80, 120, 120))  # 4 % of the picture lit: not under-exposed
    assert "dark" not in flags_for_image(lamp) and measure(lamp)["mean"] < 35
