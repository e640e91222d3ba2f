"""classify.calibration: the temperature fit, ECE by hand, and calibration in train and evaluate."""
import json

import numpy as np
import pytest

from badinput import run
from classify import calibration as C


def synthetic(scale: float, n: int = 600, classes: int = 4, seed: int = 0):
    """Logits whose softmax at temperature 1 would be calibrated, multiplied by `scale`: > 1 over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    probabilities = C.softmax(logits)
    labels = np.array([rng.choice(classes, p=row / row.sum()) for row in probabilities.astype(np.float64)])
    return logits * scale, labels


@pytest.mark.parametrize("scale", [4.0, 0.3])
def test_temperature_fit_lowers_ece_of_an_over_or_under_confident_model(scale):
    logits, labels = synthetic(scale)
    before = C.expected_calibration_error(C.softmax(logits), labels)
    temperature = C.fit_temperature(logits, labels)
    after = C.expected_calibration_error(C.softmax(logits, temperature), labels)
    assert temperature == pytest.approx(scale, rel=0.25)  # it undoes the scaling
    assert before > 0.1 and after < 0.05 and after < before / 2
    assert C.negative_log_likelihood(C.softmax(logits, temperature), labels) < \
        C.negative_log_likelihood(C.softmax(logits), labels)


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong) share a bin: |0.5 - 0.9| = 0.4; 0.6 (right): |1 - 0.6| = 0.4
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    labels = np.array([0, 1, 1])
    assert C.expected_calibration_error(probabilities, labels) == pytest.approx(0.4)
    counts, confidence, accuracy = C.reliability(probabilities, labels)
    assert counts.sum() == 3 and counts[13] == 2 and accuracy[13] == 0.5


@pytest.mark.parametrize("n", [110, 1500])
def test_ece_if_calibrated_is_what_a_calibrated_model_reads_at_that_sample_size(n):
    """Labels drawn from the model's own probabilities (calibrated by construction): their measured ECE averages the
    floor; the floor shrinks with more photos; an over-confident model's ECE sits far above it."""
    logits, _ = synthetic(1.0, n=n, seed=n)
    probabilities = C.softmax(logits)
    rng = np.random.default_rng(1)
    measured = [C.expected_calibration_error(probabilities, [rng.choice(4, p=row / row.sum())
                                                             for row in probabilities.astype(np.float64)])
                for _ in range(200)]
    floor = C.ece_if_calibrated(probabilities)
    assert floor == pytest.approx(np.mean(measured), rel=0.1)
    assert floor == C.ece_if_calibrated(probabilities)  # seeded: the same figure every time
    over, labels = synthetic(4.0, n=n, seed=n)
    assert C.expected_calibration_error(C.softmax(over), labels) > 2 * C.ece_if_calibrated(C.softmax(over))


def test_ece_if_calibrated_floor_falls_with_more_photos_and_handles_none():
    logits, _ = synthetic(1.0, n=2000)
    probabilities = C.softmax(logits)
    assert C.ece_if_calibrated(probabilities[:100]) > 2 * C.ece_if_calibrated(probabilities)
    assert C.ece_if_calibrated(np.zeros((0, 4))) == 0.0


def test_training_fits_a_temperature_and_evaluate_reports_ece(own_bundle, tiny_data_session, tmp_path):
    trained_bundle = own_bundle
    config = json.loads((trained_bundle / "config.json").read_text())
    metrics = json.loads((trained_bundle / "metrics.json").read_text())
    assert config["calibrated"] is True and 0.05 <= config["temperature"] <= 20
    assert metrics["ece"] <= metrics["ece_uncalibrated"] + 1e-9  # fitted on valid: no worse there
    done = run("classify", "evaluate", "--model", trained_bundle, "--data", tiny_data_session / "test", "--json",
               "--out", tmp_path / "ev")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert 0 <= result["ece"] <= 1 and result["nll"] > 0 and result["temperature"] == config["temperature"]
    assert 0 <= result["ece_if_calibrated"] <= 1  # 0 when every confidence is 1
    assert (tmp_path / "ev" / "reliability.png").stat().st_size > 5000
