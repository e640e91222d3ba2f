"""classify.export: ONNX and TorchScript files that agree with PyTorch, and stand alone."""
import json

import onnxruntime
import pytest

import classify
from classify.export import export


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_agrees_with_pytorch(trained_bundle, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    report = export(trained_bundle, fmt, out)
    assert out.stat().st_size > 100_000
    assert report.n_images == 9 and report.max_abs_difference < 1e-4
    sidecar = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert sidecar["classes"] == classify.load(trained_bundle).classes
    assert sidecar["temperature"] == classify.load(trained_bundle).temperature != 1.0  # the fitted one
    if fmt == "onnx":  # the file stands alone: run it with onnxruntime and compare with the Python API
        import numpy as np
        import torch
        from classify import data as D
        predictor = classify.load(trained_bundle)
        image = next((trained_bundle / "examples" / "red_soup").glob("*.jpg"))
        x = D.normalize(D.center_crop(predictor.preprocess(image).unsqueeze(0), 64), sidecar["mean"], sidecar["std"])
        logits = onnxruntime.InferenceSession(str(out)).run(None, {"pixels": x.contiguous().numpy()})[0]
        probabilities = torch.from_numpy(logits).softmax(-1)[0].numpy()
        assert sidecar["classes"][int(np.argmax(probabilities))] == predictor.predict(image, k=1)[0][0]


def test_backbones_side_by_side_train_predict_explain_and_export(tiny_data_session, tmp_path):
    # The CPU default runs several backbones side by side: a bundle of them goes everywhere a one-backbone bundle goes.
    from classify.explain import Explainer
    from classify.train import RunConfig, train
    from conftest import FAST

    out = tmp_path / "pair"
    train(RunConfig(data=str(tiny_data_session), out=str(out),
                    **{**FAST, "model": "efficientnet_lite0+efficientnet_lite1"}))
    predictor = classify.load(out)
    assert predictor.bundle.architecture == "efficientnet_lite0+efficientnet_lite1"
    assert predictor.model.num_features == 2 * 1280 and predictor.menu_bank is not None
    image = next((out / "examples" / "red_soup").glob("*.jpg"))
    assert predictor.predict(image, k=1)[0][0] == "red_soup"
    heat = Explainer(predictor).explain(image).heat
    assert heat.shape == (64, 64) and heat.max() > 0.5
    report = export(out, "onnx", tmp_path / "pair.onnx")
    assert report.max_abs_difference < 1e-4


def test_int8_export_is_the_runtime_copy_smaller_and_checked_on_its_top_class(trained_bundle, tmp_path):
    """`classify export --format onnx --int8`: the 8-bit copy `--runtime onnx-int8` scores with (the same logits on
    the same photos), features included, under half the float file, its top-class check in the sidecar and refused
    below --min-agreement (0.9 unless given); a format that has no int8 copy is one line and exit 2."""
    import numpy as np
    import torch
    from badinput import run

    float_report = export(trained_bundle, "onnx", tmp_path / "float.onnx")
    # The tiny bundle's 8-bit copy named float's top class on as few as 6 of its 9 examples on some CPUs (signed
    # weights on one without VNNI, classify/runtime.py): accept any share, then hold the default to the share it
    # printed.
    done = run("classify", "export", "--model", trained_bundle, "--format", "onnx", "--int8",
               "--min-agreement", "0", "--out", tmp_path / "int8.onnx")
    assert done.returncode == 0, done.stderr
    assert "int8" in done.stdout and "top class" in done.stdout
    assert (tmp_path / "int8.onnx").stat().st_size < 0.5 * float_report.path.stat().st_size
    sidecar = json.loads((tmp_path / "int8.onnx.json").read_text())
    share = sidecar["top_class_agreement"]
    assert f"{100 * share:.0f} %" in done.stdout and "int8" in sidecar and "features" in sidecar
    default = run("classify", "export", "--model", trained_bundle, "--format", "onnx", "--int8",
                  "--out", tmp_path / "default.onnx")
    assert (default.returncode == 0) == (share >= 0.9) == (tmp_path / "default.onnx").exists(), default.stderr
    if share < 0.9:
        assert default.returncode == 2 and "--min-agreement" in default.stderr and "Traceback" not in default.stderr
    strict = run("classify", "export", "--model", trained_bundle, "--format", "onnx", "--int8", "--min-agreement",
                 "1.5", "--out", tmp_path / "strict.onnx")
    assert strict.returncode == 2 and "--min-agreement" in strict.stderr and not (tmp_path / "strict.onnx").exists()
    plain = run("classify", "export", "--model", trained_bundle, "--format", "onnx", "--min-agreement", "0.5",
                "--out", tmp_path / "plain.onnx")
    assert plain.returncode == 2 and "--min-agreement is for --int8" in plain.stderr
    session = onnxruntime.InferenceSession(str(tmp_path / "int8.onnx"))
    assert [o.name for o in session.get_outputs()][:2] == ["features", "logits"]
    int8 = classify.load(trained_bundle, runtime="onnx-int8")
    photos = sorted((trained_bundle / "examples").rglob("*.jpg"))
    batch = torch.stack([int8.preprocess(photo) for photo in photos])
    _, logits = int8.features_and_logits(batch)
    from classify import data as D
    x = D.model_input(batch, int8.image_size, int8.mean, int8.std, torch.device("cpu")).numpy()
    assert np.allclose(session.run(["logits"], {"pixels": x})[0], logits, atol=1e-5)
    refused = run("classify", "export", "--model", trained_bundle, "--format", "torchscript", "--int8",
                  "--out", tmp_path / "m.pt")
    assert refused.returncode == 2 and "--int8 is for --format onnx or web" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "m.pt").exists()
