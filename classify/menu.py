"""On the menu or not: how close a photo's pooled backbone features come to the training photos' (kNN cosine)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from classify import ClassifyError

# Chosen by measurement (bench/ood.py, food-dev, lite0 features): the cosine similarity to the nearest training
# photo separated non-food photos and unseen dishes from the menu's better than Mahalanobis, energy, max-logit and
# max-softmax did; see bench/RESULTS.md for the table.
METHOD = "knn"
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
