"""The model bundle's format, owned here: what config.json holds (a frozen dataclass), read, write, find_latest."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from classify import ClassifyError
from classify.options import read_text

# 1: the untyped dict of the first bundles (no "format_version" key). 2: adds temperature, the on-menu statistics
# (menu.safetensors) and threshold, and the training splits' folders. 3: the on-menu score may mix the kNN
# similarity with the head's largest logit (menu_method "knn+max-logit", menu_mix): a reader of 2 would misread it.
# Still 3 with `train --not-on-menu` (menu_method "knn+max-logit+exposed", its classifier in menu.safetensors): the
# readers of 3 made before it refuse that method by name ("upgrade platekit") rather than misread it. So do they
# "knn+max-logit+exposed-odds" (2026-12-06: the same rule with the classifier's log-odds in place of -log p).
FORMAT_VERSION = 3
REQUIRED = ("config.json", "model.safetensors")
MENU_FILE = "menu.safetensors"        # on-menu statistics (classify.menu), safetensors: no pickle
EXAMPLES_DIR = "examples"              # a few photos per class: the demo's examples, an int8 copy's calibration
HELD_OUT_FILE = "held_out.json"       # `evaluate --out` on a split the model never saw (the demo's card)


@dataclass(frozen=True)
class Bundle:
    """What config.json holds. `settings` keeps every other key (the RunConfig and the resolved training choices):
    the file stays one flat object, as it always was."""
    architecture: str
    classes: tuple[str, ...]
    image_size: int
    cache_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    head: str = "linear"
    strategy: str = ""
    created: str = ""
    hf_config: dict | None = None
    temperature: float = 1.0              # logits / temperature before the softmax (fitted on valid)
    calibrated: bool = False              # False: an old bundle with no fitted temperature
    menu_method: str | None = None        # None: no on-menu statistics (an old bundle); every photo counts as on it
    menu_threshold: float | None = None   # a score at or above it is on the menu
    menu_k: int = 1
    menu_mix: dict | None = None          # "knn+max-logit": classify.menu.fit_mix's standardization
    splits: dict = field(default_factory=dict)  # {"train": absolute folder, "valid": ...}: what evaluate must avoid
    format_version: int = FORMAT_VERSION
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        typed = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        typed["classes"], typed["mean"], typed["std"] = list(self.classes), list(self.mean), list(self.std)
        return {**self.settings, **typed}


TYPED = {f.name for f in fields(Bundle)} - {"settings"}


# Input px a bundle may name: under 32 the backbones' strides leave nothing to pool; far above 1024 one photo's
# tensors alone take gigabytes (a config of 20,000 px took 6.6 GB for one photo).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
# The on-menu rules this platekit scores (classify.menu computes them): plain kNN similarity, kNN mixed with the
# head's largest logit, and that mix with a classifier of photos supplied as not on the menu (train --not-on-menu),
# whose score is -log p(not on the menu) in bundles made before 2026-12-06 and its log-odds since (classify.menu).
MENU_METHODS = ("knn", "knn+max-logit", "knn+max-logit+exposed", "knn+max-logit+exposed-odds")
MIX_KEYS = ("knn_mean", "knn_std", "max_logit_mean", "max_logit_std", "max_logit_weight")  # classify.menu.fit_mix's


def _number(values: dict, name: str, low: float, high: float, integer: bool = False, default=None):
    """config.json's `name` as an int or float within [low, high], or a one-line error naming the field."""
    value = values.get(name, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
        low <= value <= high and (not integer or float(value).is_integer())
    if not ok:
        kind = "a whole number" if integer else "a number"
        raise ClassifyError(f"config.json's {name} is {json.dumps(value)[:40]}: it must be {kind} from {low} to {high}")
    return int(value) if integer else float(value)


def _numbers(values: dict, name: str, low: float) -> tuple[float, float, float]:
    value = values.get(name)
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ClassifyError(f"config.json's {name} must be 3 numbers (one per colour channel)")
    return tuple(_number({name: v}, name, low, 1e6) for v in value)


def _checked(values: dict) -> dict:
    """The typed fields with their types and ranges checked: a bad value is a one-line error here, not a traceback
    (or gigabytes of memory) when the model is built or the first photo is scored."""
    classes = values.get("classes")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) and c for c in classes):
        raise ClassifyError("config.json's classes must be a list of names")
    if len(set(classes)) != len(classes):
        raise ClassifyError(f"config.json's classes name {sorted({c for c in classes if classes.count(c) > 1})[0]!r} "
                            "twice")
    if not isinstance(values.get("architecture"), str) or not values["architecture"]:
        raise ClassifyError("config.json's architecture must be a backbone's name")
    image_size = _number(values, "image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, integer=True)
    checked = {"classes": tuple(classes), "image_size": image_size,
               "cache_size": _number(values, "cache_size", image_size, 2 * MAX_IMAGE_SIZE, integer=True),
               "mean": _numbers(values, "mean", -1e6), "std": _numbers(values, "std", 1e-6),
               "temperature": _number(values, "temperature", 1e-3, 1e3, default=1.0),
               "menu_k": _number(values, "menu_k", 1, 1000, integer=True, default=1),
               "format_version": _number(values, "format_version", 1, 1e6, integer=True, default=1)}
    if values.get("menu_method") is not None:
        if not isinstance(values["menu_method"], str):
            raise ClassifyError("config.json's menu_method must be a name")
        checked["menu_threshold"] = _number(values, "menu_threshold", -1e6, 1e6)
        if values["menu_method"] not in MENU_METHODS:  # a later platekit's rule: refused by name, never misread
            raise ClassifyError(f"config.json has an on-menu method this platekit does not know "
                                f"({values['menu_method']!r}): upgrade platekit")
        mix = values.get("menu_mix")
        if values["menu_method"] != "knn":
            if not isinstance(mix, dict) or not set(MIX_KEYS) <= set(mix):
                raise ClassifyError(f"config.json's menu_mix must hold {', '.join(MIX_KEYS)} for its on-menu method")
            for key in mix:
                _number(mix, key, -1e12, 1e12)
    return checked


def from_json(values: dict, where: str = "config.json") -> Bundle:
    """A Bundle from config.json's object; a bundle written before the format had a version loads as version 1.
    Every field's type and range is checked (a one-line ClassifyError naming it)."""
    if not isinstance(values, dict):
        raise ClassifyError(f"{where} is not a JSON object")
    missing = [name for name in ("architecture", "classes", "image_size", "cache_size", "mean", "std")
               if name not in values]
    if missing:
        raise ClassifyError(f"{where} lacks a required field: {', '.join(missing)}")
    typed = {name: values[name] for name in TYPED if name in values}
    if "temperature" in values and "calibrated" not in values:
        typed["calibrated"] = True
    try:
        typed.update(_checked(values))
    except ClassifyError as error:
        raise ClassifyError(str(error).replace("config.json", where, 1)) from None
    try:
        bundle = Bundle(**typed, settings={k: v for k, v in values.items() if k not in TYPED})
    except TypeError as error:
        raise ClassifyError(f"{where} has a field of the wrong kind: {error}") from None
    if bundle.format_version > FORMAT_VERSION:
        raise ClassifyError(f"{where} is bundle format {bundle.format_version}; this platekit reads up to "
                            f"{FORMAT_VERSION}: upgrade platekit")
    if len(bundle.classes) < 2:
        raise ClassifyError(f"{where} needs at least 2 classes")
    return bundle


def read(run_dir: str | Path) -> Bundle:
    """The bundle in `run_dir`; a missing file, non-UTF-8 or corrupt config.json is a one-line ClassifyError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ClassifyError(f"model folder not found: {run_dir}")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise ClassifyError(f"{run_dir} is not a complete model bundle: missing {', '.join(missing)}")
    path = run_dir / "config.json"
    try:
        values = json.loads(read_text(path, "bundle config"))
    except json.JSONDecodeError as error:
        raise ClassifyError(f"{path} is not valid JSON: {error}") from None
    return from_json(values, str(path))


def write(run_dir: str | Path, bundle: Bundle) -> Path:
    """config.json for `bundle` (written beside, then renamed into place)."""
    path = Path(run_dir) / "config.json"
    tmp = path.with_name("config.json.tmp")
    tmp.write_text(json.dumps(bundle.to_json(), indent=2))
    tmp.replace(path)
    return path


def read_json(run_dir: str | Path, name: str) -> dict:
    """An optional JSON file of the bundle (metrics.json, held_out.json), {} when absent or unreadable."""
    path = Path(run_dir) / name
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


def find_latest(runs_dir: str | Path = "runs") -> Path | None:
    """The newest folder under `runs_dir` holding a complete bundle (config.json + model.safetensors), or None."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    bundles = [weights.parent for weights in runs_dir.rglob("model.safetensors")
               if all((weights.parent / name).is_file() for name in REQUIRED)]
    return max(bundles, key=lambda run: (run / "model.safetensors").stat().st_mtime, default=None)
