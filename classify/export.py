"""Export: a bundle to ONNX or TorchScript, checked against PyTorch on real images before it is called done."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import classify
from classify import ClassifyError
from classify import data as D

TOLERANCE = 1e-4  # max |softmax difference| allowed between the exported model and PyTorch


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    n_images: int
    max_abs_difference: float
    tolerance: float = TOLERANCE


def _check_images(predictor, check_data) -> torch.Tensor:
    folder = Path(check_data) if check_data else predictor.run_dir / "examples"
    paths = D.images_in(folder) if folder.is_dir() else []
    if not paths:
        raise ClassifyError(f"no images to check the export on in {folder}; pass --check-data FOLDER")
    cache = D.load_cache([D.Sample(p, 0) for p in paths[:32]], predictor.cache_size)
    if len(cache.images) == 0:
        raise ClassifyError(f"no readable images to check the export on in {folder}")
    return D.normalize(D.center_crop(cache.images, predictor.image_size), predictor.mean, predictor.std).contiguous()


def export(run_dir, fmt: str, out, check_data=None) -> ExportReport:
    """Write the model (input: normalized N x 3 x S x S float; output: logits) and a JSON sidecar with classes,
    image size, mean and std; then compare its softmax with PyTorch's on real images."""
    predictor = classify.load(run_dir)
    model = predictor.model.eval().to(memory_format=torch.contiguous_format)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = _check_images(predictor, check_data)
    with torch.inference_mode():
        expected = model(x).softmax(-1).numpy()
    example = torch.zeros((1, 3, predictor.image_size, predictor.image_size))
    if fmt == "onnx":
        got = _export_onnx(model, example, out, x)
    elif fmt == "torchscript":
        got = _export_torchscript(model, example, out, x)
    else:
        raise ClassifyError(f"unknown export format {fmt!r}; choose onnx or torchscript")
    difference = float(np.abs(got - expected).max())
    sidecar = {"classes": predictor.classes, "image_size": predictor.image_size, "resize_to": predictor.cache_size,
               "mean": list(predictor.mean), "std": list(predictor.std), "input": "float32 N x 3 x S x S, normalized",
               "output": "logits", "temperature": predictor.temperature,
               "probabilities": "softmax(logits / temperature): calibrated on the valid split",
               "max_abs_softmax_difference": difference}
    Path(str(out) + ".json").write_text(json.dumps(sidecar, indent=2))
    if difference >= TOLERANCE:
        out.unlink(missing_ok=True)
        raise ClassifyError(f"exported model disagrees with PyTorch (max |softmax difference| {difference:.2e}); "
                            f"nothing written")
    return ExportReport(out, fmt, len(x), difference)


def _export_onnx(model, example, out: Path, x) -> np.ndarray:
    try:
        import onnxruntime
    except ImportError:
        raise ClassifyError("ONNX export needs onnx and onnxruntime: pip install 'platekit[onnx]'") from None
    tmp = out.with_name(out.name + ".tmp")
    # The TorchScript-based exporter needs no onnxscript and handles timm's "same" padding.
    torch.onnx.export(model, (example,), str(tmp), input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    os.replace(tmp, out)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"pixels": x.numpy()})[0]
    return torch.from_numpy(logits).softmax(-1).numpy()


def _export_torchscript(model, example, out: Path, x) -> np.ndarray:
    with torch.inference_mode():
        traced = torch.jit.trace(model, example, check_trace=False)
    tmp = out.with_name(out.name + ".tmp")
    traced.save(str(tmp))
    os.replace(tmp, out)
    loaded = torch.jit.load(str(out))
    with torch.inference_mode():
        return loaded(x).softmax(-1).numpy()
