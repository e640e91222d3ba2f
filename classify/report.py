"""Report figures and pages of a run or an evaluation: confusion matrix, training curves, the misclassified images."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

THUMBNAIL_PX = 160  # errors.html
FIGURE_ERRORS = 40  # errors.png shows the worst this many; errors.html lists them all


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def confusion_figure(confusion: np.ndarray, classes: list, split: str, n: int):
    """Row-normalized confusion matrix with counts, titled with the split it was computed on and its size."""
    plt = _pyplot()
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, axis = plt.subplots(figsize=(size, size + 0.4))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    # parse_math=False: a class folder named "$5 lunch" is a name, not TeX
    axis.set_xticks(range(len(classes)), classes, rotation=90, fontsize=8, parse_math=False)
    axis.set_yticks(range(len(classes)), classes, fontsize=8, parse_math=False)
    axis.set(xlabel="predicted", ylabel="true")
    name = Path(split).name or split
    title = f"{name} split, n={n}" + (f"\n{split[-60:]}" if name != split else "")
    axis.set_title(title, fontsize=9, parse_math=False)
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if confusion[i, j]:
                    axis.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                              color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def curves_figure(history: list, run: str, kept_epoch: int | None):
    """Loss and accuracy per epoch, the epoch whose weights were kept marked, the run named."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(epochs, [r["train_loss"] for r in history], label="train")
    left.plot(epochs, [r["valid_loss"] for r in history], label="valid")
    left.set(title="loss", xlabel="epoch")
    right.plot(epochs, [r["train_accuracy"] for r in history], label="train")
    right.plot(epochs, [r["valid_accuracy"] for r in history], label="valid")
    right.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    for axis in (left, right):
        if kept_epoch is not None:
            axis.axvline(kept_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {kept_epoch}")
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(run, fontsize=10, parse_math=False)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


@dataclass(frozen=True)
class Misclassified:
    """One wrong prediction: `index` into the evaluated images, the predicted class's probability (confidence)
    and the true class's."""
    index: int
    path: str
    true: str
    predicted: str
    confidence: float
    true_probability: float


def misclassified(probabilities: np.ndarray, labels: np.ndarray, paths, classes) -> list[Misclassified]:
    """The wrong predictions, worst first: most confident in the wrong class, then least probability left for the
    true one, then path."""
    predicted = probabilities.argmax(axis=1)
    rows = [Misclassified(int(i), str(paths[i]), classes[labels[i]], classes[predicted[i]],
                          float(probabilities[i, predicted[i]]), float(probabilities[i, labels[i]]))
            for i in np.flatnonzero(predicted != labels)]
    return sorted(rows, key=lambda row: (-row.confidence, row.true_probability, row.path))


def _data_url(pixels: np.ndarray) -> str:
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def errors_html(errors: list[Misclassified], thumbnails: list[np.ndarray], title: str) -> str:
    """One self-contained page (thumbnails embedded, so the folder can move): a table of the errors, worst first."""
    rows = "\n".join(
        f'<tr class="error"><td>{rank}</td><td><img src="{_data_url(pixels)}" alt=""></td>'
        f'<td class="true">{html.escape(error.true)}</td><td class="predicted">{html.escape(error.predicted)}</td>'
        f'<td class="confidence">{error.confidence:.3f}</td><td>{error.true_probability:.3f}</td>'
        f'<td class="path">{html.escape(error.path)}</td></tr>'
        for rank, (error, pixels) in enumerate(zip(errors, thumbnails), start=1))
    body = (f"<table><tr><th>#</th><th>image (as the model saw it)</th><th>true</th><th>predicted</th>"
            f"<th>confidence</th><th>p(true)</th><th>file</th></tr>\n{rows}\n</table>" if errors
            else "<p>No misclassified images.</p>")
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left;vertical-align:middle}"
            "tr:nth-child(even){background:#f4f4f4}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def errors_figure(errors: list[Misclassified], thumbnails: list[np.ndarray], title: str):
    """The worst FIGURE_ERRORS errors as a grid of thumbnails captioned true → predicted (confidence)."""
    plt = _pyplot()
    shown = min(len(errors), FIGURE_ERRORS)
    columns = max(1, min(8, shown))
    rows = max(1, -(-shown // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.2 * rows + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, error, pixels in zip(axes.flat, errors, thumbnails):
        axis.imshow(pixels)
        axis.set_title(f"{error.true}\n→ {error.predicted} ({error.confidence:.2f})", fontsize=7, parse_math=False)
    if not errors:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    more = f" (the worst {shown} shown)" if shown < len(errors) else ""
    fig.suptitle(title + more, fontsize=9, parse_math=False)
    fig.tight_layout()
    return fig


def write_errors(out: Path, errors: list[Misclassified], thumbnails: list[np.ndarray], n: int, split: str) -> None:
    """errors.html (all of them) and errors.png (the worst FIGURE_ERRORS) in `out`; thumbnails[i] is errors[i]'s
    image as the model saw it (H x W x 3 uint8)."""
    title = f"{len(errors)} of {n} images misclassified ({Path(split).name or split} split), worst first"
    (Path(out) / "errors.html").write_text(errors_html(errors, thumbnails, title), encoding="utf-8")
    save_figure(errors_figure(errors, thumbnails, title), Path(out) / "errors.png")
