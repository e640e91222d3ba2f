"""classify.runtime: the CPU forward pass through ONNX Runtime, its cache, and the PyTorch route beside it."""
import os
from pathlib import Path

import pytest
import torch

import classify
from classify import ClassifyError, runtime
from classify.models import create


def _bare(name: str, size: int):
    model, _, _ = create(name, num_classes=4, head="mlp")
    return model.eval()


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite0+efficientnet_lite1"])
def test_onnx_forward_matches_torch(name, tmp_path):
    """Features and logits out of ONNX Runtime are PyTorch's, for one image and a batch (the batch axis is dynamic),
    for a single backbone and for several side by side (their renormalization is inside the graph)."""
    model = _bare(name, 96)
    forward = runtime.OnnxForward(model, 96, tmp_path)
    torch.manual_seed(0)
    for n in (1, 3):
        x = torch.randn(n, 3, 96, 96)
        with torch.inference_mode():
            features = model.backbone(x)
            logits = model.head(features)
        got_features, got_logits = forward(x)
        assert got_features.shape == features.shape and got_logits.shape == (n, 4)
        assert torch.allclose(got_features, features, atol=1e-4, rtol=1e-3)
        assert torch.allclose(got_logits, logits, atol=1e-4, rtol=1e-3)


def test_cache_written_once_and_reused(tmp_path, monkeypatch):
    model = _bare("efficientnet_lite0", 64)
    runtime.OnnxForward(model, 64, tmp_path)
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].stem == runtime.cache_key(model, 64)
    assert not list((tmp_path / "onnx").glob("*.tmp"))
    inode = files[0].stat().st_ino

    def no_export(*args):
        raise AssertionError("exported again although the cache holds it")
    monkeypatch.setattr(runtime, "_export", no_export)
    runtime.OnnxForward(model, 64, tmp_path)
    assert files[0].stat().st_ino == inode  # the same file, not written again
    # Other weights or another input size: another key, another file.
    assert runtime.cache_key(model, 96) != runtime.cache_key(model, 64)
    with torch.no_grad():
        next(model.head.parameters()).add_(1.0)
    assert runtime.cache_key(model, 64) != files[0].stem


def test_unwritable_cache_falls_back_to_memory(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("a file where the folder should be: unwritable even for root")
    model = _bare("efficientnet_lite0", 64)
    forward = runtime.OnnxForward(model, 64, cache)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(forward(x)[1], model.head(model.backbone(x)), atol=1e-4, rtol=1e-3)
    assert cache.read_text().startswith("a file")


def test_predictor_runtimes_agree(trained_bundle, tiny_data_session):
    images = sorted((tiny_data_session / "test").rglob("*.jpg"))
    onnx = classify.load(trained_bundle, runtime="onnx")
    eager = classify.load(trained_bundle, runtime="torch")
    assert onnx.onnx is not None and eager.onnx is None
    assert classify.load(trained_bundle).onnx is not None  # "auto" on a CPU with onnxruntime installed
    for a, b in zip(onnx.predictions(images, k=3), eager.predictions(images, k=3)):
        assert [name for name, _ in a.top] == [name for name, _ in b.top]
        assert all(abs(p - q) < 1e-4 for (_, p), (_, q) in zip(a.top, b.top))


def test_runtime_onnx_missing_is_one_clear_error(trained_bundle, monkeypatch):
    monkeypatch.setattr(runtime, "available", lambda: False)  # as where onnxruntime is not installed
    with pytest.raises(ClassifyError, match="needs onnx and onnxruntime"):
        classify.load(trained_bundle, runtime="onnx")
    assert classify.load(trained_bundle).onnx is None  # "auto" quietly scores with PyTorch


def test_auto_falls_back_when_the_export_fails(trained_bundle, monkeypatch):
    def broken(*args):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset version 17 is not supported")
    monkeypatch.setattr(runtime, "_export", broken)
    monkeypatch.setenv("PLATEKIT_CACHE", str(Path(os.environ["PLATEKIT_CACHE"]) / "empty"))
    assert classify.load(trained_bundle).onnx is None
    with pytest.raises(ClassifyError, match="does not run in ONNX Runtime.*aten::weird"):
        classify.load(trained_bundle, runtime="onnx")


def test_int8_copy_is_quantized_calibrated_cached_and_close(trained_bundle, tiny_data_session, tmp_path,
                                                           monkeypatch):
    """--runtime onnx-int8: an 8-bit copy (QDQ), calibrated on the bundle's examples, made once and cached beside
    the float export; its stem and head keep float weights; it names the float model's top class."""
    import onnx

    monkeypatch.setenv("PLATEKIT_CACHE", str(tmp_path))
    images = sorted((tiny_data_session / "test").rglob("*.jpg"))
    int8 = classify.load(trained_bundle, runtime="onnx-int8")
    float32 = classify.load(trained_bundle, runtime="onnx")
    small, large = sorted((tmp_path / "onnx").glob("*.onnx"), key=lambda path: path.stat().st_size)
    assert small.stat().st_size < 0.5 * large.stat().st_size  # int8 weights: about a quarter
    graph = onnx.load(small).graph
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 10
    in_float = [node for node in graph.node if "/head/" in node.name or node.name.endswith("conv_stem/Conv")]
    assert in_float and all(made_by.get(node.input[1]) != "DequantizeLinear" for node in in_float)
    convs = [node for node in graph.node if node.op_type == "Conv" and node not in in_float]
    assert convs and all(made_by.get(node.input[1]) == "DequantizeLinear" for node in convs)
    # The 8-bit backbone's pooled features stay close to float's for every photo (signed weights saturating on a CPU
    # without VNNI gave a cosine of 0.80); the 64 px head's near-ties may flip (0.53 / 0.47 for one photo here), so
    # the top class must hold wherever float is sure of it, and on all but two photos.
    pixels = torch.stack([float32.preprocess(path) for path in images])
    cosine = torch.nn.functional.cosine_similarity(*(torch.as_tensor(predictor.features_and_logits(pixels)[0]).float()
                                                     for predictor in (int8, float32)))
    assert cosine.min() >= 0.95, cosine
    pairs = list(zip(int8.predictions(images), float32.predictions(images)))
    same = [a.top[0][0] == b.top[0][0] for a, b in pairs]
    assert sum(same) >= len(same) - 2 and all(a.top[0][0] == b.top[0][0] for a, b in pairs if b.top[0][1] >= 0.99)
    assert sum(b.top[0][1] >= 0.99 for _, b in pairs) >= len(pairs) // 2

    def no_quantizing(*args):
        raise AssertionError("quantized again although the cache holds it")
    monkeypatch.setattr(runtime, "_quantized", no_quantizing)
    assert classify.load(trained_bundle, runtime="onnx-int8").onnx is not None


@pytest.mark.parametrize("architecture", ["resnet18", "tv:resnet18"])
def test_int8_copy_of_timm_and_torchvision_backbones(architecture, tmp_path):
    """Not only the Lite models: a timm and a torchvision ResNet (random weights) get an 8-bit copy whose pooled
    features point where float's do."""
    import numpy as np
    import onnx

    torch.manual_seed(0)
    model = create(architecture, num_classes=4, head="mlp", pretrained=False)[0].eval()
    smooth = torch.nn.functional.interpolate(torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
                                             size=64, mode="bilinear") * 2 - 1  # photo-like: no pixel noise
    float32 = runtime.OnnxForward(model, 64, tmp_path)
    int8 = runtime.OnnxForward(model, 64, tmp_path, calibration=smooth[:16].numpy())
    small = min((tmp_path / "onnx").glob("*.onnx"), key=lambda path: path.stat().st_size)
    assert sum(node.op_type == "QuantizeLinear" for node in onnx.load(small).graph.node) > 10
    a, b = float32(smooth[16:])[0].numpy(), int8(smooth[16:])[0].numpy()
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.98


def test_int8_without_examples_is_one_clear_error(own_bundle):
    import shutil

    shutil.rmtree(own_bundle / "examples")
    with pytest.raises(ClassifyError, match="calibrates on the bundle's examples.*--runtime onnx"):
        classify.load(own_bundle, runtime="onnx-int8")


def test_predict_cli_runtime(trained_bundle, tiny_data_session):
    import json
    import subprocess
    import sys

    folder = str(tiny_data_session / "test" / "red_soup")
    runs = {}
    for choice in ("onnx", "torch", "onnx-int8"):
        out = subprocess.run([sys.executable, "-m", "classify", "predict", "--model", str(trained_bundle), "--json",
                              "--runtime", choice, folder], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        runs[choice] = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(runs["onnx"]) == len(runs["torch"]) == len(runs["onnx-int8"]) == 4
    assert sum(a["predictions"][0]["label"] == b["predictions"][0]["label"]
               for a, b in zip(runs["onnx"], runs["onnx-int8"])) >= 3
    for a, b in zip(runs["onnx"], runs["torch"]):
        assert a["image"] == b["image"] and a["predictions"][0]["label"] == b["predictions"][0]["label"]
        assert abs(a["predictions"][0]["probability"] - b["predictions"][0]["probability"]) < 1e-4
    bad = subprocess.run([sys.executable, "-m", "classify", "predict", "--model", str(trained_bundle), "--runtime",
                          "ort", folder], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--runtime" in bad.stderr
    with pytest.raises(ClassifyError, match="unknown runtime 'ort'"):
        classify.load(trained_bundle, runtime="ort")


def test_cache_keeps_the_most_recent_exports(tmp_path, monkeypatch):
    folder = tmp_path / "onnx"
    folder.mkdir()
    olds = []
    for i in range(runtime.KEEP_MODELS + 2):  # exports of other models, oldest first
        old = folder / f"{i:032x}.onnx"
        old.write_bytes(b"x")
        os.utime(old, (1000 + i, 1000 + i))
        olds.append(old)
    mine = folder / "notes.onnx"
    mine.write_text("not ours: never touched")
    runtime.OnnxForward(_bare("efficientnet_lite0", 64), 64, tmp_path)
    left = sorted(p for p in olds if p.exists())
    assert left == olds[-(runtime.KEEP_MODELS - 1):]  # the newest 7 and the new export: 8
    assert len(list(folder.glob("*.onnx"))) == runtime.KEEP_MODELS + 1 and mine.exists()
