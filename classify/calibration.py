"""Calibration: a temperature fitted on valid so that probabilities mean what they say, and how well they do (ECE)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration of Modern Neural Networks")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of softmax(logits / T) on these labels: a bounded 1-D search on log T
    (the NLL is convex in 1/T, so there is one minimum), T in [0.05, 20]."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    result = minimize_scalar(lambda log_t: negative_log_likelihood(softmax(logits, np.exp(log_t)), labels),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return round(float(np.exp(result.x)), 4)


def bin_of(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Each confidence's equal-width bin, 0 to bins - 1 (1.0 falls in the last)."""
    return np.minimum((np.asarray(confidence) * bins).astype(int), bins - 1)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
    """Per equal-width confidence bin: (count, mean confidence, accuracy); empty bins have count 0."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = bin_of(confidence, bins)
    counts = np.bincount(which, minlength=bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    safe = np.maximum(counts, 1)
    return counts, confidence_sum / safe, correct_sum / safe


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Share-weighted mean |accuracy - confidence| over equal-width bins of the top probability."""
    counts, confidence, accuracy = reliability(probabilities, labels, bins)
    return float((counts * np.abs(accuracy - confidence)).sum() / max(1, counts.sum()))


def ece_if_calibrated(probabilities: np.ndarray, bins: int = ECE_BINS, draws: int = 1000, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would read on these photos: its mean over `draws` redraws in which each
    photo's top class is right with probability its confidence. ECE reads high on few photos even when calibrated
    (about 0.08 on 110 photos of food-dev valid, 15 bins; 0.02 on 1,500 of food-dev-extra: bench/ood.py), so a
    measured ECE near this floor is as calibrated as the sample can show. Fewer draws past 20,000 photos (at least
    20), so the draws x photos matrix stays under about 80 MB."""
    probabilities = np.asarray(probabilities)
    if len(probabilities) == 0:
        return 0.0
    confidence = probabilities.max(axis=1).astype(np.float64)
    which = bin_of(confidence, bins)
    counts = np.bincount(which, minlength=bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    one_hot = np.zeros((len(confidence), bins), dtype=np.float32)
    one_hot[np.arange(len(confidence)), which] = 1
    draws = max(20, min(draws, 20_000_000 // len(confidence)))
    correct = np.random.default_rng(seed).random((draws, len(confidence))) < confidence
    correct_sum = correct.astype(np.float32) @ one_hot  # draws x bins
    return float((np.abs(correct_sum - confidence_sum).sum(axis=1) / counts.sum()).mean())


def plot_reliability(path: Path, probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> None:
    """A reliability diagram: accuracy per confidence bin against the diagonal, the ECE in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, _, accuracy = reliability(probabilities, labels, bins)
    edges = np.linspace(0, 1, bins + 1)
    fig, axis = plt.subplots(figsize=(4.5, 4.5))
    filled = counts > 0
    axis.bar(edges[:-1][filled], accuracy[filled], width=1 / bins, align="edge", edgecolor="black", alpha=0.7,
             label="accuracy")
    axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ece = expected_calibration_error(probabilities, labels, bins)
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
             title=f"reliability: ECE {ece:.3f} (n={int(counts.sum())}, {bins} bins)")
    axis.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
