"""`import`: copy images in from an ImageFolder tree, a .zip of one, a flat folder or a Hugging Face dataset."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from tqdm import tqdm

from curate import CurateError
from curate.images import IMAGE_SUFFIXES, MIN_SIZE_PX, InvalidImage, inspect_bytes
from curate.quality import QualityConfig, flags_for_file
from curate.workspace import Workspace

# Split folders whose classes are merged: an ImageFolder tree often comes as train/valid/test.
SPLIT_NAMES = {"train", "training", "valid", "val", "validation", "test", "testing", "dev"}


@dataclass(frozen=True)
class Item:
    """One image to import: its category, where it came from, and how to read its bytes."""

    category: str
    origin: str
    read: Callable[[], bytes]


@dataclass
class CategoryCounts:
    added: int = 0
    already_present: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportReport:
    """Per category: images added, already present (same origin or same bytes) and rejected by reason."""

    source: str
    categories: dict[str, CategoryCounts]

    @property
    def added(self) -> int:
        return sum(c.added for c in self.categories.values())


def _layout(paths: list[PurePosixPath], category: str | None, source: str) -> Iterator[tuple[str, PurePosixPath]]:
    """(category, relative path) for image files laid out as ImageFolder (splits merged) or flat."""
    images = sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") or part == "__MACOSX" for part in p.parts))
    if category is not None:
        for p in images:
            yield category, p
        return
    # A zip often wraps the tree in one top folder: strip common single-folder prefixes.
    parts = {p: p.parts for p in images}
    while parts and all(len(v) > 2 for v in parts.values()) and len({v[0] for v in parts.values()}) == 1:
        parts = {p: v[1:] for p, v in parts.items()}
    flat = [p for p, v in parts.items() if len(v) == 1]
    if flat:
        raise CurateError(f"{source} has {len(flat)} image(s) outside class folders (e.g. {flat[0]}); "
                          "for a flat folder name the class with --category")
    for p, v in parts.items():
        yield (v[1] if len(v) >= 3 and v[0].lower() in SPLIT_NAMES else v[0]), p


def _items_from_dir(root: Path, category: str | None) -> Iterator[Item]:
    paths = [PurePosixPath(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()]
    for cat, rel in _layout(paths, category, str(root)):
        path = root / rel
        yield Item(cat, str(path), path.read_bytes)


def _items_from_zip(path: Path, category: str | None) -> Iterator[Item]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise CurateError(f"cannot open {path} as a zip file: {err}") from None
    names = {PurePosixPath(i.filename): i for i in archive.infolist() if not i.is_dir()}
    for cat, rel in _layout(list(names), category, str(path)):
        info = names[rel]
        yield Item(cat, f"{path}!{info.filename}", lambda info=info: archive.read(info))


def _items_from_hf(spec: str, category: str | None) -> Iterator[Item]:
    try:
        import datasets
    except ImportError:
        raise CurateError("hf: sources need the optional 'datasets' package: pip install 'platekit[datasets]'") from None
    name, _, split = spec.partition(":")
    try:
        data = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # datasets raises many types (network, missing config, ...): report, don't crash
        raise CurateError(f"cannot load Hugging Face dataset {name!r}: {err}") from None
    image_cols = [k for k, f in data.features.items() if isinstance(f, datasets.Image)]
    label_cols = [k for k, f in data.features.items() if isinstance(f, datasets.ClassLabel)]
    if not image_cols or (category is None and not label_cols):
        raise CurateError(f"dataset {name!r} needs an image column and a class-label column (found {list(data.features)})")
    data = data.cast_column(image_cols[0], datasets.Image(decode=False))
    names = data.features[label_cols[0]].names if label_cols else None
    for i, row in enumerate(data):
        image = row[image_cols[0]]
        cat = category if category is not None else names[row[label_cols[0]]]
        read = (lambda image=image: image["bytes"]) if image.get("bytes") else (lambda image=image: Path(image["path"]).read_bytes())
        yield Item(cat, f"hf:{name}:{split or 'train'}#{i}", read)


def find_items(source: str, category: str | None = None) -> list[Item]:
    """Everything `source` offers: a folder (ImageFolder or flat with category), a .zip, or hf:NAME[:split]."""
    if source.startswith("hf:"):
        return list(_items_from_hf(source[3:], category))
    path = Path(source)
    if path.is_dir():
        items = list(_items_from_dir(path, category))
    elif path.is_file() and path.suffix.lower() == ".zip":
        items = list(_items_from_zip(path, category))
    elif path.exists():
        raise CurateError(f"{source} is neither a folder, a .zip nor hf:NAME; cannot import it")
    else:
        raise CurateError(f"{source} does not exist")
    if not items:
        raise CurateError(f"{source} contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


def import_images(ws: Workspace, source: str, category: str | None = None, rename: dict[str, str] | None = None,
                  min_size_px: int = MIN_SIZE_PX, quality: QualityConfig = QualityConfig(),
                  progress: bool = False) -> ImportReport:
    """Copy every valid image of `source` into the workspace (the source is never modified).

    Idempotent: an image whose origin (path) or bytes are already in the workspace counts as
    already present. Invalid files are skipped and counted by reason (see curate.images.REASONS).
    """
    rename = rename or {}
    items = find_items(source, category)
    known = {r.source_url for r in ws.list_images() if r.source == "import"}
    counts: dict[str, CategoryCounts] = {}
    for item in tqdm(items, desc="import", unit="img", disable=not progress):
        cat = rename.get(item.category, item.category)
        c = counts.setdefault(cat, CategoryCounts())
        if item.origin in known:
            c.already_present += 1
            continue
        try:
            data = item.read()
            info = inspect_bytes(data, min_size_px=min_size_px)
        except InvalidImage as err:
            c.rejected[err.reason] = c.rejected.get(err.reason, 0) + 1
            continue
        except OSError:
            c.rejected["not_an_image"] = c.rejected.get("not_an_image", 0) + 1
            continue
        record = ws.add_image(data, cat, source="import", source_url=item.origin, info=info,
                              flags=flags_for_file(data, quality))
        if record is None:
            c.already_present += 1
        else:
            c.added += 1
    return ImportReport(source, counts)
