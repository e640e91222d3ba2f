"""Quality flags for one image (unreadable, too small, extreme aspect, blurry, dark, bright, near-blank, grayscale), and accepting what passes them.

One more flag, off_topic, is not read from the pixels but set by `curate suspects` (curate.suspects): the image lies
far from every category's embeddings (a screenshot, a text image, a photo of something else). `check` keeps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from curate import CurateError
from curate.images import InvalidImage, open_image, stored_size
from curate.workspace import flags_sql

FLAGS = ("unreadable", "too_small", "extreme_aspect", "blurry", "dark", "bright", "near_blank", "grayscale", "off_topic")
SET_BY_SUSPECTS = ("off_topic",)  # flags no pixel check sets or clears


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds for the flags. Brightness values are on 0-255 gray; blur is measured at ANALYSIS_PX."""

    min_size_px: int = 128
    max_aspect: float = 3.0
    # Variance of the Laplacian of the 256-px gray image. Measured on a quarter of food-dev (275 sharp
    # 384-px photos): minimum 44, 1st percentile 69, median 413; after a Gaussian blur of radius 2 px
    # the median is 22, after radius 3 px the maximum is 30. 40 flags no sharp photo and real blur.
    blur_variance: float = 40.0
    # Dark: the brightest 1 % of the pixels (99th percentile of gray) below this, i.e. nothing in the picture is lit
    # (CleanVision's rule: its default is 0.32 of full scale). Measured on the 2,600 food-dev and food-dev-extra photos:
    # 7 flagged, all dim restaurant shots (a mean below 35, the rule before, flagged 12, among them dim photos with a
    # lit plate); every photo darkened to 1/4 has it below 64 (bench/quality_vs_cleanvision.py, bench/RESULTS.md).
    dark_highlight: float = 80.0
    bright_mean: float = 225.0
    blank_std: float = 6.0
    # Mean absolute difference between colour channels below which the image is treated as grayscale.
    gray_chroma: float = 3.0


ANALYSIS_PX = 256


def measure(image: Image.Image) -> dict[str, float]:
    """The numbers the flags are based on, for an RGB image of any size."""
    small = image.convert("RGB")
    small.thumbnail((ANALYSIS_PX, ANALYSIS_PX), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1])
    chroma = (np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])).mean() / 2
    return {"laplacian_var": float(lap.var()) if lap.size else 0.0, "mean": float(gray.mean()),
            "std": float(gray.std()), "chroma": float(chroma), "highlight": float(np.percentile(gray, 99))}


def flags_for_image(image: Image.Image, config: QualityConfig = QualityConfig()) -> tuple[str, ...]:
    """Quality flags of a decoded image, in FLAGS order."""
    width, height = image.size
    found = set()
    if min(width, height) < config.min_size_px:
        found.add("too_small")
    if max(width, height) / max(1, min(width, height)) > config.max_aspect:
        found.add("extreme_aspect")
    m = measure(image)
    if m["std"] < config.blank_std:
        found.add("near_blank")  # a flat image is also "blurry"; say only what matters
    elif m["laplacian_var"] < config.blur_variance:
        found.add("blurry")
    if m["highlight"] < config.dark_highlight:
        found.add("dark")
    if m["mean"] > config.bright_mean:
        found.add("bright")
    if m["chroma"] < config.gray_chroma:
        found.add("grayscale")
    return tuple(f for f in FLAGS if f in found)


def flags_for_file(path: str | Path | bytes, config: QualityConfig = QualityConfig()) -> tuple[str, ...]:
    """Quality flags of an image file (a path or its bytes); ("unreadable",) when it cannot be decoded."""
    try:
        image = open_image(path, mode="RGB", draft_size=(ANALYSIS_PX, ANALYSIS_PX))
        # draft may decode at reduced size: judge size and aspect on the real dimensions
        size = stored_size(path)
    except (InvalidImage, OSError):
        return ("unreadable",)
    flags = set(flags_for_image(image, config)) - {"too_small"}
    if min(size) < config.min_size_px:
        flags.add("too_small")
    return tuple(f for f in FLAGS if f in flags)


def check(ws, config: QualityConfig = QualityConfig(), progress: bool = False) -> dict[str, int]:
    """Recompute the flags of every image in workspace `ws`; returns flag → count."""
    from tqdm import tqdm

    counts = {f: 0 for f in FLAGS}
    records = ws.list_images()
    for record in tqdm(records, desc="check", unit="img", disable=not progress):
        kept = set(flags_for_file(ws.abspath(record), config)) | (set(record.flags) & set(SET_BY_SUSPECTS))
        flags = tuple(f for f in FLAGS if f in kept)
        if flags != record.flags:
            ws.set_flags(record.id, flags)
        for f in flags:
            counts[f] += 1
    return counts


# Flags that stop `accept` by default: the image cannot be used for training as it is, or (off_topic) most likely is
# not a photo of any of the categories. The others (blurry, dark, bright, grayscale, extreme_aspect) describe photos
# that are often still right; the reviewer decides about them. Off-topic images are held rather than put first in the
# review queue, where on bench/curation.py they took 15 of the 95 places of the top 10 % that label flips need
# (bench/RESULTS.md, "## curation").
BLOCKING_FLAGS = ("unreadable", "too_small", "near_blank", "off_topic")
# "Held back": a pending image that `accept` leaves pending for a blocking flag. The rule in Python and in SQL, side by
# side: suspects ranks these last, the review UI's bulk accept spares them, `accept` counts them.
HELD_SQL = f"(status = 'pending' AND {flags_sql(BLOCKING_FLAGS)})"


def blocking(flags: tuple[str, ...], blocking_flags=BLOCKING_FLAGS) -> list[str]:
    """The flags of an image that stop `accept`."""
    return [f for f in flags if f in blocking_flags]


def is_held(status: str, flags: tuple[str, ...]) -> bool:
    """Whether `accept` (default blocking flags) leaves this image out of the training set without a review."""
    return status == "pending" and bool(blocking(flags))


@dataclass(frozen=True)
class AcceptReport:
    accepted: dict[str, int]  # category -> images accepted now
    held: dict[str, dict[str, int]]  # category -> blocking flag -> pending images left pending for it


def accept_passing(ws, category: str | None = None, exclude_flags=BLOCKING_FLAGS) -> AcceptReport:
    """Accept every pending image without a flag in `exclude_flags` (duplicates are not pending, so never accepted).

    Each acceptance is a logged decision, all in one transaction and one batch: one undo takes the whole run back.
    """
    unknown = sorted(set(exclude_flags) - set(FLAGS))
    if unknown:
        raise CurateError(f"unknown quality flag {unknown[0]!r}; use one of {', '.join(FLAGS)}")
    if category is not None:
        ws.folder_of(category)  # unknown category: a clear error instead of accepting nothing
    accepted: dict[str, int] = {}
    held: dict[str, dict[str, int]] = {}
    with ws.batch():
        for record in ws.list_images(category=category, status="pending"):
            stops = blocking(record.flags, exclude_flags)
            if stops:
                for flag in stops:
                    held.setdefault(record.category, {}).setdefault(flag, 0)
                    held[record.category][flag] += 1
                continue
            ws.set_status(record.id, "accepted")
            accepted[record.category] = accepted.get(record.category, 0) + 1
    return AcceptReport(accepted, held)
