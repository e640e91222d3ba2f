"""Evaluation: accuracy, top-5, average position, macro F1, per-class precision/recall and a confusion matrix."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from classify import ClassifyError
from classify import data as D
from classify import menu, report


def metrics_from_probabilities(probabilities: np.ndarray, labels: np.ndarray, classes) -> dict:
    """All scores from an N x C probability matrix and the true labels.

    average_position: the 1-based rank of the true class in each prediction, averaged within each class and then
    across classes (so a rare class counts as much as a common one); 1.0 is perfect.
    """
    classes = list(classes)
    n, num_classes = probabilities.shape
    if n == 0:
        raise ClassifyError("no images to evaluate")
    true_scores = probabilities[np.arange(n), labels]
    ranks = 1 + (probabilities > true_scores[:, None]).sum(axis=1)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class, f1s, positions = {}, [], []
    for index, name in enumerate(classes):
        support = int(confusion[index].sum())
        predicted_as = int(confusion[:, index].sum())
        hits = int(confusion[index, index])
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        position = float(ranks[labels == index].mean()) if support else None
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                           "support": support, "average_position": None if position is None else round(position, 4)}
        if support:
            f1s.append(f1)
            positions.append(position)
    k = min(5, num_classes)
    return {
        "n": int(n),
        "accuracy": round(float((predicted == labels).mean()), 4),
        "top5": round(float((ranks <= k).mean()), 4),
        "average_position": round(float(np.mean(positions)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": classes,
    }


def write_reports(out: Path, metrics: dict, classes) -> None:
    """per_class.csv, confusion_matrix.csv and confusion_matrix.png beside a bundle or an evaluation."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    with open(out / "per_class.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support", "average_position"])
        for name in classes:
            row = metrics["per_class"][name]
            writer.writerow([name, row["precision"], row["recall"], row["f1"], row["support"], row["average_position"]])
    confusion = np.array(metrics["confusion_matrix"])
    with open(out / "confusion_matrix.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, confusion):
            writer.writerow([name, *row.tolist()])
    figure = report.confusion_figure(confusion, classes, str(metrics.get("split", "?")), metrics["n"])
    report.save_figure(figure, out / "confusion_matrix.png")


def resolve_split(data: str | Path) -> Path:
    """An ImageFolder split (class folders), or a root: its test/, else its valid/."""
    data = Path(data)
    if not data.is_dir():
        raise ClassifyError(f"{data} is not a folder; --data wants an ImageFolder split or root" if data.exists()
                            else f"data folder not found: {data}")
    for split in ("test", "valid"):
        if (data / split).is_dir():
            return data / split
    if (data / "train").is_dir():
        raise ClassifyError(f"{data} has no test/ or valid/ split to evaluate on")
    return data


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """ECE (15 equal-width bins) and NLL with the fitted temperature, and without it (temperature 1); and the ECE a
    perfectly calibrated model would read on as many photos (calibration.ece_if_calibrated)."""
    from classify import calibration as C

    calibrated, raw = C.softmax(logits, temperature), C.softmax(logits, 1.0)
    return {"ece": round(C.expected_calibration_error(calibrated, labels), 4),
            "ece_if_calibrated": round(C.ece_if_calibrated(calibrated), 4),
            "nll": round(C.negative_log_likelihood(calibrated, labels), 4),
            "ece_uncalibrated": round(C.expected_calibration_error(raw, labels), 4),
            "nll_uncalibrated": round(C.negative_log_likelihood(raw, labels), 4), "temperature": temperature}


def is_held_out(split: Path, bundle) -> bool:
    """True when `split` is none of the folders the model trained or picked its epoch on, nor inside or above one.
    A bundle that does not record them (made before) names its data folder: its train/ and valid/ are used."""
    folders = list(bundle.splits.values())
    data = bundle.settings.get("data")
    if not folders and data:
        root = Path(data).resolve()
        folders = [root / "train", root / "valid"] if (root / "train").is_dir() else [root]
    if not folders:
        return False
    split = split.resolve()
    for folder in map(Path, folders):
        if split == folder or folder in split.parents or split in folder.parents:
            return False
    return True


def _score_unknown(predictor, unknown: str | Path, progress: bool) -> tuple[np.ndarray, list]:
    paths = D.images_in(Path(unknown))
    cache = D.load_cache([D.Sample(p, 0) for p in paths], predictor.cache_size, progress=progress, desc="unknown")
    if len(cache.images) == 0:
        raise ClassifyError(f"no readable images under --unknown {unknown}")
    features, logits = predictor.features_and_logits(cache.images, progress=progress)
    return predictor.menu_scores(features, logits), [f"{path}: {reason}" for path, reason in cache.skipped]


def _menu_metrics(predictor, scores, unknown, progress) -> dict:
    """on_menu_kept on the labelled photos, and with `unknown` its photos' AUROC and share rejected."""
    if scores is None:
        if unknown is not None:
            raise ClassifyError(f"{predictor.run_dir} has no on-menu statistics (made before they existed); "
                                "retrain it to use --unknown")
        return {}
    result = {"on_menu_kept": round(float(predictor.on_menu(scores, len(scores)).mean()), 4)}
    if unknown is not None:
        unknown_scores, skipped = _score_unknown(predictor, unknown, progress)
        kept = predictor.on_menu(unknown_scores, len(unknown_scores))
        result["unknown"] = {"n": len(unknown_scores), "folder": str(unknown),
                             "auroc": round(menu.auroc(scores, unknown_scores), 4),
                             "rejected": round(1 - float(kept.mean()), 4), "skipped": skipped}
    return result


REPORTS = ("evaluation.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "errors.html",
           "errors.png", "reliability.png")
WRITTEN = ".platekit-evaluate"  # what evaluate wrote in --out, with sha256s: the only files a later run replaces


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def check_out(out: Path) -> None:
    """Refuse, before any work, an --out that is a file or holds a report-named file evaluate did not write there
    (or that changed since); other files in the folder are left alone."""
    if out.exists() and not out.is_dir():
        raise ClassifyError(f"--out {out} exists and is not a folder; pick a folder")
    try:
        written = json.loads((out / WRITTEN).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        written = {}
    for name in REPORTS:
        target = out / name
        if target.exists() and (not isinstance(written, dict) or not target.is_file()
                                or written.get(name) != _sha256(target)):
            raise ClassifyError(f"{target} exists and was not written by classify evaluate; move it away or pick "
                                "another --out")


def _note_written(out: Path) -> None:
    (out / WRITTEN).write_text(json.dumps({n: _sha256(out / n) for n in REPORTS if (out / n).is_file()}, indent=1))


def evaluate(run_dir: str | Path, data: str | Path, tta: bool = False, progress: bool = False,
             out: str | Path | None = None, unknown: str | Path | None = None,
             against: str | Path | None = None, runtime: str = "auto") -> dict:
    """Score a bundle on a split; classes are matched by folder name. Writes reports to `out` when given, and on a
    held-out split (one the model neither trained nor picked its epoch on) its headline figures into the bundle.

    against: a training folder; the test photos with a near-twin there (classify.twins) are listed in the metrics.
    runtime: as `classify.load`'s; "onnx-int8" measures the 8-bit copy, and its figures stay out of the bundle's
    card (held_out.json describes the model itself).
    """
    import classify
    from classify import calibration

    if unknown is not None and not Path(unknown).is_dir():  # before the evaluation pass, not after it
        raise ClassifyError(f"--unknown folder not found: {unknown}")
    if unknown is not None and not D.images_in(Path(unknown)):
        raise ClassifyError(f"no images found under --unknown {unknown}")
    if out is not None:
        check_out(Path(out))
    predictor = classify.load(run_dir, runtime=runtime)
    split = resolve_split(data)
    classes = predictor.classes
    folders = sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown_classes = [name for name in folders if name not in classes]
    if unknown_classes:
        raise ClassifyError(f"{split} has classes the model does not know: {', '.join(unknown_classes[:5])}")
    samples = [D.Sample(path, classes.index(name)) for name in folders for path in D.images_in(split / name)]
    if not samples:
        raise ClassifyError(f"no images found under {split}")
    cache = D.load_cache(samples, predictor.cache_size, progress=progress, desc="decode")
    if len(cache.images) == 0:
        path, reason = cache.skipped[0]
        raise ClassifyError(f"none of the {len(samples)} images under {split} could be read (e.g. {path}: {reason})")
    features, logits = predictor.features_and_logits(cache.images, tta=tta, progress=progress)
    labels = cache.labels.numpy()
    probabilities = predictor.probabilities_from_logits(logits)
    metrics = metrics_from_probabilities(probabilities, labels, classes)
    metrics.update(calibration_metrics(logits, labels, predictor.temperature))
    metrics.update(_menu_metrics(predictor, predictor.menu_scores(features, logits), unknown, progress))
    metrics["skipped"] = [f"{path}: {reason}" for path, reason in cache.skipped]
    metrics["split"] = str(split)
    metrics["tta"] = tta
    metrics["runtime"] = runtime
    metrics["held_out"] = is_held_out(split, predictor.bundle)
    if against is not None:
        from classify.twins import near_twins

        metrics["near_twins"] = near_twins(cache.paths, against)
        metrics["near_twins_in_train"] = len(metrics["near_twins"])
    if out is not None:
        write_reports(Path(out), metrics, classes)
        errors = report.misclassified(probabilities, cache.labels.numpy(), cache.paths, classes)
        seen = [D.center_crop(cache.images[e.index], predictor.image_size).permute(1, 2, 0).numpy() for e in errors]
        report.write_errors(Path(out), errors, seen, metrics["n"], metrics["split"])
        calibration.plot_reliability(Path(out) / "reliability.png", probabilities, labels)
        (Path(out) / "evaluation.json").write_text(json.dumps(metrics, indent=2))
        _note_written(Path(out))
        if metrics["held_out"] and runtime != "onnx-int8":
            write_held_out(predictor.run_dir, metrics)
    return metrics


HELD_OUT_KEYS = ("split", "n", "accuracy", "top5", "average_position", "macro_f1", "ece", "tta")


def write_held_out(run_dir: Path, metrics: dict) -> Path:
    """The held-out split's headline figures, in the bundle, for the demo's card (replaced by the next such run)."""
    import time

    from classify import bundle as bundle_format

    path = Path(run_dir) / bundle_format.HELD_OUT_FILE
    values = {key: metrics[key] for key in HELD_OUT_KEYS} | {"evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(values, indent=2))
    tmp.replace(path)
    return path
