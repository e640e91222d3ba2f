"""`export`: write OUT/train|valid|test/<category>/*.jpg and OUT/manifest.csv from the accepted images."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from curate import CurateError
from curate.dedup import DEFAULT_SIMILARITY, DEFAULT_THRESHOLD_BITS, group_labels, pairs_within, similar_pairs
from curate.hashing import hash_files
from curate.images import crop, open_image
from curate.quality import FLAGS
from curate.workspace import ImageRecord, Workspace, as_text, resolved

SPLITS = ("train", "valid", "test")
JPEG_QUALITY = 95
# Written first into every export folder (work folder and finished OUT): with manifest.csv and export.json it is how
# --overwrite and the clean-up of a killed run know a folder is export's own before they delete it.
MARKER = ".curate-export"
INVENTORY = (MARKER, "manifest.csv", "export.json")
WRITTEN_NAME = re.compile(r"(train|valid|test)/[^/]+/(\d{7}|aug-\d{7}-\d{5})\.jpg")
STALE_NAME = re.compile(r"\.(partial|old)-(\d+)")
MAX_BALANCE = 10_000  # --balance's ceiling: each class's augmented copies cost disk and time without end past it


@dataclass(frozen=True)
class ExportConfig:
    """Settings of one export; the CLI takes its defaults from here and OUT/export.json records them."""

    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    balance: int = 0  # top each training class up to this many images with augmented copies (0: off)
    include_pending: bool = False
    min_per_class: int = 1
    exclude_flags: tuple[str, ...] = ()
    threshold_bits: int = DEFAULT_THRESHOLD_BITS  # near-duplicates within this distance share a split
    similarity: float = DEFAULT_SIMILARITY  # and so do those whose cached embeddings are this close (cosine)
    overwrite: bool = False


@dataclass(frozen=True)
class ExportReport:
    out: Path
    counts: dict[str, dict[str, int]]  # category -> split (and "augmented") -> images
    files: int
    groups_kept: int = 0  # near-duplicate groups (2+ exported images) kept inside one split


def _groups(ws: Workspace, records: list[ImageRecord], threshold_bits: int, similarity: float) -> np.ndarray:
    """A group label per record: near-duplicates (phash, and cached embeddings: nothing is embedded here) and
    duplicate_of links share a label."""
    from curate.embeddings import cached_vectors

    hashes = ws.hashes("phash")
    missing = [r for r in records if r.id not in hashes]
    if missing:
        values, ok = hash_files([ws.abspath(r) for r in missing], "phash")
        new = {r.id: int(v) for r, v, good in zip(missing, values, ok) if good}
        if not ws.read_only:  # a cache: a read-only workspace computes them again next time
            ws.set_hashes("phash", new)
        hashes.update(new)
    index = {r.id: k for k, r in enumerate(records)}
    hashed = [k for k, r in enumerate(records) if r.id in hashes]
    i, j = pairs_within(np.array([hashes[records[k].id] for k in hashed], dtype=np.uint64), threshold_bits)
    hashed = np.array(hashed, dtype=np.int64)
    edges_i, edges_j = [hashed[i]], [hashed[j]]
    vectors = cached_vectors(ws, records)
    embedded = np.array([k for k, r in enumerate(records) if r.id in vectors], dtype=np.int64)
    if len(embedded) >= 2:
        i, j, _ = similar_pairs(np.stack([vectors[records[k].id] for k in embedded]), similarity)
        edges_i.append(embedded[i])
        edges_j.append(embedded[j])
    # duplicate_of links, also through a kept image that is not exported itself
    extra: dict[int, int] = {}
    for k, r in enumerate(records):
        if r.duplicate_of is not None:
            target = index.get(r.duplicate_of)
            if target is None:
                target = extra.setdefault(r.duplicate_of, len(records) + len(extra))
            edges_i.append(np.array([k]))
            edges_j.append(np.array([target]))
    labels = group_labels(len(records) + len(extra), np.concatenate(edges_i), np.concatenate(edges_j))
    return labels[:len(records)]



def assign_splits(records: list[ImageRecord], labels: np.ndarray, fractions: tuple[float, float, float],
                  seed: int) -> dict[int, str]:
    """image id → split; stratified per category, whole groups at a time, reproducible by seed."""
    groups: dict[int, list[ImageRecord]] = {}
    for r, label in zip(records, labels):
        groups.setdefault(int(label), []).append(r)
    by_category: dict[str, list[list[ImageRecord]]] = {}
    for members in groups.values():
        members.sort(key=lambda r: r.id)
        by_category.setdefault(members[0].category, []).append(members)
    rng = np.random.default_rng(seed)
    split_of: dict[int, str] = {}
    for category in sorted(by_category):
        cat_groups = sorted(by_category[category], key=lambda g: g[0].id)
        cat_groups = [cat_groups[k] for k in rng.permutation(len(cat_groups))]
        n = sum(len(g) for g in cat_groups)
        n_valid, n_test = round(fractions[1] * n), round(fractions[2] * n)
        target = {"train": n - n_valid - n_test, "valid": n_valid, "test": n_test}
        have = dict.fromkeys(SPLITS, 0)
        for g in cat_groups:
            split = max(SPLITS, key=lambda s: (target[s] - have[s], s == "train"))
            have[split] += len(g)
            for r in g:
                split_of[r.id] = split
    return split_of


def _augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random affine copy: rotation ±15°, scale 0.9-1.1, shift ±5%, horizontal flip half the time."""
    w, h = image.size
    out = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR,
                       translate=(rng.uniform(-0.05, 0.05) * w, rng.uniform(-0.05, 0.05) * h))
    scale = rng.uniform(0.9, 1.1)
    cw, ch = min(w, round(w / scale)), min(h, round(h / scale))
    out = out.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).resize((w, h), Image.Resampling.BILINEAR)
    return ImageOps.mirror(out) if rng.random() < 0.5 else out


def _check_originals(ws: Workspace, records: list[ImageRecord]) -> None:
    """Refuse, before anything is written, an export some of whose originals have gone from the workspace."""
    lost = [r for r in records if not ws.abspath(r).is_file()]
    if lost:
        raise CurateError(f"{len(lost)} image(s) to export have lost their file (e.g. #{lost[0].id}, "
                          f"{ws.abspath(lost[0])}): run `python -m curate check`, which flags them unreadable, then "
                          "export with --exclude-flag unreadable")


def _write(ws: Workspace, record: ImageRecord, dest: Path) -> None:
    if record.crop is None and record.format == "JPEG":
        shutil.copyfile(ws.abspath(record), dest)  # byte copy: no re-encoding loss
        return
    image = open_image(ws.abspath(record), mode="RGB")
    if record.crop is not None:
        image = crop(image, record.crop)
    image.save(dest, "JPEG", quality=JPEG_QUALITY)


def _inventory(folder: Path) -> set[str]:
    """The files a finished export in `folder` lists (none when its export.json or manifest.csv is missing)."""
    try:
        json.loads((folder / "export.json").read_text(encoding="utf-8"))["config"]
        with open(folder / "manifest.csv", newline="", encoding="utf-8") as fh:
            return {row["path"] for row in csv.DictReader(fh)} | set(INVENTORY)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return set()


def _foreign_file(folder: Path, finished: bool = True) -> str | None:
    """The first file in `folder` export did not write (None when everything in it is export's): a finished export's
    are export.json, manifest.csv, the files manifest.csv lists and the marker; a work folder left by a killed run
    holds the marker and files named as export names them. Symlinks are never export's."""
    if folder.is_symlink() or not folder.is_dir():
        return folder.name
    listed = _inventory(folder) if finished else None
    files, unreadable = 0, []
    for base, dirs, names in os.walk(folder, onerror=unreadable.append):
        dirs.sort()
        for name in dirs + sorted(names):
            path = Path(base, name)
            rel = path.relative_to(folder).as_posix()
            if name in dirs and not path.is_symlink():
                ours = rel.split("/")[0] in SPLITS and rel.count("/") <= 1
            else:
                files += 1
                ours = path.is_file() and not path.is_symlink() and (
                    rel in listed if listed is not None else rel in INVENTORY or WRITTEN_NAME.fullmatch(rel))
            if not ours:
                return rel
    if unreadable:  # a folder it cannot list may hold anything
        return Path(unreadable[0].filename).relative_to(folder).as_posix()
    if not finished and files and not (folder / MARKER).is_file():
        return MARKER + " (missing)"
    return None


def _check_out(ws: Workspace, out: Path, overwrite: bool) -> None:
    if out == ws.root or ws.root in out.parents:
        raise CurateError(f"export into a folder outside the workspace ({ws.root})")
    if out in ws.root.parents:
        raise CurateError(f"{out} holds the workspace ({ws.root}); export into a folder outside it")
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise CurateError(f"{out} already exists; choose a new folder or pass --overwrite")
    if not out.is_dir():
        raise CurateError(f"{out} is a file, not an earlier export; --overwrite only replaces a folder curate export "
                          f"wrote: choose a new name or move the file away")
    foreign = _foreign_file(out)
    if foreign:
        raise CurateError(f"{out} holds {foreign!r}, which curate export did not write; --overwrite only replaces an "
                          f"earlier export: choose a new folder or move that away")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Work folders of killed exports into `out`: only those of a process that is gone and holding export's files."""
    for stale in out.parent.iterdir() if out.parent.is_dir() else ():
        match = stale.name.startswith(f".{out.name}.") and STALE_NAME.fullmatch(stale.name[len(out.name) + 1:])
        if match and not _alive(int(match[2])) and _foreign_file(stale, finished=False) is None:
            shutil.rmtree(stale, ignore_errors=True)


def _check_splits(counts: dict[str, dict[str, int]], fractions) -> None:
    """Refuse what `classify train` would: a class without training images, or no validation images at all."""
    split = " ".join(f"{f:g}" for f in fractions)
    empty = [c for c, n in counts.items() if n["train"] == 0]
    if empty:
        n = sum(counts[empty[0]].values())
        more = f" ({len(empty) - 1} more)" if len(empty) > 1 else ""
        raise CurateError(f"class {empty[0]!r} would get no train/ images ({n} images, --split {split}); give train "
                          f"a larger share or accept more images{more}")
    if not any(n["valid"] for n in counts.values()):
        smallest = min(counts, key=lambda c: sum(counts[c].values()))
        raise CurateError(f"valid/ would get no images (--split {split}; smallest class {smallest!r} has "
                          f"{sum(counts[smallest].values())}); classify train needs some: give valid a larger share "
                          f"or accept more images")


def export(ws: Workspace, out: str | Path, config: ExportConfig = ExportConfig(), progress: bool = False) -> ExportReport:
    """Export accepted images (and pending with include_pending) as an ImageFolder tree.

    Everything is written into a hidden sibling folder first and renamed into place at the end,
    so a failure or a kill leaves either the previous OUT or nothing, never half an export.
    Originals are only read; crops are applied to the copies. A split no image falls into is not written.
    """
    out = resolved(out)
    if len(config.split) != 3 or not all(math.isfinite(f) and f >= 0 for f in config.split) \
            or abs(sum(config.split) - 1) > 1e-6:
        raise CurateError(f"--split needs three non-negative fractions summing to 1, got {list(config.split)}")
    if config.seed < 0 or not 0 <= config.balance <= MAX_BALANCE or config.min_per_class < 0 \
            or not 0 <= config.threshold_bits <= 64:
        raise CurateError(f"--seed and --min-per-class must be >= 0, --balance 0 to {MAX_BALANCE:,} and "
                          "--threshold-bits 0 to 64")
    unknown = sorted(set(config.exclude_flags) - set(FLAGS))
    if unknown:
        raise CurateError(f"unknown quality flag {unknown[0]!r}; use one of {', '.join(FLAGS)}")
    _check_out(ws, out, config.overwrite)
    statuses = ("accepted", "pending") if config.include_pending else ("accepted",)
    records = [r for r in ws.list_images(status=statuses) if not set(r.flags) & set(config.exclude_flags)]
    per_category = {c: 0 for c, s in ws.stats().items() if s["total"]}
    for r in records:
        per_category[r.category] = per_category.get(r.category, 0) + 1
    if not per_category:
        raise CurateError("the workspace has no images; import or scrape some first")
    what = "accepted" + ("/pending" if config.include_pending else "")
    short = [(c, n) for c, n in per_category.items() if n < config.min_per_class]
    if short:
        c, n = short[0]
        raise CurateError(f"class {c!r} has {n} {what} images (--min-per-class {config.min_per_class}); "
                          f"accept more or drop the class" + (f" ({len(short) - 1} more short)" if len(short) > 1 else ""))
    if not records:
        raise CurateError(f"no {what} images to export; review some first (or pass --include-pending)")
    _check_originals(ws, records)

    labels = _groups(ws, records, config.threshold_bits, config.similarity)
    split_of = assign_splits(records, labels, config.split, config.seed)
    counts = {c: dict.fromkeys((*SPLITS, "augmented"), 0) for c in per_category if per_category[c]}
    for r in records:
        counts[r.category][split_of[r.id]] += 1
    _check_splits(counts, config.split)
    groups_kept = int((np.bincount(labels) >= 2).sum())

    _remove_stale(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.mkdir()
        (tmp / MARKER).write_text("written by `python -m curate export`; its --overwrite replaces this folder\n")
        rows = _write_tree(ws, records, split_of, counts, config, tmp, progress)
        (tmp / "export.json").write_text(json.dumps({"config": asdict(config), "workspace": as_text(ws.root),
                                                     "counts": counts, "groups_kept": groups_kept}, indent=2,
                                                    ensure_ascii=False))
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            try:
                tmp.rename(out)
            except BaseException:
                trash.rename(out)
                raise
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(out, counts, len(rows), groups_kept)


def _write_tree(ws: Workspace, records: list[ImageRecord], split_of: dict[int, str], counts: dict, config: ExportConfig,
                tmp: Path, progress: bool) -> list[list]:
    """The image files and manifest.csv into `tmp`; returns the manifest rows. Adds the augmented counts."""
    folders = ws.categories()
    rows = []
    for r in tqdm(records, desc="export", unit="img", disable=not progress):
        split = split_of[r.id]
        rel = f"{split}/{folders[r.category]}/{r.id:07d}.jpg"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        _write(ws, r, tmp / rel)
        rows.append([rel, split, r.category, r.id, r.source_url or "", r.sha256, ""])
    if config.balance:
        rng = np.random.default_rng(config.seed)
        for c in counts:
            sources = [r for r in records if r.category == c and split_of[r.id] == "train"]
            for k in range(max(0, config.balance - len(sources)) if sources else 0):
                r = sources[k % len(sources)]
                image = open_image(ws.abspath(r), mode="RGB")
                if r.crop is not None:
                    image = crop(image, r.crop)
                rel = f"train/{folders[c]}/aug-{r.id:07d}-{k:05d}.jpg"
                _augment(image, rng).save(tmp / rel, "JPEG", quality=JPEG_QUALITY)
                counts[c]["augmented"] += 1
                rows.append([rel, "train", c, r.id, r.source_url or "", "", r.id])
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "split", "category", "image_id", "source_url", "sha256", "augmented_from"])
        writer.writerows(rows)
    return rows
