"""The model bundle's format, owned here: what config.json holds (a frozen dataclass), read, write, find_latest."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from classify import ClassifyError
from classify.options import read_text

# 1: the untyped dict of the first bundles (no "format_version" key). 2: adds temperature, the on-menu statistics
# (menu.safetensors) and threshold, and the training splits' folders. 3: the on-menu score may mix the kNN
# similarity with the head's largest logit (menu_method "knn+max-logit", menu_mix): a reader of 2 would misread it.
# Still 3 with `train --not-on-menu` (menu_method "knn+max-logit+exposed", its classifier in menu.safetensors): the
# readers of 3 made before it refuse that method by name ("upgrade platekit") rather than misread it.
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


def from_json(values: dict, where: str = "config.json") -> Bundle:
    """A Bundle from config.json's object; a bundle written before the format had a version loads as version 1."""
    if not isinstance(values, dict):
        raise ClassifyError(f"{where} is not a JSON object")
    typed = {name: values[name] for name in TYPED if name in values}
    typed.setdefault("format_version", 1)
    if "temperature" in values and "calibrated" not in values:
        typed["calibrated"] = True
    try:
        bundle = Bundle(**typed, settings={k: v for k, v in values.items() if k not in TYPED})
        bundle = replace(bundle, classes=tuple(str(c) for c in bundle.classes), image_size=int(bundle.image_size),
                         cache_size=int(bundle.cache_size), mean=tuple(float(v) for v in bundle.mean),
                         std=tuple(float(v) for v in bundle.std), temperature=float(bundle.temperature),
                         format_version=int(bundle.format_version))
    except TypeError as error:  # a required field missing
        missing = [name for name in ("architecture", "classes", "image_size", "cache_size", "mean", "std")
                   if name not in values]
        raise ClassifyError(f"{where} lacks a required field: {', '.join(missing) or error}") from None
    except ValueError as error:
        raise ClassifyError(f"{where} has a field of the wrong kind: {error}") from None
    if bundle.format_version > FORMAT_VERSION:
        raise ClassifyError(f"{where} is bundle format {bundle.format_version}; this platekit reads up to "
                            f"{FORMAT_VERSION}: upgrade platekit")
    if len(bundle.classes) < 2 or not bundle.temperature > 0:
        raise ClassifyError(f"{where} needs at least 2 classes and a positive temperature")
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
