"""Verdicts sent back from the demo: each photo kept as received in DIR/<label>/, one row per verdict in
DIR/feedback.csv (`curate import DIR` takes them in as pending images)."""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from classify import ClassifyError, images
from classify.bundle import EXAMPLES_DIR
from classify.files import write_new
from classify.names import class_key, folder_name

LOG_FILE = "feedback.csv"
MAX_LABEL_CHARS = 80  # a dish's name; anything longer is a sentence, not a label


@dataclass(frozen=True)
class Verdict:
    """One row of feedback.csv: a photo (`file`, relative to the folder), what the model said, what the user said."""

    time: str  # UTC, ISO 8601
    file: str  # "<label folder>/<sha256>.<ext>", '/'-separated
    sha256: str
    predicted: str
    probability: float
    menu_score: float | None  # None: the bundle has no on-menu statistics
    label: str
    verdict: str  # "right" when the label is the predicted class, else "wrong"


COLUMNS = tuple(f.name for f in fields(Verdict))


def open_folder(folder: str | Path) -> Path:
    """The feedback folder, created if missing; ClassifyError when it cannot be written or its feedback.csv is not
    one this module wrote (nothing there is ever overwritten)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ClassifyError(f"cannot use {folder} for feedback: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK):
        raise ClassifyError(f"cannot use {folder} for feedback: it is not writable")
    log = folder / LOG_FILE
    if log.exists():
        with open(log, newline="", encoding="utf-8", errors="replace") as stream:
            header = next(csv.reader(stream), None)
        if header is not None and tuple(header) != COLUMNS:
            raise ClassifyError(f"{log} is not a feedback log (its header is not {','.join(COLUMNS)}); "
                                "give --feedback another folder")
    return folder


def clean_label(text: str, classes: list[str] = ()) -> str:
    """What the user said it is, as one line; the class's own name when it names one of `classes` ('Beef Tartare' is
    beef_tartare). ClassifyError when empty or too long."""
    label = " ".join("".join(ch for ch in str(text or "") if ch.isprintable() or ch.isspace()).split())
    if not label:
        raise ClassifyError("say what it is: pick a dish or type its name")
    if len(label) > MAX_LABEL_CHARS:
        raise ClassifyError(f"a dish's name of at most {MAX_LABEL_CHARS} characters, please")
    return {class_key(name): name for name in classes}.get(class_key(label), label)


def own_photos(run_dir: str | Path) -> frozenset[str]:
    """The sha256s of a bundle's examples/: photos of its own valid split, which the demo offers as examples."""
    return frozenset(hashlib.sha256(path.read_bytes()).hexdigest()
                     for path in sorted(Path(run_dir, EXAMPLES_DIR).rglob("*")) if path.is_file())


def record(folder: str | Path, data: bytes, label: str, prediction, classes: list[str] = (),
           refused: frozenset[str] = frozenset()) -> Verdict:
    """Keep `data` (the photo's bytes as received) under folder/<label>/ and append its row to feedback.csv.

    `prediction` is the classify.predict.Prediction the model gave these bytes. Raises ClassifyError, writing
    nothing, when `data` is not an image platekit reads, the label is unusable, or its sha256 is in `refused` (the
    model's own photos, `own_photos`: a verdict on one teaches it nothing, and taken back into a dataset it would be
    a near-twin of a valid photo). Safe to call from many threads and processes at once: files are named by content
    and linked into place, and each row is one O_APPEND write.
    """
    folder = Path(folder)
    label = clean_label(label, classes)
    image = images.open_lazy(data)  # header only: the prediction has decoded it already
    extension = images.EXTENSIONS[image.format]
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 in refused:
        raise ClassifyError("this is one of the model's own example photos, so nothing was kept: try a photo of yours")
    name = f"{folder_name(label)}/{sha256}.{extension}"
    predicted, probability = prediction.top[0]
    verdict = Verdict(datetime.now(timezone.utc).isoformat(timespec="seconds"), name, sha256, predicted,
                      round(float(probability), 4),
                      None if prediction.menu_score is None else round(float(prediction.menu_score), 4), label,
                      "right" if label == predicted else "wrong")
    try:
        write_new(folder / name, data)
        _append(folder / LOG_FILE, verdict)
    except OSError as error:  # disk full, permissions: the row is written last, so no row points at a missing photo
        raise ClassifyError(f"cannot keep feedback in {folder}: {error.strerror or error}") from None
    return verdict


def _append(log: Path, verdict: Verdict) -> None:
    """One row at the end of the log, in one write to a file opened O_APPEND: the kernel places each such write
    whole at the end, so concurrent requests (threads or processes) never interleave rows. The header is linked
    into place with the file, so no row can land before it."""
    if not log.exists():
        write_new(log, _csv_line(COLUMNS))
    line = _csv_line(["" if value is None else value for value in astuple(verdict)])
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        if os.write(descriptor, line) != len(line):
            raise OSError(f"short write to {log}")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _csv_line(values) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode("utf-8")


def read_log(folder: str | Path) -> tuple[list[Verdict], int]:
    """The verdicts of folder/feedback.csv in the order given, and how many lines were not readable rows (a line
    edited by hand, cut by a full disk). ClassifyError when there is no log or it is not one."""
    log = Path(folder) / LOG_FILE
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ClassifyError(f"cannot read {log}: {error.strerror or error}") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise ClassifyError(f"{log} is not a feedback log (its header is not {','.join(COLUMNS)})")
    verdicts, bad = [], 0
    for row in rows[1:]:
        try:
            values = dict(zip(COLUMNS, row, strict=True))
            values["probability"] = float(values["probability"])
            values["menu_score"] = float(values["menu_score"]) if values["menu_score"] else None
            if not values["label"] or not values["file"] or values["verdict"] not in ("right", "wrong"):
                raise ValueError
        except ValueError:
            bad += 1
            continue
        verdicts.append(Verdict(**values))
    return verdicts, bad
