"""classify.explain: Grad-CAM heat maps on every backbone family, and `predict --explain`'s files and refusals."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from badinput import assert_refused, run, tree_digest
from classify import ClassifyError, models
from classify import data as D
from classify.explain import WRITTEN, Explainer, feature_maps
from classify.predict import Predictor
from conftest import COLOURS, make_image

SIZE = 96


def write_bundle(folder, architecture: str, hf_config: dict | None = None):
    """A bundle as train writes it (config.json + model.safetensors), from randomly initialized weights: no hub."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model, spec, extra = models.create(architecture, 3, pretrained=False, hf_config=hf_config)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"architecture": architecture, "classes": ["a", "b", "c"], "image_size": SIZE, "cache_size": SIZE + 12,
              "mean": list(spec.mean), "std": list(spec.std), **extra}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def tiny_hf_resnet() -> dict:
    from transformers import ResNetConfig
    return ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]).to_dict()


def disc(left: int) -> Image.Image:
    """A dark photo with one bright disc, at `left`: two of them differ in where anything is."""
    image = Image.new("RGB", (130, 110), (30, 30, 40))
    ImageDraw.Draw(image).ellipse((left, 20, left + 45, 65), fill=(230, 190, 40))
    return image


FAMILIES = {  # name -> (architecture, the layers the heat map must come from)
    "lite": ("efficientnet_lite0", lambda backbone: [backbone.bn2]),
    "timm": ("resnet18", lambda backbone: [backbone.layer4]),
    "torchvision": ("tv:resnet18", lambda backbone: [backbone.layer4]),
    "huggingface": ("hf:tiny-resnet", lambda backbone: [backbone.model.resnet.encoder.stages[-1]]),
    "side by side": ("efficientnet_lite0+tv:resnet18",
                     lambda backbone: [backbone.branches[0].bn2, backbone.branches[1].layer4]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_heat_map_on_each_backbone_family(family, tmp_path):
    architecture, expected_layer = FAMILIES[family]
    bundle = write_bundle(tmp_path / family, architecture, tiny_hf_resnet() if family == "huggingface" else None)
    predictor = Predictor(bundle)
    explainer = Explainer(predictor)
    found, expected = feature_maps(explainer.model, SIZE), expected_layer(explainer.model.backbone)
    assert len(found) == len(expected) and all(a is b for a, b in zip(found, expected))
    first, second = explainer.explain(disc(5)), explainer.explain(disc(80))
    for explanation, image in ((first, disc(5)), (second, disc(80))):
        assert explanation.heat.shape == (SIZE, SIZE) and explanation.heat.dtype == np.float32
        assert explanation.heat.min() >= 0 and explanation.heat.max() <= 1 and explanation.heat.max() > 0.5
        # the same preprocessed input as the prediction: classify's decode and centre crop, and the same scores
        crop = D.center_crop(predictor.preprocess(image), SIZE).permute(1, 2, 0).numpy()
        assert np.array_equal(explanation.crop, crop)
        assert [c for c, _ in explanation.predictions] == [c for c, _ in predictor.predict(image)]
        assert [p for _, p in explanation.predictions] == pytest.approx([p for _, p in predictor.predict(image)],
                                                                        abs=1e-5)
        assert explanation.overlay().size == (SIZE, SIZE)
    assert np.abs(first.heat - second.heat).max() > 0.1
    # On a CPU the maps come from ONNX Runtime (the PyTorch forward is the slow part); they are PyTorch's Grad-CAM
    assert explainer.fast is not None
    eager = Explainer(Predictor(bundle, runtime="torch"))
    assert eager.fast is None
    for explanation, image in ((first, disc(5)), (second, disc(80))):
        assert np.abs(eager.explain(image).heat - explanation.heat).max() < 1e-3


def test_the_explanation_carries_the_prediction_with_its_on_menu_verdict(tmp_path):
    """The demo takes the prediction from the heat map's pass (one forward pass a photo): it must be the one
    Predictor.prediction gives, on-menu verdict and score included, through ONNX Runtime and through PyTorch."""
    from classify import menu

    bundle = write_bundle(tmp_path / "lite", "efficientnet_lite0")
    images = [disc(5), disc(80), Image.new("RGB", (120, 100), (200, 40, 160))]
    plain = Predictor(bundle)
    features, _ = plain.features_and_logits(torch.stack([plain.preprocess(image) for image in images[:2]]))
    menu.save(bundle / "menu.safetensors", torch.as_tensor(features))  # the two discs are the menu
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps(config | {"menu_method": "knn", "menu_threshold": 0.999}))
    for runtime in ("auto", "torch"):
        predictor = Predictor(bundle, runtime=runtime)
        explainer = Explainer(predictor)
        verdicts = []
        for image in images:
            expected, got = predictor.prediction(image), explainer.explain(image).prediction
            assert [c for c, _ in got.top] == [c for c, _ in expected.top]
            assert got.menu_score == pytest.approx(expected.menu_score, abs=1e-4)
            verdicts.append(got.on_menu)
            assert got.on_menu == expected.on_menu
        assert verdicts == [True, True, False]


def test_a_vision_transformer_is_refused_with_a_reason():
    model, _, _ = models.create("vit_tiny_patch16_224", 3, pretrained=False)
    with pytest.raises(ClassifyError, match="convolutional backbone"):
        feature_maps(model.eval(), 224)


# --- predict --explain ------------------------------------------------------------------------------------------

@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for i, name in enumerate(COLOURS):
        make_image(folder / f"{name}.jpg", COLOURS[name], i)
    make_image(folder / "more" / "red_soup.png", COLOURS["red_soup"], 9, fmt="PNG")  # same name, other folder
    return folder


def test_predict_explain_writes_one_png_per_image(trained_bundle, photos, tmp_path):
    out = tmp_path / "heat"
    done = run("classify", "predict", "--model", trained_bundle, photos, "--explain", out, "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 4
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert written == ["blue_cheese.png", "green_salad.png", "red_soup-2.png", "red_soup.png"]
    size = json.loads((trained_bundle / "config.json").read_text())["image_size"]
    assert all(Image.open(out / name).size == (size, size) for name in written)
    # run again: the files are its own, so it may replace them; nothing else appears
    before = tree_digest(out)
    again = run("classify", "predict", "--model", trained_bundle, photos, "--explain", out)
    assert again.returncode == 0, again.stderr
    assert set(tree_digest(out)) == set(before)


@pytest.mark.parametrize("case", ["foreign_file", "edited_own_file", "out_is_a_file", "vit_bundle"])
def test_predict_explain_refuses_and_writes_nothing(case, trained_bundle, photos, tmp_path):
    out = tmp_path / "heat"
    out.mkdir()
    model = trained_bundle
    if case == "foreign_file":
        (out / "green_salad.png").write_bytes(b"someone's own picture")
        words = ("green_salad.png", "not written by predict --explain")
    elif case == "edited_own_file":
        assert run("classify", "predict", "--model", trained_bundle, photos, "--explain", out).returncode == 0
        Image.new("RGB", (8, 8)).save(out / "blue_cheese.png")  # the user replaced it: now it is theirs
        words = ("blue_cheese.png", "not written by predict --explain")
    elif case == "out_is_a_file":
        out = tmp_path / "notes.txt"
        out.write_text("keep me")
        words = ("is a file, not a folder",)
    else:
        model = write_bundle(tmp_path / "vit", "vit_tiny_patch16_224")
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "image_size": 224, "cache_size": 256}))
        words = ("convolutional backbone",)
    before = tree_digest(tmp_path)
    done = run("classify", "predict", "--model", model, photos, "--explain", out)
    assert_refused(done, *words)
    assert tree_digest(tmp_path) == before
    assert done.stdout == ""


def test_predict_explain_skips_an_unreadable_image_and_writes_the_rest(trained_bundle, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "heat"
    done = run("classify", "predict", "--model", trained_bundle, photos, "--explain", out)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "broken.jpg" in done.stderr
    assert not (out / "broken.png").exists() and (out / "green_salad.png").is_file()
    assert len((out / WRITTEN).read_text().splitlines()) == 4


def test_save_overlay_never_replaces_a_file_that_appears_meanwhile(trained_bundle, photos, tmp_path):
    from classify.explain import overlay_targets, save_overlay

    out = tmp_path / "heat"
    [target] = overlay_targets(out, [photos / "red_soup.jpg"])
    out.mkdir()
    shutil.copy(photos / "red_soup.jpg", target)  # someone else's file, created after the check
    with pytest.raises(ClassifyError, match="appeared while writing"):
        save_overlay(Image.new("RGB", (4, 4)), target)
    assert target.read_bytes() == (photos / "red_soup.jpg").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["red_soup.png"]


def test_heat_maps_fall_back_to_pytorch_when_onnx_runtime_disagrees(tmp_path, monkeypatch):
    """The ONNX Runtime path is checked against pytorch_grad_cam once, at start: a difference keeps PyTorch's."""
    bundle = write_bundle(tmp_path / "lite", "efficientnet_lite0")
    real = Explainer._fast_heat
    monkeypatch.setattr(Explainer, "_fast_heat", lambda self, forward, x: (1 - real(self, forward, x)[0], None, None))
    explainer = Explainer(Predictor(bundle))
    assert explainer.fast is None
    monkeypatch.undo()
    explanation = explainer.explain(disc(5))  # through PyTorch, as before
    assert explanation.heat.shape == (SIZE, SIZE) and explanation.heat.max() > 0.5
