"""classify.report: the errors page and picture of an evaluation, and what the confusion and curve plots say."""
from __future__ import annotations

import shutil
from html.parser import HTMLParser

import numpy as np

from badinput import run
from classify import report
from classify.predict import Predictor


class ErrorRows(HTMLParser):
    """The rows of errors.html: (true, predicted, confidence, path) and the images' src, in page order."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.cell = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("class") == "error":
            self.rows.append({})
        elif tag == "td" and self.rows and attrs.get("class"):
            self.cell = attrs["class"]
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        if self.cell:
            self.rows[-1][self.cell] = self.rows[-1].get(self.cell, "") + data

    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None


def test_misclassified_worst_first_by_hand():
    probabilities = np.array([[0.6, 0.3, 0.1],   # right
                              [0.2, 0.7, 0.1],   # true a, says b at 0.7
                              [0.1, 0.1, 0.8],   # true b, says c at 0.8: the worst
                              [0.25, 0.7, 0.05]])  # true c, says b at 0.7, p(c) 0.05: worse than row 1
    errors = report.misclassified(probabilities, np.array([0, 0, 1, 2]), ["w", "x", "y", "z"], ["a", "b", "c"])
    assert [(e.path, e.true, e.predicted, e.confidence) for e in errors] == [
        ("y", "b", "c", 0.8), ("z", "c", "b", 0.7), ("x", "a", "b", 0.7)]


def test_errors_page_escapes_names_and_embeds_the_images():
    error = report.Misclassified(0, "photos/<script>.jpg", "<b>mac & cheese</b>", 'pho "special"', 0.9, 0.05)
    page = report.errors_html([error], [np.zeros((40, 40, 3), dtype=np.uint8)], "1 of 3 <misclassified>")
    assert "<b>mac" not in page and "&lt;b&gt;mac &amp; cheese&lt;/b&gt;" in page and "<script>" not in page
    parser = ErrorRows()
    parser.feed(page)
    assert parser.rows == [{"true": "<b>mac & cheese</b>", "predicted": 'pho "special"', "confidence": "0.900",
                            "path": "photos/<script>.jpg"}]
    assert parser.images[0].startswith("data:image/jpeg;base64,")  # in the page: it works wherever it is moved


def test_confusion_matrix_names_the_split_and_n_and_curves_mark_the_kept_epoch():
    figure = report.confusion_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], "/data/export/test", 8)
    assert figure.axes[0].get_title().startswith("test split, n=8")
    history = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1 / e, "train_accuracy": 0.1 * e,
                "valid_accuracy": 0.1 * e} for e in range(1, 6)]
    figure = report.curves_figure(history, "run food: efficientnet_lite0, all", kept_epoch=3)
    assert figure._suptitle.get_text() == "run food: efficientnet_lite0, all"
    for axis in figure.axes:
        marks = [line for line in axis.get_lines() if line.get_label() == "kept: epoch 3"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [3, 3]


def test_evaluate_out_lists_exactly_the_misclassified_images_worst_first(trained_bundle, own_bundle,
                                                                         tiny_data_session, tmp_path):
    # The tiny test split, with two red soups filed as green salad: those are wrong whatever else the model does.
    split = tmp_path / "test"
    shutil.copytree(tiny_data_session / "test", split)
    for name in ("0.jpg", "1.jpg"):
        shutil.move(split / "red_soup" / name, split / "green_salad" / f"soup_{name}")
    predictor = Predictor(trained_bundle)
    expected = []
    for path in sorted(split.rglob("*.jpg")):
        (top, confidence), *_ = predictor.predict(path)
        if top != path.parent.name:
            expected.append((-confidence, path.parent.name, top, str(path)))
    assert len(expected) >= 2
    out = tmp_path / "eval"
    done = run("classify", "evaluate", "--model", own_bundle, "--data", split, "--out", out)
    assert done.returncode == 0, done.stderr
    parser = ErrorRows()
    parser.feed((out / "errors.html").read_text())
    listed = [(-float(row["confidence"]), row["true"], row["predicted"], row["path"]) for row in parser.rows]
    # exactly the misclassified images (confidences can tie at 1.0 with a tiny model's fitted temperature: the
    # order among ties is the report's own), worst first
    assert sorted(row[1:] for row in listed) == sorted(row[1:] for row in expected)
    assert [c for c, *_ in listed] == sorted(c for c, *_ in listed)
    assert len(parser.images) == len(expected)
    assert (out / "errors.png").stat().st_size > 5000 and (out / "confusion_matrix.png").is_file()
