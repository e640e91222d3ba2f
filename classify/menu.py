"""On the menu or not: how close a photo's pooled backbone features come to the training photos' (kNN cosine),
together with how strongly the head answers (its largest logit)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from classify import ClassifyError

# Chosen by measurement (bench/ood.py, food-dev, the CPU default's features; table in bench/RESULTS.md). The cosine
# similarity to the nearest training photo ("knn") rejects every non-food photo at 95 % of valid kept, but only 20 %
# of photos of other dishes; the head's largest logit ranks other dishes better (AUROC 0.77 against 0.72) and
# non-food worse. Both standardized by their valid photos' mean and spread and added, the logit counting twice
# ("knn+max-logit"): other dishes 28.3 % rejected (kNN alone 20.4 %) at the same share of new in-menu photos kept
# (93.3 %), non-food 99.6 % (100 %). Of 17 scores and mixes tried, none came near the 50 % target. Bundles made
# with "knn" keep it.
METHOD = "knn+max-logit"
METHODS = ("knn", "knn+max-logit")
MAX_LOGIT_WEIGHT = 2.0
MIN_VALID_FOR_MIX = 10  # fewer valid photos give no spread to standardize by: the rule is then "knn" alone
DEFAULT_K = 1
KEEP = 0.95  # share of valid photos the threshold keeps on the menu


def normalized(features) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)


def scores(bank: torch.Tensor, features, k: int = DEFAULT_K, batch_size: int = 1024) -> np.ndarray:
    """The on-menu score of each row of `features` (N x D pooled features): the cosine similarity to its k-th
    nearest row of `bank` (training features, unit length). Higher is more like the menu."""
    bank = bank.float()
    query = normalized(features)
    k = max(1, min(k, len(bank)))
    out = []
    for start in range(0, len(query), batch_size):
        similarity = query[start:start + batch_size] @ bank.T
        out.append(similarity.topk(k, dim=1).values[:, -1])
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def fit_rule(valid_knn: np.ndarray, valid_max_logit: np.ndarray, keep: float = KEEP) -> tuple[str, float, dict | None]:
    """(method, threshold, mix) for a new bundle from its valid photos' two scores: METHOD, or "knn" alone when
    valid has too few photos to standardize by."""
    if len(valid_knn) < MIN_VALID_FOR_MIX:
        return "knn", pick_threshold(valid_knn, keep), None
    mix = fit_mix(valid_knn, valid_max_logit)
    return METHOD, pick_threshold(mixed(valid_knn, valid_max_logit, mix), keep), mix


def fit_mix(valid_knn: np.ndarray, valid_max_logit: np.ndarray, weight: float = MAX_LOGIT_WEIGHT) -> dict:
    """The standardization "knn+max-logit" applies, from the valid photos' two scores (config.json's menu_mix)."""
    return {"knn_mean": float(np.mean(valid_knn)), "knn_std": float(np.std(valid_knn)) + 1e-12,
            "max_logit_mean": float(np.mean(valid_max_logit)), "max_logit_std": float(np.std(valid_max_logit)) + 1e-12,
            "max_logit_weight": float(weight)}


def mixed(knn: np.ndarray, max_logit: np.ndarray, mix: dict) -> np.ndarray:
    """The "knn+max-logit" score: each part standardized by `fit_mix`'s figures, the logit weighted, added."""
    return ((np.asarray(knn, np.float64) - mix["knn_mean"]) / mix["knn_std"] + mix["max_logit_weight"]
            * (np.asarray(max_logit, np.float64) - mix["max_logit_mean"]) / mix["max_logit_std"])


def pick_threshold(valid_scores: np.ndarray, keep: float = KEEP) -> float:
    """The highest threshold that keeps at least `keep` of the valid photos (score >= threshold is on the menu)."""
    ordered = np.sort(np.asarray(valid_scores, dtype=np.float64))[::-1]
    if len(ordered) == 0:
        raise ClassifyError("no valid photos to pick the on-menu threshold on")
    return float(ordered[max(1, math.ceil(keep * len(ordered) - 1e-9)) - 1])


def save(path: Path, train_features) -> None:
    """The training photos' unit features, float16 (about 2.5 KB a photo for lite0's 1,280 dimensions)."""
    from safetensors.torch import save_file

    save_file({"bank": normalized(train_features).to(torch.float16).contiguous()}, str(path))


def load(path: Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["bank"].float()
    except (SafetensorError, OSError, KeyError) as error:
        raise ClassifyError(f"{path} is not readable on-menu statistics: {str(error).splitlines()[0][:120]}") from None


def auroc(in_menu_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that a random menu photo scores above a random unknown one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(in_menu_scores)), np.zeros(len(unknown_scores))]
    return float(roc_auc_score(labels, np.r_[in_menu_scores, unknown_scores]))
