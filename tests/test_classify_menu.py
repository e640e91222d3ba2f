"""classify.menu: the on-menu threshold, the score in predict and evaluate --unknown, and the held-out card file."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

import classify
from badinput import assert_refused, run, tree_digest
from classify import menu
from classify.evaluate import evaluate
from classify.train import RunConfig, train
from conftest import FAST, make_nonfood


@pytest.mark.parametrize("n, keep, kept", [(100, 0.95, 96), (220, 0.95, 210), (12, 0.95, 12), (12, 0.5, 7),
                                           (7, 1.0, 7), (20, 0.01, 1)])
def test_threshold_keeps_the_conformal_rank_of_valid(n, keep, kept):
    scores = np.random.default_rng(n).normal(size=n)
    threshold = menu.pick_threshold(scores, keep)
    assert (scores >= threshold).sum() == kept  # ceil(keep x (n + 1)), at most n


def test_threshold_keeps_at_least_the_share_asked_for_of_new_photos_drawn_like_valid():
    """Split conformal's promise, checked by drawing: over many valid sets of 110, the share of fresh photos from the
    same distribution that the threshold keeps averages at least 95 %; keeping exactly 95 % of valid falls short."""
    rng = np.random.default_rng(7)
    fresh = np.sort(rng.normal(size=200_000))
    kept, naive = [], []
    for _ in range(3000):
        valid = rng.normal(size=110)
        kept.append(1 - np.searchsorted(fresh, menu.pick_threshold(valid, 0.95)) / len(fresh))
        naive.append(1 - np.searchsorted(fresh, np.sort(valid)[::-1][math.ceil(0.95 * 110) - 1]) / len(fresh))
    assert np.mean(kept) >= 0.95 > np.mean(naive)
    assert np.mean(kept) == pytest.approx(106 / 111, abs=0.002)


@pytest.mark.parametrize("n, keep, promised", [(220, 0.95, 0.95), (19, 0.95, 0.95), (18, 0.95, 18 / 19),
                                               (12, 0.95, 12 / 13), (12, 0.5, 0.5)])
def test_the_promise_is_keep_unless_valid_has_too_few_photos(n, keep, promised):
    assert menu.promised_keep(n, keep) == pytest.approx(promised)
    scores = np.random.default_rng(n).normal(size=n)
    if promised < keep:  # too few: the threshold is the lowest valid score
        assert menu.pick_threshold(scores, keep) == scores.min()
        assert menu.keep_words(n, keep) == f"keeps {promised:.0%} of photos like valid's (valid has {n} photos, " \
                                           f"too few to promise {keep:.0%})"
    else:
        assert menu.keep_words(n, keep) == f"keeps {keep:.0%} of photos like valid's"


def test_the_rule_mixes_both_scores_only_with_enough_valid_photos_to_standardize_by():
    rng = np.random.default_rng(0)
    knn, max_logit = rng.uniform(0.5, 0.9, 40), rng.normal(6, 1.5, 40)
    method, threshold, mix = menu.fit_rule(knn, max_logit, keep=0.75)
    assert method == "knn+max-logit" and (menu.mixed(knn, max_logit, mix) >= threshold).sum() == 31  # ceil(0.75 x 41)
    assert menu.mixed(knn, max_logit, mix).mean() == pytest.approx(0, abs=1e-9)  # both parts centred on valid
    few = menu.MIN_VALID_FOR_MIX - 1
    method, threshold, mix = menu.fit_rule(knn[:few], max_logit[:few], keep=1.0)
    assert (method, mix) == ("knn", None) and threshold == pytest.approx(knn[:few].min())


def test_scores_are_cosine_to_the_nearest_training_photo():
    bank = menu.normalized(np.array([[1.0, 0.0], [0.0, 2.0]]))
    scores = menu.scores(bank, np.array([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]), k=1)
    assert scores == pytest.approx([1.0, 2 ** -0.5, 0.0], abs=1e-6)
    assert menu.scores(bank, np.array([[1.0, 1.0]]), k=2)[0] == pytest.approx(2 ** -0.5, abs=1e-6)


def test_trained_threshold_keeps_the_share_of_valid_asked_for(tiny_data_session, tmp_path):
    out = tmp_path / "half"
    train(RunConfig(data=str(tiny_data_session), out=str(out), **FAST, keep=0.5))
    predictor = classify.load(out)

    def features(split):
        paths = sorted((tiny_data_session / split).rglob("*.jpg"))
        return predictor.features_and_logits(torch.stack([predictor.preprocess(p) for p in paths]))
    train_features, _ = features("train")
    # picked on valid against the training photos alone: each valid photo is as new to them as a user's
    valid_features, valid_logits = features("valid")
    mix = predictor.bundle.menu_mix
    knn = menu.scores(menu.normalized(train_features), valid_features)
    kept = menu.mixed(knn, valid_logits.max(1), mix) >= predictor.bundle.menu_threshold
    assert abs(kept.mean() - 7 / 12) <= 1 / 12 + 1e-9  # ceil(0.5 x 13) of the 12 valid, give or take float16 features
    # the mix standardizes each part by valid's own spread
    assert mix["knn_mean"] == pytest.approx(knn.mean(), abs=1e-3) and mix["max_logit_weight"] == menu.MAX_LOGIT_WEIGHT
    assert mix["max_logit_mean"] == pytest.approx(valid_logits.max(1).mean(), abs=1e-3)
    # the bank holds train + valid: every valid photo is then its own nearest neighbour, its kNN part the highest
    assert len(predictor.menu_bank) == 36 + 12
    assert predictor.menu_scores(valid_features, valid_logits) == pytest.approx(
        menu.mixed(np.ones(12), valid_logits.max(1), mix), abs=1e-2)


def test_non_food_is_off_the_menu_in_predict_and_evaluate(trained_bundle, tiny_data_session, tmp_path):
    papers = [make_nonfood(tmp_path / "unknown" / "deep" / f"{i}.png", seed=i) for i in range(6)]
    done = run("classify", "predict", "--model", trained_bundle, papers[0])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{papers[0]}: not on the menu (closest: ") and done.stdout.count(",") == 1
    done = run("classify", "predict", "--model", trained_bundle, "--json", papers[1],
               next((tiny_data_session / "test" / "red_soup").glob("*.jpg")))
    paper, soup = [json.loads(line) for line in done.stdout.splitlines()]
    assert paper["on_menu"] is False and soup["on_menu"] is True and soup["predictions"][0]["label"] == "red_soup"
    assert soup["menu_score"] > paper["menu_score"]
    done = run("classify", "evaluate", "--model", trained_bundle, "--data", tiny_data_session / "test", "--json",
               "--unknown", tmp_path / "unknown")
    result = json.loads(done.stdout)
    assert result["unknown"]["n"] == 6 and result["unknown"]["rejected"] == 1.0 and result["unknown"]["auroc"] == 1.0
    assert result["on_menu_kept"] >= 0.75


def test_held_out_figures_go_into_the_bundle_only_for_a_split_it_never_saw(trained_bundle, tiny_data_session,
                                                                          tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle, bundle)
    evaluate(bundle, tiny_data_session / "valid", out=tmp_path / "on-valid")
    assert not (bundle / "held_out.json").exists()  # valid picked the epoch
    int8 = evaluate(bundle, tiny_data_session / "test", out=tmp_path / "int8", runtime="onnx-int8")
    assert int8["runtime"] == "onnx-int8" and int8["held_out"] is True and int8["accuracy"] >= 0.75
    assert not (bundle / "held_out.json").exists()  # the card describes the model, not its 8-bit copy
    metrics = evaluate(bundle, tiny_data_session / "test", out=tmp_path / "on-test")
    held_out = json.loads((bundle / "held_out.json").read_text())
    assert metrics["held_out"] is True and held_out["n"] == 12 and held_out["accuracy"] == metrics["accuracy"]
    assert held_out["split"].endswith("test")
    assert classify.load(bundle).held_out["top5"] == metrics["top5"]


@pytest.mark.parametrize("case", ["keep_zero", "keep_above_one", "unknown_missing", "unknown_empty"])
def test_bad_on_menu_inputs(case, trained_bundle, tiny_data_session, tmp_path):
    (tmp_path / "empty").mkdir()
    args, words = {
        "keep_zero": (["train", "--data", tiny_data_session, "--out", tmp_path / "run", "--keep", "0"], ["--keep"]),
        "keep_above_one": (["train", "--data", tiny_data_session, "--out", tmp_path / "run", "--keep", "1.5"],
                           ["--keep", "> 0 and <= 1"]),
        "unknown_missing": (["evaluate", "--model", trained_bundle, "--data", tiny_data_session, "--unknown",
                             tmp_path / "nope"], ["--unknown", "not found"]),
        "unknown_empty": (["evaluate", "--model", trained_bundle, "--data", tiny_data_session, "--unknown",
                           tmp_path / "empty"], ["no images", "--unknown"]),
    }[case]
    before = tree_digest(tmp_path)
    assert_refused(run("classify", *args), *words, code=2)
    assert tree_digest(tmp_path) == before and not (tmp_path / "run").exists()


def test_bundles_with_the_plain_knn_rule_keep_it_and_unknown_rules_are_refused(trained_bundle, tiny_data_session,
                                                                               tmp_path):
    """A bundle of format 2 ("knn", no menu_mix) scores as it did; a rule this platekit does not know is one line."""
    old = tmp_path / "old"
    shutil.copytree(trained_bundle, old)
    config = json.loads((old / "config.json").read_text())
    config.update({"format_version": 2, "menu_method": "knn"})
    del config["menu_mix"]
    (old / "config.json").write_text(json.dumps(config))
    predictor = classify.load(old)
    paths = sorted((tiny_data_session / "test").rglob("*.jpg"))
    features, logits = predictor.features_and_logits(torch.stack([predictor.preprocess(p) for p in paths]))
    assert predictor.menu_scores(features, logits) == pytest.approx(menu.scores(predictor.menu_bank, features))
    assert not np.allclose(classify.load(trained_bundle).menu_scores(features, logits),
                           predictor.menu_scores(features, logits))
    for method, words in (("knn+max-logit", ("menu_mix must hold", "max_logit_weight")),  # the mix missing
                          ("energy", ("on-menu method", "upgrade platekit"))):  # a method never written
        (old / "config.json").write_text(json.dumps({**config, "format_version": 3, "menu_method": method}))
        assert_refused(run("classify", "predict", "--model", old, paths[0]), *words, code=2)


# -- photos not on the menu given at training time (--not-on-menu) -------------------------------------------------

def clusters(rng, centres, n, spread=0.25):
    """`n` points around each of `centres` (rows), and their cluster index."""
    points = np.concatenate([centre + spread * rng.normal(size=(n, len(centre))) for centre in centres])
    return points, np.repeat(np.arange(len(centres)), n)


def test_exposure_map_is_the_fitted_classifier_folded_onto_unit_features():
    """exposure_scores gives the log-odds of being on the menu (and, for older bundles, -log p(not on the menu)) of
    sklearn's own pipeline (standardize, logistic regression), with the standardization folded into one linear map:
    what the web page applies too."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    inside, labels = clusters(rng, centres[:3], 30)
    outside, _ = clusters(rng, centres[3:], 20)
    exposure = menu.fit_exposure(inside, labels, outside)
    assert exposure["exposure_weight"].shape == (4, 16) and exposure["exposure_bias"].shape == (4,)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    scaler = StandardScaler().fit(unit(inside))
    fitted = LogisticRegression(C=menu.EXPOSURE_C, max_iter=3000).fit(
        scaler.transform(unit(np.r_[inside, outside])), np.r_[labels, np.full(len(outside), 3)])
    new_inside, _ = clusters(rng, centres[:3], 10)
    new_outside, _ = clusters(rng, centres[3:], 10)
    for points in (new_inside, new_outside):
        probabilities = fitted.predict_proba(scaler.transform(unit(points)))
        not_on_menu = probabilities[:, -1]
        assert menu.exposure_scores(exposure, points, menu.EXPOSED_PROB) == pytest.approx(
            -np.log(not_on_menu), rel=1e-4, abs=1e-4)
        assert menu.exposure_scores(exposure, points) == pytest.approx(
            np.log(probabilities[:, :-1].sum(1)) - np.log(not_on_menu), rel=1e-4, abs=1e-4)
    assert menu.exposure_scores(exposure, new_inside).min() > menu.exposure_scores(exposure, new_outside).max()


def test_the_exposed_rule_rejects_a_dish_near_the_menu_that_the_plain_rule_keeps():
    """A dish beside a menu dish: near enough to the menu for kNN + max-logit to keep most of it, but like the
    supplied photos, so the lower of the two standardized scores rejects it; valid keeps the share asked for."""
    rng = np.random.default_rng(1)
    a, b = np.eye(32)[0] * 3, np.eye(32)[1] * 3
    centres = np.stack([a, b, a + np.eye(32)[2] * 1.2])
    train_x, train_y = clusters(rng, centres[:2], 40)
    valid_x, _ = clusters(rng, centres[:2], 20)
    supplied, _ = clusters(rng, centres[2:], 30)
    unseen, _ = clusters(rng, centres[2:], 30)
    bank = menu.normalized(train_x)
    head = lambda x: np.abs(x[:, :2])  # noqa: E731  a stand-in head: the two menu dishes' logits
    exposure = menu.fit_exposure(train_x, train_y, supplied)
    method, threshold, mix = menu.fit_rule(menu.scores(bank, valid_x), head(valid_x).max(1), 0.9,
                                           menu.exposure_scores(exposure, valid_x))
    assert method == menu.EXPOSED and set(mix) >= {"rule_mean", "rule_std", "exposure_mean", "exposure_std"}

    def plain(x):
        return menu.mixed(menu.scores(bank, x), head(x).max(1), mix)

    def exposed(x):
        return menu.exposed(plain(x), menu.exposure_scores(exposure, x), mix)
    assert (exposed(valid_x) >= threshold).mean() == pytest.approx(math.ceil(0.9 * 41) / 40)
    plain_threshold = menu.pick_threshold(plain(valid_x), 0.9)
    assert (plain(unseen) >= plain_threshold).mean() >= 0.5  # the plain rule keeps most of the unseen dish
    assert (exposed(unseen) >= threshold).mean() <= 0.1
    assert exposed(unseen) == pytest.approx(np.minimum((plain(unseen) - mix["rule_mean"]) / mix["rule_std"], (
        menu.exposure_scores(exposure, unseen) - mix["exposure_mean"]) / mix["exposure_std"]))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_exposed_rule_still_rejects_when_many_dishes_are_supplied(seed):
    """Six other dishes supplied, an unseen one among them: the classifier grows so sure of valid that -log p(not on
    the menu), bounded below by 0, standardized by valid's wide spread, can no longer fall under the threshold (the
    rule before 2026-12-06 rejected what the plain rule did, as on food-dev: bench/ood_dishes.py). Its log-odds can."""
    rng, axes = np.random.default_rng(seed), np.eye(32)
    a, b = axes[0] * 3, axes[1] * 3
    train_x, train_y = clusters(rng, np.stack([a, b]), 40)
    valid_x, _ = clusters(rng, np.stack([a, b]), 20)
    supplied, _ = clusters(rng, np.stack([a + axes[2 + i] * 1.2 for i in range(6)]), 30)
    unseen, _ = clusters(rng, (a + (axes[2] + axes[3]) * 0.85)[None], 30)
    bank, exposure = menu.normalized(train_x), menu.fit_exposure(train_x, train_y, supplied)
    head = lambda x: np.abs(x[:, :2])  # noqa: E731  a stand-in head: the two menu dishes' logits
    rejected = {}
    for method in menu.EXPOSED_METHODS:
        _, threshold, mix = menu.fit_rule(menu.scores(bank, valid_x), head(valid_x).max(1), 0.9,
                                          menu.exposure_scores(exposure, valid_x, method))
        plain = menu.mixed(menu.scores(bank, unseen), head(unseen).max(1), mix)
        rejected[method] = (menu.exposed(plain, menu.exposure_scores(exposure, unseen, method), mix) < threshold).mean()
    plain_rejected = (plain < menu.pick_threshold(menu.mixed(menu.scores(bank, valid_x), head(valid_x).max(1), mix),
                                                  0.9)).mean()
    assert plain_rejected <= 0.4 and rejected[menu.EXPOSED_PROB] == plain_rejected
    assert rejected[menu.EXPOSED] >= 0.8


def test_a_bundle_trained_with_not_on_menu_photos_scores_with_the_exposed_rule(exposed_bundle, trained_bundle,
                                                                               tiny_data_session, tmp_path):
    from safetensors.torch import load_file

    config = json.loads((exposed_bundle / "config.json").read_text())
    assert config["menu_method"] == menu.EXPOSED and config["not_on_menu"].endswith("other")
    tensors = load_file(str(exposed_bundle / "menu.safetensors"))
    assert tensors["exposure_weight"].shape == (3 + 1, tensors["bank"].shape[1]) and len(tensors["exposure_bias"]) == 4
    predictor, plain = classify.load(exposed_bundle), classify.load(trained_bundle)
    paths = sorted((tiny_data_session / "test").rglob("*.jpg"))
    features, logits = predictor.features_and_logits(torch.stack([predictor.preprocess(p) for p in paths]))
    rule = menu.mixed(menu.scores(predictor.menu_bank, features), logits.max(1), predictor.bundle.menu_mix)
    scores = predictor.menu_scores(features, logits)
    assert scores == pytest.approx(menu.exposed(rule, menu.exposure_scores(predictor.menu_exposure, features),
                                                predictor.bundle.menu_mix))
    assert not np.allclose(scores, plain.menu_scores(features, logits))  # the same weights (feature cache, seed)
    # a bundle made before 2026-12-06 keeps its rule: -log p(not on the menu), standardized by its own menu_mix
    older = tmp_path / "older"
    shutil.copytree(exposed_bundle, older)
    (older / "config.json").write_text(json.dumps(config | {"menu_method": menu.EXPOSED_PROB}))
    assert classify.load(older).menu_scores(features, logits) == pytest.approx(menu.exposed(
        rule, menu.exposure_scores(predictor.menu_exposure, features, menu.EXPOSED_PROB), predictor.bundle.menu_mix))
    papers = [make_nonfood(tmp_path / "unknown" / f"{i}.png", seed=i) for i in range(4)]
    done = run("classify", "evaluate", "--model", exposed_bundle, "--data", tiny_data_session / "test", "--json",
               "--unknown", tmp_path / "unknown")
    assert done.returncode == 0, done.stderr
    unknown = json.loads(done.stdout)["unknown"]
    assert (unknown["n"], unknown["auroc"], unknown["rejected"]) == (4, 1.0, 1.0)
    # an older platekit's reader (format 3, two methods) refuses the rule by name instead of misreading it
    broken = tmp_path / "broken"
    shutil.copytree(exposed_bundle, broken)
    from safetensors.torch import save_file
    save_file({"bank": tensors["bank"]}, str(broken / "menu.safetensors"))
    assert_refused(run("classify", "predict", "--model", broken, paths[0]), "not-on-the-menu classifier", code=2)
    shutil.copy(exposed_bundle / "menu.safetensors", broken / "menu.safetensors")
    mix = {key: value for key, value in config["menu_mix"].items() if key != "exposure_std"}
    (broken / "config.json").write_text(json.dumps(config | {"menu_mix": mix}))
    assert_refused(run("classify", "predict", "--model", broken, paths[0]), "not-on-the-menu classifier", code=2)


def test_a_demo_feedback_folder_gives_only_its_photos_of_other_dishes(tiny_data_session, tmp_path):
    """`--not-on-menu` on a feedback folder: corrections to menu dishes (folders named after a class) and copies of
    the training photos are left out, photos of other dishes are used."""
    from conftest import make_other_dishes

    feedback = tmp_path / "feedback"
    make_other_dishes(feedback / "pad thai", 12, first_seed=7000)
    make_other_dishes(feedback / "red_soup", 3, first_seed=7100)
    copied = next((tiny_data_session / "train" / "green_salad").glob("*.jpg"))
    shutil.copy(copied, feedback / "pad thai" / "copied.jpg")
    messages = []
    train(RunConfig(data=str(tiny_data_session), out=str(tmp_path / "run"), **FAST, not_on_menu=str(feedback)),
          log=messages.append)
    assert "--not-on-menu: 3 photo(s) in folders named after a class left out" in messages
    assert "--not-on-menu: 1 photo(s) left out, the same as photos in train or valid" in messages
    assert f"--not-on-menu: 12 photo(s) from {feedback}" in messages
    assert classify.load(tmp_path / "run").bundle.menu_method == menu.EXPOSED


def test_not_on_menu_photos_past_the_cap_are_drawn_by_content(tiny_data_session, tmp_path, monkeypatch):
    from classify import data as D
    from classify import train as T
    from conftest import make_other_dishes

    monkeypatch.setattr(T, "MAX_NOT_ON_MENU", 5)
    layout = D.find_layout(tiny_data_session)
    splits = tuple(D.load_cache(layout.splits[name], 32) for name in ("train", "valid"))
    chosen = []
    for name in ("first", "renamed"):
        photos = make_other_dishes(tmp_path / "other", 12, first_seed=8000)
        if name == "renamed":  # the same photos under other names: the same five
            for i, photo in enumerate(photos):
                photo.rename(photo.with_name(f"z{11 - i}.jpg"))
        messages = []
        outside = T.load_outside(str(tmp_path / "other"), layout.classes, 32, splits, False, messages.append)
        assert "--not-on-menu: 5 of its photos used (drawn by content)" in messages and len(outside.labels) == 5
        chosen.append(sorted(outside.keys.tolist()))
        shutil.rmtree(tmp_path / "other")
    assert chosen[0] == chosen[1]


@pytest.mark.parametrize("case", ["missing", "empty", "all_in_data"])
def test_bad_not_on_menu_folders(case, tiny_data_session, tmp_path):
    (tmp_path / "empty").mkdir()
    folder, words = {"missing": (tmp_path / "nope", ["--not-on-menu", "not a folder"]),
                     "empty": (tmp_path / "empty", ["--not-on-menu", "no images"]),
                     "all_in_data": (tiny_data_session / "train" / "red_soup",
                                     ["--not-on-menu", "no readable photos left"]),
                     }[case]
    before = tree_digest(tmp_path)
    fast = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    assert_refused(run("classify", "train", "--data", tiny_data_session, "--out", tmp_path / "run", *fast,
                       "--not-on-menu", folder), *words, code=2)
    assert tree_digest(tmp_path) == before and not (tmp_path / "run").exists()


def test_the_readmes_second_workspace_recipe_makes_a_not_on_menu_folder(food_dev, tiny_data_session, tmp_path):
    """README: other dishes gathered in a second curate workspace with `scrape --other-dishes 2 --menu` (icrawler
    against a local server holding 12 real photos of two food-dev dishes under the names it picked), deduplicated,
    accepted and exported, then given to `classify train --not-on-menu` as the export folder."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from curate.dishes import other_dishes

    menu_file = tmp_path / "menu.txt"
    menu_file.write_text("\n".join(path.name for path in (tiny_data_session / "train").iterdir()) + "\n")
    picked, _ = other_dishes(menu_file.read_text().split(), 2)
    handler = partial(SimpleHTTPRequestHandler, directory=str(food_dev / "train"))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    lines = [f"{name}\t{base}/{dish}/{photo.name}" for name, dish in zip(picked, ("bibimbap", "beignets"))
             for photo in sorted((food_dev / "train" / dish).glob("*.jpg"))[:6]]
    (tmp_path / "urls.tsv").write_text("\n".join(lines) + "\n")
    workspace = ["--workspace", tmp_path / "other-ws"]
    try:
        for args in (["scrape", "--other-dishes", "2", "--menu", menu_file, "--per-class", "6", "--engine", "urls",
                      "--urls", tmp_path / "urls.tsv"], ["dedup"], ["accept"], ["export", tmp_path / "other-dishes"]):
            done = run("curate", *workspace, *args)
            assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
    assert sorted(path.name for path in (tmp_path / "other-dishes" / "train").iterdir()) == sorted(
        name.replace(" ", "_") for name in picked)  # the export names folders as the workspace does
    exported = len(list((tmp_path / "other-dishes").rglob("*.jpg")))
    fast = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    done = run("classify", "train", "--data", tiny_data_session, "--out", tmp_path / "plain", *fast)
    assert done.returncode == 0 and "--other-dishes 20" in done.stderr  # the tip that leads here
    done = run("classify", "train", "--data", tiny_data_session, "--out", tmp_path / "run", *fast, "--not-on-menu",
               tmp_path / "other-dishes")
    assert done.returncode == 0, done.stderr
    assert "--other-dishes" not in done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["menu_method"] == menu.EXPOSED and config["menu_mix"]["exposure_photos"] == exported >= 10
