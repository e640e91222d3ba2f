"""curate.quality's pixel rules, on real food photos."""
from __future__ import annotations

from PIL import Image, ImageEnhance

from curate.quality import flags_for_file, flags_for_image, measure


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
