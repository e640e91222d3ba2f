"""Evaluation: accuracy, top-5, average position, macro F1, per-class precision/recall and a confusion matrix."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from classify import ClassifyError
from classify import data as D
from classify import report


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
        raise ClassifyError(f"data folder not found: {data}")
    for split in ("test", "valid"):
        if (data / split).is_dir():
            return data / split
    if (data / "train").is_dir():
        raise ClassifyError(f"{data} has no test/ or valid/ split to evaluate on")
    return data


def evaluate(run_dir: str | Path, data: str | Path, tta: bool = False, progress: bool = False,
             out: str | Path | None = None, against: str | Path | None = None) -> dict:
    """Score a bundle on a split; classes are matched by folder name. Writes reports to `out` when given.

    against: a training folder; the test photos with a near-twin there (classify.twins) are listed in the metrics.
    """
    import classify

    predictor = classify.load(run_dir)
    split = resolve_split(data)
    classes = predictor.classes
    folders = sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [name for name in folders if name not in classes]
    if unknown:
        raise ClassifyError(f"{split} has classes the model does not know: {', '.join(unknown[:5])}")
    samples = [D.Sample(path, classes.index(name)) for name in folders for path in D.images_in(split / name)]
    if not samples:
        raise ClassifyError(f"no images found under {split}")
    cache = D.load_cache(samples, predictor.cache_size, progress=progress, desc="decode")
    probabilities = predictor.probabilities_from_cache(cache.images, tta=tta, progress=progress)
    metrics = metrics_from_probabilities(probabilities, cache.labels.numpy(), classes)
    metrics["skipped"] = [f"{path}: {reason}" for path, reason in cache.skipped]
    metrics["split"] = str(split)
    metrics["tta"] = tta
    if against is not None:
        from classify.twins import near_twins

        metrics["near_twins"] = near_twins(cache.paths, against)
        metrics["near_twins_in_train"] = len(metrics["near_twins"])
    if out is not None:
        write_reports(Path(out), metrics, classes)
        errors = report.misclassified(probabilities, cache.labels.numpy(), cache.paths, classes)
        seen = [D.center_crop(cache.images[e.index], predictor.image_size).permute(1, 2, 0).numpy() for e in errors]
        report.write_errors(Path(out), errors, seen, metrics["n"], metrics["split"])
        (Path(out) / "evaluation.json").write_text(json.dumps(metrics, indent=2))
    return metrics
