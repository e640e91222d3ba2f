"""On the menu or not: how close a photo's pooled backbone features come to the training photos' (kNN cosine),
together with how strongly the head answers (its largest logit); and, where the user gave photos that are not on the
menu at training time (`classify train --not-on-menu DIR`), how unlike those it looks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from classify import ClassifyError
from classify.bundle import MENU_METHODS

# Chosen by measurement (bench/ood.py, food-dev, the CPU default's features; table in bench/RESULTS.md). The cosine
# similarity to the nearest training photo ("knn") rejects every non-food photo at 95 % of valid kept, but only 20 %
# of photos of other dishes; the head's largest logit ranks other dishes better (AUROC 0.77 against 0.72) and
# non-food worse. Both standardized by their valid photos' mean and spread and added, the logit counting twice
# ("knn+max-logit"): other dishes 28.3 % rejected (kNN alone 20.4 %) at the same share of new in-menu photos kept
# (93.3 %), non-food 99.6 % (100 %). Of 17 scores and mixes tried, none came near the 50 % target. Bundles made
# with "knn" keep it.
METHOD = "knn+max-logit"
# With photos that are not on the menu (outlier exposure; bench/ood_exposure.py, 7 classes on the menu, 1 other dish
# supplied, 2 unseen, 9 rotations): a linear classifier over the menu's classes plus one "not on the menu" class, on
# the same features; its log-odds of being on the menu and the score above, each standardized on valid, and the lower
# of the two taken (off the menu when either says so). Built in: unseen dishes rejected 44.8 % against 25.6 % with
# nothing supplied (two dishes supplied: 48.9 % of the third), non-food 99.5 %, in-menu photos kept 93.6 against
# 94.2 % (2026-12-06; 3-class menus with 2 to 6 dishes supplied: 50.4-57.4 %). A kNN to the supplied photos in its
# place rejected 31.6 %; the classifier alone lets 58 % of non-food through; five other combinations and virtual
# outliers do no better (bench/ood_variants.py).
# Until 2026-12-06 the classifier's part was -log p(not on the menu) (EXPOSED_PROB, kept for bundles made with it). That
# is bounded below by 0 and skewed: the more dishes supplied, the surer the classifier, the wider valid's spread, and
# standardized by it the part could no longer fall under the threshold. With 3 or 4 dishes supplied (bench/
# ood_dishes.py, 5-class menus) it rejected 27.8 % of an unseen dish, as many as nothing supplied; the log-odds, the
# same ranking without the floor, reject 41.8 and 44.4 % (and 44.9 against 44.4 % with one dish, 7-class menus).
EXPOSED_PROB, EXPOSED = MENU_METHODS[2], MENU_METHODS[3]  # the bundle's format names the rules (bundle.MENU_METHODS)
EXPOSED_METHODS = (EXPOSED_PROB, EXPOSED)
EXPOSURE_C = 1.0  # the classifier's inverse L2 strength: 48.3 % against 46.9 % at 0.1 (scratch run, cached features)
EXPOSURE_TENSORS = ("exposure_weight", "exposure_bias")
EXPOSED_MIX = ("rule_mean", "rule_std", "exposure_mean", "exposure_std")  # menu_mix's keys the EXPOSED rule adds
MAX_LOGIT_WEIGHT = 2.0
MIN_VALID_FOR_MIX = 10  # fewer valid photos give no spread to standardize by: the rule is then "knn" alone
DEFAULT_K = 1
KEEP = 0.95  # share of new in-menu photos (drawn like valid) the threshold keeps on the menu


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


def fit_rule(valid_knn: np.ndarray, valid_max_logit: np.ndarray, keep: float = KEEP,
             valid_exposure: np.ndarray | None = None) -> tuple[str, float, dict | None]:
    """(method, threshold, mix) for a new bundle from its valid photos' scores: METHOD, EXPOSED with
    `valid_exposure` (their `exposure_scores`), or "knn" alone when valid has too few photos to standardize by."""
    if len(valid_knn) < MIN_VALID_FOR_MIX:
        return "knn", pick_threshold(valid_knn, keep), None
    mix = fit_mix(valid_knn, valid_max_logit)
    rule = mixed(valid_knn, valid_max_logit, mix)
    if valid_exposure is None:
        return METHOD, pick_threshold(rule, keep), mix
    mix.update({"rule_mean": float(np.mean(rule)), "rule_std": float(np.std(rule)) + 1e-12,
                "exposure_mean": float(np.mean(valid_exposure)), "exposure_std": float(np.std(valid_exposure)) + 1e-12})
    return EXPOSED, pick_threshold(exposed(rule, valid_exposure, mix), keep), mix


def exposed(rule: np.ndarray, exposure: np.ndarray, mix: dict) -> np.ndarray:
    """The EXPOSED score: the lower of the "knn+max-logit" score and the exposure score, each standardized on valid."""
    return np.minimum((np.asarray(rule, np.float64) - mix["rule_mean"]) / mix["rule_std"],
                      (np.asarray(exposure, np.float64) - mix["exposure_mean"]) / mix["exposure_std"])


def fit_exposure(train_features, train_labels, outside_features, c: float = EXPOSURE_C) -> dict:
    """A multinomial logistic regression over the menu's classes plus a last one, "not on the menu", fitted on unit
    training features (standardized per dimension) and the supplied photos'; returned as one linear map on unit
    features (the standardization folded in): {"exposure_weight": (C+1) x D, "exposure_bias": C+1}, float32.
    sklearn's lbfgs fit: a few seconds for 1,000 photos of 3,840 dimensions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    inside = normalized(train_features).numpy().astype(np.float64)
    outside = normalized(outside_features).numpy().astype(np.float64)
    labels = np.asarray(train_labels, dtype=np.int64)
    scaler = StandardScaler().fit(inside)
    fitted = LogisticRegression(C=c, max_iter=3000).fit(
        scaler.transform(np.r_[inside, outside]), np.r_[labels, np.full(len(outside), labels.max() + 1)])
    weight = fitted.coef_ / scaler.scale_  # logits = ((u - mean) / scale) @ coef.T + b, folded onto u
    bias = fitted.intercept_ - weight @ scaler.mean_
    return {"exposure_weight": torch.tensor(weight, dtype=torch.float32),
            "exposure_bias": torch.tensor(bias, dtype=torch.float32)}


def exposure_scores(exposure: dict, features, method: str = EXPOSED) -> np.ndarray:
    """Per row of `features`, under `fit_exposure`'s classifier: the log-odds of being on the menu, log p(on it) -
    log p(not on it) (EXPOSED), or -log p(not on the menu) (EXPOSED_PROB, older bundles). Higher is more like the
    menu."""
    logits = (normalized(features) @ exposure["exposure_weight"].T + exposure["exposure_bias"]).double()
    if method == EXPOSED_PROB:
        return (-torch.log_softmax(logits, dim=1)[:, -1]).numpy()
    return (torch.logsumexp(logits[:, :-1], dim=1) - logits[:, -1]).numpy()


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
    """The threshold (score >= it is on the menu) that keeps at least `keep` of new in-menu photos drawn like the
    valid ones: the ceil(keep x (n + 1))-th highest of the n valid scores, split conformal prediction's finite-sample
    rank (Vovk et al. 2005; Angelopoulos & Bates 2021, section 1.1), or the lowest when n is too small for it.
    Keeping exactly keep x n of valid keeps only about keep x n / (n + 1) of new photos: 94.6 % for 95 % of 110
    (bench/menu_kept.py measured 94.8 %). A one-line rank, so no conformal library (MAPIE) is pulled in for it."""
    ordered = np.sort(np.asarray(valid_scores, dtype=np.float64))[::-1]
    if len(ordered) == 0:
        raise ClassifyError("no valid photos to pick the on-menu threshold on")
    rank = min(len(ordered), max(1, math.ceil(keep * (len(ordered) + 1) - 1e-9)))
    return float(ordered[rank - 1])


def promised_keep(n: int, keep: float = KEEP) -> float:
    """The share of new photos that `pick_threshold` on n valid scores can promise to keep: `keep`, or n / (n + 1)
    when n is too few for it (then the lowest valid score is the threshold: 12 valid photos promise 92 %, not 95 %)."""
    return keep if math.ceil(keep * (n + 1) - 1e-9) <= n else n / (n + 1)


def keep_words(n: int, keep: float = KEEP) -> str:
    """What the threshold keeps, in words, for the train log: '95% of photos like valid's', and why not when n is
    too few."""
    promised = promised_keep(n, keep)
    return f"keeps {promised:.0%} of photos like valid's" + (
        "" if promised == keep else f" (valid has {n} photos, too few to promise {keep:.0%})")


def save(path: Path, train_features, exposure: dict | None = None) -> None:
    """The training photos' unit features, float16 (about 2.5 KB a photo for lite0's 1,280 dimensions), and
    `fit_exposure`'s map where there is one (float32)."""
    from safetensors.torch import save_file

    tensors = {"bank": normalized(train_features).to(torch.float16).contiguous()}
    tensors.update({name: value.float().contiguous() for name, value in (exposure or {}).items()})
    save_file(tensors, str(path))


def load(path: Path) -> tuple[torch.Tensor, dict | None]:
    """(bank, exposure map or None) from `save`'s file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        bank = tensors["bank"].float()
    except (SafetensorError, OSError, KeyError) as error:
        raise ClassifyError(f"{path} is not readable on-menu statistics: {str(error).splitlines()[0][:120]}") from None
    if not all(name in tensors for name in EXPOSURE_TENSORS):
        return bank, None
    exposure = {name: tensors[name].float() for name in EXPOSURE_TENSORS}
    if exposure["exposure_weight"].shape != (len(exposure["exposure_bias"]), bank.shape[1]):
        raise ClassifyError(f"{path} is not readable on-menu statistics: its exposure map does not fit its bank")
    return bank, exposure


def auroc(in_menu_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that a random menu photo scores above a random unknown one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(in_menu_scores)), np.zeros(len(unknown_scores))]
    return float(roc_auc_score(labels, np.r_[in_menu_scores, unknown_scores]))
