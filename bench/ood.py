"""Claims: the on-menu score rejects >= 99 % of non-food photos and >= 50 % of photos of dishes the model was not
trained on while keeping >= 95 % of in-menu photos; calibrated probabilities have ECE <= 0.04.

Trains the default model (`classify train`, CPU: lite0 head-only) on food-dev's train split; the on-menu threshold
is picked on its valid split (keep 95 %). Every photo goes through the backbone once (pooled features kept in
--work/features.npz; head-only models share the backbone, so each model's logits are its head on those arrays);
the methods are then compared on the arrays.

  protocol 1: in-menu = food-dev-extra (its 1,500 photos of the 10 classes), unknown = nonfood-dev (468 photos)
  protocol 2: train on 7 classes of food-dev; in-menu = food-dev-extra of those 7, unknown = food-dev-extra of the
              other 3 (3 fixed rotations: classes 1-3, 4-6, 7-9 in name order left out)
  calibration: ECE (15 bins) before/after the temperature, fitted on one half of food-dev valid and scored on the
               other (and swapped), and the bundle's temperature (fitted on all of valid) scored on food-dev-extra.

  python bench/ood.py [--work /tmp/platekit-ood] [--no-record]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

import classify  # noqa: E402
from classify import calibration as C  # noqa: E402
from classify import data as D  # noqa: E402
from classify import menu  # noqa: E402
from classify.train import RunConfig, train  # noqa: E402

SHARED = FOOD_DEV.parent
ROTATIONS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))
KEEP = 0.95


def train_once(data: Path, out: Path, cache: Path) -> Path:
    if not (out / "metrics.json").is_file():
        train(RunConfig(data=str(data), out=str(out), feature_cache=str(cache), keep=KEEP))
    return out


def labelled(folder: Path, classes: list[str]) -> list[D.Sample]:
    return [D.Sample(path, classes.index(name)) for name in classes if (folder / name).is_dir()
            for path in D.images_in(folder / name)]


def features_of(predictor, work: Path, sets: dict) -> dict:
    """{set: (features, labels, paths)}, computed once per image and kept in work/features.npz."""
    store = work / "features.npz"
    if store.is_file():
        loaded = np.load(store, allow_pickle=False)
        return {name: (loaded[f"{name}.x"], loaded[f"{name}.y"], loaded[f"{name}.paths"]) for name in sets}
    out, arrays = {}, {}
    for name, samples in sets.items():
        started = time.time()
        cache = D.load_cache(samples, predictor.cache_size, progress=True, desc=name)
        x, _ = predictor.features_and_logits(cache.images, progress=True)
        out[name] = (x, cache.labels.numpy(), np.array([str(p) for p in cache.paths]))
        arrays.update({f"{name}.x": x, f"{name}.y": out[name][1], f"{name}.paths": out[name][2]})
        print(f"{name}: {len(x)} photos in {time.time() - started:.0f} s ({len(cache.skipped)} unreadable)", flush=True)
    np.savez(store, **arrays)
    return out


def head_logits(predictor, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return predictor.model.head(torch.from_numpy(x).float()).numpy()


def mahalanobis_fit(x: np.ndarray, y: np.ndarray):
    """Class means and one shared (Ledoit-Wolf shrunk: 1,280 dimensions, a few hundred photos) precision matrix;
    plus the whole-set Gaussian for the relative Mahalanobis distance (Ren et al. 2021)."""
    from sklearn.covariance import LedoitWolf

    means = np.stack([x[y == c].mean(0) for c in np.unique(y)])
    shared = LedoitWolf().fit(x - means[np.searchsorted(np.unique(y), y)]).precision_
    background = LedoitWolf().fit(x)
    return means, shared, background.location_, background.precision_


def mahalanobis_scores(fit, x: np.ndarray, relative: bool) -> np.ndarray:
    means, shared, centre, background = fit
    def squared(offset, precision):
        return ((offset @ precision) * offset).sum(axis=1)
    distances = np.stack([squared(x - m, shared) for m in means], axis=1)
    if relative:
        distances = distances - squared(x - centre, background)[:, None]
    return -distances.min(axis=1)


def hidden_of(predictor, x: np.ndarray) -> np.ndarray:
    """The mlp head's hidden layer (after its ReLU): the trained features the last linear layer reads."""
    with torch.inference_mode():
        return predictor.model.head[:2](torch.from_numpy(x).float()).numpy()


def vim_score(predictor, train_x: np.ndarray):
    """ViM (Wang et al. 2022) on the head's hidden layer: energy minus the scaled norm of the part of the hidden
    features outside their principal subspace (the first half of the dimensions, at most 128), origin at -W^+ b."""
    last = predictor.model.head[-1]
    origin = -(torch.linalg.pinv(last.weight.detach()) @ last.bias.detach()).numpy()
    hidden = hidden_of(predictor, train_x) - origin
    _, _, vt = np.linalg.svd(hidden, full_matrices=False)
    null = vt[min(hidden.shape[1] // 2, 128):].T
    alpha = head_logits(predictor, train_x).max(1).mean() / np.linalg.norm(hidden @ null, axis=1).mean()

    def score(x):
        residual = np.linalg.norm((hidden_of(predictor, x) - origin) @ null, axis=1)
        return torch.logsumexp(torch.from_numpy(head_logits(predictor, x)), 1).numpy() - alpha * residual
    return score


def per_class_knn(predictor, train_x, train_y, valid_x):
    """Cosine similarity to the nearest training photo of the predicted class, standardized by the valid photos
    predicted as that class (each dish its own spread)."""
    bank = menu.normalized(train_x)

    def raw(x):
        similarity = (menu.normalized(x) @ bank.T).numpy()
        predicted = head_logits(predictor, x).argmax(1)
        return np.array([similarity[i, train_y == c].max() for i, c in enumerate(predicted)]), predicted
    valid_raw, valid_predicted = raw(valid_x)
    stats = {c: (valid_raw[valid_predicted == c].mean(), valid_raw[valid_predicted == c].std() + 1e-6)
             if (valid_predicted == c).sum() > 2 else (valid_raw.mean(), valid_raw.std() + 1e-6)
             for c in np.unique(train_y)}

    def score(x):
        values, predicted = raw(x)
        return np.array([(v - stats[c][0]) / stats[c][1] for v, c in zip(values, predicted)])
    return score


def hidden_methods(predictor, train_x, train_y, valid_x, knn, max_logit, summed) -> dict:
    """The scores that need the mlp head's hidden layer, and the combinations tried with them (2026-12-02)."""
    if predictor.bundle.head != "mlp":
        return {}
    hidden_bank = menu.normalized(hidden_of(predictor, train_x))
    hidden_both = menu.normalized(hidden_of(predictor, np.concatenate([train_x, valid_x])))
    knn_hidden = (lambda x: menu.scores(hidden_bank, hidden_of(predictor, x), k=1),
                  lambda x: menu.scores(hidden_both, hidden_of(predictor, x), k=1))
    vim = vim_score(predictor, train_x)
    per_class = per_class_knn(predictor, train_x, train_y, valid_x)
    return {
        "kNN cosine on the head's hidden layer": knn_hidden,
        "ViM (hidden layer)": (vim, vim),
        "kNN to the predicted class, standardized per class": (per_class, per_class),
        "kNN + kNN on the hidden layer": summed(knn, knn_hidden),
        "kNN + ViM": summed(knn, (vim, vim)),
        "kNN + 2 x max-logit (the default since 2026-12-02)": summed(knn, max_logit, weights=(1, 2)),
        "kNN to the predicted class + max-logit": summed((per_class, per_class), max_logit),
    }


def methods(predictor, train_x: np.ndarray, train_y: np.ndarray, valid_x: np.ndarray) -> dict:
    """name -> (function(features) -> valid photos' scores, function(features) -> new photos' on-menu scores);
    higher is more like the menu. As in classify.train, kNN scores valid against the training photos and new photos
    against training + valid ("train only": new photos against the training photos alone too)."""
    bank, both = menu.normalized(train_x), menu.normalized(np.concatenate([train_x, valid_x]))
    fit = mahalanobis_fit(train_x, train_y)
    t = predictor.temperature

    def logits(x):
        return head_logits(predictor, x)

    def same(score):
        return score, score

    def summed(*pairs, weights=None):
        """Several scores in one: each standardized by its valid photos' mean and spread, then added (weighted)."""
        stats = [(v(valid_x).mean(), v(valid_x).std() + 1e-12) for v, _ in pairs]
        weights = weights or (1,) * len(pairs)

        def combine(x, which):
            return sum(w * (pair[which](x) - m) / sd for w, pair, (m, sd) in zip(weights, pairs, stats))
        return (lambda x: combine(x, 0)), (lambda x: combine(x, 1))
    knn = (lambda x: menu.scores(bank, x, k=1), lambda x: menu.scores(both, x, k=1))
    max_logit = same(lambda x: logits(x).max(1))
    energy = same(lambda x: torch.logsumexp(torch.from_numpy(logits(x)), 1).numpy())
    return {
        "kNN cosine, k=1 (the default until 2026-12-02)": knn,
        "kNN cosine, k=1, train only": same(lambda x: menu.scores(bank, x, k=1)),
        "kNN cosine, k=5": (lambda x: menu.scores(bank, x, k=5), lambda x: menu.scores(both, x, k=5)),
        "Mahalanobis (class-conditional)": same(lambda x: mahalanobis_scores(fit, x, relative=False)),
        "relative Mahalanobis": same(lambda x: mahalanobis_scores(fit, x, relative=True)),
        "energy": same(lambda x: torch.logsumexp(torch.from_numpy(logits(x)), 1).numpy()),
        "max-logit": same(lambda x: logits(x).max(1)),
        "max-softmax (calibrated)": same(lambda x: C.softmax(logits(x), t).max(1)),
        "kNN k=1 + max-logit (standardized, summed)": summed(knn, max_logit),
        "kNN k=1 + energy (standardized, summed)": summed(knn, energy),
        **hidden_methods(predictor, train_x, train_y, valid_x, knn, max_logit, summed),
    }


def score_protocol(predictor, train_x, train_y, valid_x, in_x, unknown_x) -> dict:
    """Per method: AUROC (in-menu vs unknown), share of unknown rejected and of in-menu kept at the valid threshold;
    first the bundle's own rule, as Predictor.menu_scores and the bundle's threshold give it."""
    inside, outside = (predictor.menu_scores(x, head_logits(predictor, x)) for x in (in_x, unknown_x))
    rows = {f"the bundle's rule ({predictor.bundle.menu_method})": (
        menu.auroc(inside, outside), float((~predictor.on_menu(outside, len(outside))).mean()),
        float(predictor.on_menu(inside, len(inside)).mean()))}
    for name, (score_valid, score) in methods(predictor, train_x, train_y, valid_x).items():
        threshold = menu.pick_threshold(score_valid(valid_x), KEEP)
        inside, outside = score(in_x), score(unknown_x)
        rows[name] = (menu.auroc(inside, outside), float((outside < threshold).mean()),
                      float((inside >= threshold).mean()))
    return rows


def calibration_rows(predictor, valid, extra) -> list:
    """ECE before/after: halves of valid (fit on one, score the other, swap), and the bundle's T on extra; beside
    each, the ECE a perfectly calibrated model would read on as many photos (calibration.ece_if_calibrated)."""
    logits, labels = head_logits(predictor, valid[0]), valid[1]
    half = np.zeros(len(labels), bool)
    for c in np.unique(labels):  # every other photo of each class, in path order
        half[np.flatnonzero(labels == c)[::2]] = True
    before, after, floors, temperatures = [], [], [], []
    for fit_on in (half, ~half):
        t = C.fit_temperature(logits[fit_on], labels[fit_on])
        temperatures.append(t)
        before.append(C.expected_calibration_error(C.softmax(logits[~fit_on], 1.0), labels[~fit_on]))
        after.append(C.expected_calibration_error(C.softmax(logits[~fit_on], t), labels[~fit_on]))
        floors.append(C.ece_if_calibrated(C.softmax(logits[~fit_on], t)))
    extra_probabilities = C.softmax(head_logits(predictor, extra[0]), predictor.temperature)
    extra_raw = C.softmax(head_logits(predictor, extra[0]), 1.0)
    return [[f"food-dev valid, half/half swapped (n={half.sum()}/{(~half).sum()})", f"{np.mean(temperatures):.3f}",
             f"{np.mean(before):.4f}", f"{np.mean(after):.4f}", f"{np.mean(floors):.4f}"],
            [f"food-dev-extra (n={len(extra[1])}), bundle's T from all of valid", f"{predictor.temperature:.3f}",
             f"{C.expected_calibration_error(extra_raw, extra[1]):.4f}",
             f"{C.expected_calibration_error(extra_probabilities, extra[1]):.4f}",
             f"{C.ece_if_calibrated(extra_probabilities):.4f}"]]


def subset_folder(work: Path, data: Path, keep: list[str], name: str) -> Path:
    """data/train|valid with only the `keep` classes, as symlinks to the photos (same contents: the feature cache
    serves them)."""
    root = work / name
    for split in ("train", "valid"):
        for cls in keep:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for photo in D.images_in(data / split / cls):
                link = folder / photo.name
                if not link.exists():
                    link.symlink_to(photo.resolve())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--extra", default=str(SHARED / "food-dev-extra"))
    parser.add_argument("--nonfood", default=str(SHARED / "nonfood-dev"))
    parser.add_argument("--work", default="/tmp/platekit-ood")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    machine_line, started = machine(), time.time()
    predictor = classify.load(train_once(data, work / "default", work / "cache"))
    assert predictor.bundle.strategy == "all", "the arrays hold the pretrained backbone's features: head-only only"
    classes = predictor.classes
    nonfood = [D.Sample(p, 0) for p in D.images_in(Path(args.nonfood))]
    arrays = features_of(predictor, work, {"train": labelled(data / "train", classes),
                                           "valid": labelled(data / "valid", classes),
                                           "extra": labelled(Path(args.extra), classes), "nonfood": nonfood})
    (train_x, train_y, _), (valid_x, valid_y, _) = arrays["train"], arrays["valid"]
    extra_x, extra_y, _ = arrays["extra"]
    results = {"protocol 1": score_protocol(predictor, train_x, train_y, valid_x, extra_x, arrays["nonfood"][0])}
    for rotation in ROTATIONS:
        kept = [c for i, c in enumerate(classes) if i not in rotation]
        model = classify.load(train_once(subset_folder(work, data, kept, f"leave-{'-'.join(map(str, rotation))}"),
                                         work / f"run-leave-{'-'.join(map(str, rotation))}", work / "cache"))
        known = np.isin(np.arange(len(classes)), [classes.index(c) for c in kept])
        results[f"protocol 2, {', '.join(classes[i] for i in rotation)} unknown"] = score_protocol(
            model, train_x[known[train_y]], np.searchsorted(np.flatnonzero(known), train_y[known[train_y]]),
            valid_x[known[valid_y]], extra_x[known[extra_y]], extra_x[~known[extra_y]])
    rows = []
    for method in results["protocol 1"]:
        p2 = np.array([results[name][method] for name in results if name.startswith("protocol 2")])
        p1 = results["protocol 1"][method]
        rows.append([method, f"{p1[0]:.4f}", f"{100 * p1[1]:.1f} %", f"{100 * p1[2]:.1f} %", f"{p2[:, 0].mean():.4f}",
                     f"{100 * p2[:, 1].mean():.1f} % ({', '.join(f'{100 * v:.0f}' for v in p2[:, 1])})",
                     f"{100 * p2[:, 2].mean():.1f} %"])
    header = ["method", "P1 AUROC", "P1 non-food rejected", "P1 in-menu kept", "P2 AUROC (mean of 3)",
              "P2 other dishes rejected (per rotation)", "P2 in-menu kept"]
    ood = table(header, rows)
    calibration = table(["ECE, 15 bins", "temperature", "before", "after", "a calibrated model at this n"],
                        calibration_rows(predictor, (valid_x, valid_y), (extra_x, extra_y)))
    body = (f"food-dev train {len(train_x)} / valid {len(valid_x)} photos; food-dev-extra {len(extra_x)}; nonfood-dev "
            f"{len(arrays['nonfood'][0])}. Thresholds picked on valid to keep {KEEP:.0%}; 'kept' is measured on "
            f"food-dev-extra. Default model: {predictor.bundle.architecture}, {predictor.bundle.strategy}, "
            f"valid accuracy {predictor.metrics['accuracy']:.3f}. Wall {time.time() - started:.0f} s.\n\n{ood}\n\n"
            f"{calibration}")
    print(body)
    if not args.no_record:
        append("On-menu score and calibration (bench/ood.py)", body, machine_line)


if __name__ == "__main__":
    main()
