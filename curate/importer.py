"""`import`: copy images in from an ImageFolder tree, a .zip of one, a flat folder, a Hugging Face dataset or the
feedback folder of a demo (`demo.py --feedback DIR`)."""
from __future__ import annotations

import os
import re
import stat
import zlib
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from tqdm import tqdm

from classify import ClassifyError, feedback
from curate import CurateError
from curate.images import IMAGE_SUFFIXES, MAX_FILE_BYTES, MIN_SIZE_PX, InvalidImage, inspect_bytes
from curate.quality import QualityConfig, flags_for_file
from curate.workspace import ImageRecord, Workspace, as_text, check_category

# Image formats known by name but not decoded here: skipped as unsupported_format rather than as "not an image".
OTHER_IMAGE_SUFFIXES = {".jxl", ".svg", ".dng", ".cr2", ".nef", ".arw", ".raw"}
# Split folders whose classes are merged: an ImageFolder tree often comes as train/valid/test.
SPLIT_NAMES = {"train", "training", "valid", "val", "validation", "test", "testing", "dev"}
# Why a file of the source was never read (counted in ImportReport.skipped): dot files and macOS resource forks,
# names that are not images, image formats not supported, zip entries whose path would leave the tree (absolute,
# "..", a drive letter), zip entries named twice, and folder entries that are not regular files (fifos, sockets);
# in a demo's feedback folder, photos no row of feedback.csv names, photos whose verdict a later one replaced, and
# rows of the log that cannot be read.
SKIP_REASONS = ("hidden", "no_image_suffix", "unsupported_format", "unsafe_path", "duplicate_name", "not_a_file",
                "unreadable_folder", "not_in_feedback_log", "superseded", "bad_feedback_row")
# The source of photos sent back from the demo: the manifest keeps what the model said beside what the user said.
FEEDBACK_SOURCE = "demo-feedback"
# Why a zip entry could not be read (counted per category like the image checks of curate.images).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError)


@dataclass(frozen=True)
class Item:
    """One image to import: its category, where it came from, and how to read its bytes."""

    category: str
    origin: str
    read: Callable[[], bytes]
    source: str = "import"
    sha256: str | None = None  # the bytes expected (a feedback log names them), or None
    predicted: tuple[str, float] | None = None  # demo feedback: the model's class and probability
    given_label: str | None = None  # demo feedback: what the user said


@dataclass
class CategoryCounts:
    added: int = 0
    already_present: int = 0  # this origin was imported before
    duplicate: int = 0  # same bytes as an image already in the workspace, under another origin
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportReport:
    """Per category: images added, already present (same origin), duplicates (same bytes) and rejected by reason;
    and the files of the source given no category, by reason (see SKIP_REASONS)."""

    source: str
    categories: dict[str, CategoryCounts]
    skipped: dict[str, int] = field(default_factory=dict)
    copies: tuple[tuple[str, ImageRecord], ...] = ()  # (origin, the stored image with its bytes) of each duplicate

    @property
    def added(self) -> int:
        return sum(c.added for c in self.categories.values())


def read_capped(stream: BinaryIO, name: str) -> bytes:
    """All of `stream`, or InvalidImage('file_too_big') once it passes MAX_FILE_BYTES (never more is held)."""
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImage("file_too_big", f"{name} is over {MAX_FILE_BYTES:,} bytes")
    return data


def _skip_reason(path: PurePosixPath) -> str | None:
    """Why a file is not an image to import, or None if it is one."""
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return "hidden"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    return "unsupported_format" if suffix in OTHER_IMAGE_SUFFIXES else "no_image_suffix"


def _layout(paths: list[PurePosixPath], category: str | None, source: str,
            skipped: Counter) -> Iterator[tuple[str, PurePosixPath]]:
    """(category, relative path) for image files laid out as ImageFolder (splits merged) or flat; every other
    file is counted in `skipped` by reason."""
    images = []
    for p in paths:
        reason = _skip_reason(p)
        if reason:
            skipped[reason] += 1
        else:
            images.append(p)
    images.sort()
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


def _read_file(path: Path) -> bytes:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end (a hand-edited feedback.csv)
        raise InvalidImage("not_a_file", f"{path} is not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise InvalidImage("file_too_big", f"{path} is over {MAX_FILE_BYTES:,} bytes")
    with open(path, "rb") as stream:  # the file may have grown since: read_capped stops past the cap anyway
        return read_capped(stream, str(path))


def _readable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def _items_from_dir(root: Path, category: str | None, skipped: Counter) -> Iterator[Item]:
    paths = []
    for p in root.rglob("*"):
        if p.is_file():
            paths.append(PurePosixPath(p.relative_to(root).as_posix()))
        elif not p.is_dir():
            skipped["not_a_file"] += 1
        elif not _readable(p):  # rglob passes over a folder it may not list without a word: count it
            skipped["unreadable_folder"] += 1
    for cat, rel in _layout(paths, category, str(root), skipped):
        path = root / rel
        yield Item(cat, as_text(path), lambda path=path: _read_file(path))


def _items_from_feedback(root: Path, skipped: Counter) -> Iterator[Item]:
    """The photos of a demo's feedback folder, each with its latest verdict in feedback.csv (a user may say "Right"
    and then correct it); files no verdict names are counted in `skipped` (not_in_feedback_log, superseded)."""
    try:
        verdicts, bad_rows = feedback.read_log(root)
    except ClassifyError as err:
        raise CurateError(str(err)) from None
    latest = {verdict.sha256: verdict for verdict in verdicts}
    named = {verdict.file for verdict in verdicts}
    kept = {verdict.file for verdict in latest.values()}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != feedback.LOG_FILE and rel not in kept:
            skipped[_skip_reason(PurePosixPath(rel)) or ("superseded" if rel in named else "not_in_feedback_log")] += 1
    if bad_rows:
        skipped["bad_feedback_row"] += bad_rows
    for verdict in latest.values():
        rel = _safe_entry_path(verdict.file)  # the log may have been edited by hand: stay inside the folder
        if rel is None:
            skipped["unsafe_path"] += 1
            continue
        path = root / rel
        yield Item(verdict.label, as_text(path), lambda path=path: _read_file(path), source=FEEDBACK_SOURCE,
                   sha256=verdict.sha256, predicted=(verdict.predicted, verdict.probability),
                   given_label=verdict.label)


def _safe_entry_path(name: str) -> PurePosixPath | None:
    """A zip entry's name as a relative path inside the tree, or None if it would point outside it."""
    path = PurePosixPath(name.replace("\\", "/"))  # zips written on Windows may use backslashes
    if path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", name) or not path.parts:
        return None
    return path


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """An entry's bytes, or InvalidImage: encrypted, file_too_big (by the directory, or past the cap while
    inflating, whatever the directory says), unsupported_compression or damaged (bad CRC, corrupt data)."""
    name = f"zip entry {info.filename}"
    if info.flag_bits & 0x1:
        raise InvalidImage("encrypted", f"{name} is encrypted")
    if info.file_size > MAX_FILE_BYTES:
        raise InvalidImage("file_too_big", f"{name} is {info.file_size:,} bytes, over {MAX_FILE_BYTES:,}")
    try:
        with archive.open(info) as stream:
            return read_capped(stream, name)
    except NotImplementedError as err:  # a compression method zipfile cannot inflate (deflate64, ...)
        raise InvalidImage("unsupported_compression", f"{name}: {err}") from None
    except ZIP_ERRORS as err:
        raise InvalidImage("damaged", f"{name} is damaged: {err}") from None


def _items_from_zip(path: Path, category: str | None, skipped: Counter) -> Iterator[Item]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise CurateError(f"cannot open {path} as a zip file: {err}") from None
    except UnicodeDecodeError:  # an entry flagged UTF-8 whose name is not: zipfile cannot list the archive at all
        raise CurateError(f"cannot open {path} as a zip file: an entry's name is flagged UTF-8 but is not") from None
    names: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        rel = _safe_entry_path(info.filename)
        if rel is None or rel in names:
            skipped["unsafe_path" if rel is None else "duplicate_name"] += 1
        else:
            names[rel] = info
    for cat, rel in _layout(list(names), category, str(path), skipped):
        info = names[rel]
        yield Item(cat, as_text(f"{path}!{info.filename}"), lambda info=info: _read_entry(archive, info))


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
        read = ((lambda image=image: image["bytes"]) if image.get("bytes")
                else (lambda image=image: _read_file(Path(image["path"]))))
        yield Item(cat, f"hf:{name}:{split or 'train'}#{i}", read)


def find_items(source: str, category: str | None = None) -> tuple[list[Item], dict[str, int]]:
    """Everything `source` offers (a folder: ImageFolder, flat with category, or a demo's feedback folder, which
    holds a feedback.csv; a .zip; or hf:NAME[:split]), and
    the files it holds that are not images to import, counted by reason (see SKIP_REASONS)."""
    skipped: Counter = Counter()
    if source.startswith("hf:"):
        return list(_items_from_hf(source[3:], category)), {}
    path = Path(source)
    if path.is_dir() and not _readable(path):
        raise CurateError(f"cannot read the folder {as_text(source)}: permission denied")
    if path.is_dir() and (path / feedback.LOG_FILE).is_file():
        if category is not None:
            raise CurateError(f"{source} is a demo's feedback folder: its labels come from {feedback.LOG_FILE}; "
                              "import it without --category (--rename still applies)")
        items = list(_items_from_feedback(path, skipped))
    elif path.is_dir():
        items = list(_items_from_dir(path, category, skipped))
    elif path.is_file() and path.suffix.lower() == ".zip":
        items = list(_items_from_zip(path, category, skipped))
    elif path.exists():
        raise CurateError(f"{source} is neither a folder, a .zip nor hf:NAME; cannot import it")
    else:
        raise CurateError(f"{source} does not exist")
    if not items:
        also = f"; skipped {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))}" if skipped else ""
        raise CurateError(f"{source} contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))}){also}")
    return items, dict(skipped)


def check_source(source: str) -> None:
    """CurateError when `source` cannot be imported at all, before a workspace is made for it."""
    if not source.startswith("hf:") and not Path(source).exists():
        raise CurateError(f"{as_text(source)} does not exist")


def _check_categories(items: list[Item], rename: dict[str, str], source: str) -> None:
    """Every class `rename` names is in the source, and every category the import makes is a valid name: checked
    before the first image is added, so a typo adds nothing."""
    classes = {item.category for item in items}
    missing = sorted(set(rename) - classes)
    if missing:
        shown = ", ".join(sorted(as_text(c) for c in classes)[:10])
        raise CurateError(f"--rename {as_text(missing[0])}=...: {as_text(source)} has no class '{as_text(missing[0])}' "
                          f"(its classes: {shown}{', ...' if len(classes) > 10 else ''})")
    for name in sorted({rename.get(c, c) for c in classes}):
        check_category(name)


def import_images(ws: Workspace, source: str, category: str | None = None, rename: dict[str, str] | None = None,
                  min_size_px: int = MIN_SIZE_PX, quality: QualityConfig = QualityConfig(),
                  progress: bool = False) -> ImportReport:
    """Copy every valid image of `source` into the workspace (the source is never modified).

    Idempotent: an image whose origin (path) is already in the workspace counts as already present, one whose
    bytes are as a duplicate. Invalid files are counted by reason (curate.images.REASONS, file_too_big, and for
    zip entries encrypted, damaged, unsupported_compression); files that are no images in the report's skipped.
    """
    rename = rename or {}
    items, skipped = find_items(source, category)
    _check_categories(items, rename, source)
    known = {r.source_url for r in ws.list_images() if r.source in ("import", FEEDBACK_SOURCE)}
    counts: dict[str, CategoryCounts] = {}
    copies: list[tuple[str, ImageRecord]] = []
    for item in tqdm(items, desc="import", unit="img", disable=not progress):
        cat = rename.get(item.category, item.category)
        c = counts.setdefault(cat, CategoryCounts())
        if item.origin in known:
            c.already_present += 1
            continue
        try:
            data = item.read()
            info = inspect_bytes(data, min_size_px=min_size_px)
            if item.sha256 is not None and info.sha256 != item.sha256:
                raise InvalidImage("changed", f"{item.origin} is not the photo its feedback row names")
        except InvalidImage as err:
            c.rejected[err.reason] = c.rejected.get(err.reason, 0) + 1
            continue
        except FileNotFoundError:  # a feedback row whose photo was deleted since
            c.rejected["missing"] = c.rejected.get("missing", 0) + 1
            continue
        except OSError:
            c.rejected["not_an_image"] = c.rejected.get("not_an_image", 0) + 1
            continue
        record = ws.add_image(data, cat, source=item.source, source_url=item.origin, info=info,
                              flags=flags_for_file(data, quality), predicted=item.predicted,
                              given_label=item.given_label)
        if record is None:
            c.duplicate += 1
            copies.append((item.origin, ws.with_sha256(info.sha256)))
        else:
            c.added += 1
    return ImportReport(source, counts, skipped, tuple(copies))
