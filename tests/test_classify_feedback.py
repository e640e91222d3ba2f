"""classify.feedback: photos kept byte for byte under safe folder names, one row a verdict, safe under concurrency."""
from __future__ import annotations

import hashlib
import threading

import pytest

from classify import ClassifyError, feedback
from classify.predict import Prediction
from conftest import COLOURS, make_image

CLASSES = ["red_soup", "green_salad", "blue_cheese"]
SOUP = Prediction([("red_soup", 0.81234), ("green_salad", 0.1)], True, 0.73)


def photo(tmp_path, seed: int, name: str = "plate.png") -> bytes:
    return make_image(tmp_path / "sent" / f"{seed}-{name}", COLOURS["red_soup"], seed).read_bytes()


def files_under(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_correction_keeps_the_bytes_and_appends_a_row(tmp_path):
    folder = feedback.open_folder(tmp_path / "fb")
    data = photo(tmp_path, 1)
    sha256 = hashlib.sha256(data).hexdigest()
    wrong = feedback.record(folder, data, " Green  Salad ", SOUP, CLASSES)  # the class, however it is typed
    assert wrong.label == "green_salad" and wrong.verdict == "wrong" and wrong.file == f"green_salad/{sha256}.png"
    assert (folder / wrong.file).read_bytes() == data
    right = feedback.record(folder, data, "red_soup", Prediction([("red_soup", 0.9)], True, None), CLASSES)
    other = feedback.record(folder, photo(tmp_path, 2), "Matcha Cake", SOUP, CLASSES)  # not a class: kept as typed
    assert right.verdict == "right" and other.label == "Matcha Cake" and other.file.startswith("matcha_cake/")
    verdicts, bad = feedback.read_log(folder)
    assert verdicts == [wrong, right, other] and bad == 0
    assert (wrong.predicted, wrong.probability, wrong.menu_score, right.menu_score) == ("red_soup", 0.8123, 0.73, None)
    assert (folder / feedback.LOG_FILE).read_text().splitlines()[0] == ",".join(feedback.COLUMNS)
    with pytest.raises(ClassifyError, match="own example photos"):  # e.g. the bundle's examples/
        feedback.record(folder, data, "red_soup", SOUP, CLASSES, refused=frozenset({sha256}))
    assert len(feedback.read_log(folder)[0]) == 3


def test_labels_cannot_leave_the_folder_and_refusals_write_nothing(tmp_path):
    folder = feedback.open_folder(tmp_path / "fb")
    kept = feedback.record(folder, photo(tmp_path, 3), "../../etc/passwd\n", SOUP)
    assert kept.file.startswith("etc_passwd/") and kept.label == "../../etc/passwd"
    assert files_under(tmp_path / "fb") == sorted([kept.file, feedback.LOG_FILE])
    for data, label, message in [(b"<html>not a photo</html>", "red_soup", "not an image"),
                                 (b"", "red_soup", "empty"), (photo(tmp_path, 4), "  \t", "say what it is"),
                                 (photo(tmp_path, 5), "x" * 81, "at most 80 characters")]:
        before = files_under(tmp_path)
        with pytest.raises(ClassifyError, match=message):
            feedback.record(folder, data, label, SOUP)
        assert files_under(tmp_path) == before
    assert len(feedback.read_log(folder)[0]) == 1


def test_concurrent_verdicts_never_mix_rows(tmp_path):
    folder = feedback.open_folder(tmp_path / "fb")
    photos = [photo(tmp_path, seed) for seed in range(40)]
    errors = []

    def send(index: int) -> None:
        try:
            for data in photos[index::8]:
                feedback.record(folder, data, f"dish {index}, with a comma", SOUP)
        except Exception as error:  # collected: a failure in a thread must fail the test
            errors.append(error)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    verdicts, bad = feedback.read_log(folder)
    assert bad == 0 and len(verdicts) == 40
    assert sorted(v.sha256 for v in verdicts) == sorted(hashlib.sha256(p).hexdigest() for p in photos)
    assert all((folder / v.file).is_file() for v in verdicts) and not list(folder.rglob(".tmp-*"))


def test_a_folder_that_is_not_a_feedback_folder_is_refused(tmp_path):
    (tmp_path / "notes.csv").write_text("x")
    with pytest.raises(ClassifyError, match="cannot use"):
        feedback.open_folder(tmp_path / "notes.csv")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / feedback.LOG_FILE).write_text("name,price\npho,9\n")
    with pytest.raises(ClassifyError, match="is not a feedback log"):
        feedback.open_folder(tmp_path / "other")
    assert (tmp_path / "other" / feedback.LOG_FILE).read_text() == "name,price\npho,9\n"
