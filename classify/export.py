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
from classify.bundle import EXAMPLES_DIR

FORMATS = ("onnx", "torchscript", "space", "web")
FOLDER_FORMATS = ("space", "web")  # a Hugging Face Space, a static web app: folders written by classify.share
TOLERANCE = 1e-4  # max |softmax difference| allowed between the exported model and PyTorch
# An int8 export (classify/runtime.py's copy) is checked on its top class instead: on the CPU default it named float's
# top class on 95.4 % of food-dev-extra (bench/int8.py); below this share of the check images it is refused.
INT8_AGREEMENT = 0.9


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    n_images: int
    max_abs_difference: float
    tolerance: float = TOLERANCE
    top_class_agreement: float | None = None  # int8 only: the share of check images with PyTorch's top class


def _check_images(predictor, check_data) -> torch.Tensor:
    folder = Path(check_data) if check_data else predictor.run_dir / EXAMPLES_DIR
    if check_data and not folder.exists():
        raise ClassifyError(f"--check-data folder not found: {folder}")
    if check_data and not folder.is_dir():
        raise ClassifyError(f"--check-data {folder} is a file; give the folder of photos it is in")
    paths = D.images_in(folder) if folder.is_dir() else []
    if not paths:
        raise ClassifyError(f"no images to check the export on in {folder}; pass --check-data FOLDER")
    cache = D.load_cache([D.Sample(p, 0) for p in paths[:32]], predictor.cache_size)
    if len(cache.images) == 0:
        raise ClassifyError(f"no readable images to check the export on in {folder}")
    return D.normalize(D.center_crop(cache.images, predictor.image_size), predictor.mean, predictor.std).contiguous()


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _written_by_export(out: Path) -> bool:
    """`out` (if present) and its sidecar are what an earlier export wrote: the sidecar says so."""
    try:
        sidecar = json.loads(_sidecar(out).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(sidecar, dict) and {"classes", "output", "max_abs_softmax_difference"} <= set(sidecar) \
        and not _sidecar(out).is_symlink() and not out.is_symlink() and (out.is_file() or not out.exists())


def _check_out(run_dir: Path, out: Path) -> None:
    """Refuse to write into the bundle, or over a file an earlier export did not write."""
    bundle = Path(run_dir).resolve()
    for path in (out, _sidecar(out)):
        if path.resolve() == bundle or bundle in path.resolve().parents:
            raise ClassifyError(f"--out {out} lies inside the model bundle {run_dir}; write the export outside it")
    if out.is_dir():
        raise ClassifyError(f"--out {out} is a folder; give the name of the file to write")
    for path in (out, _sidecar(out)):
        if (path.exists() or path.is_symlink()) and not _written_by_export(out):
            raise ClassifyError(f"{path} already exists and classify export did not write it; pick a new name or "
                                f"delete it")


def export(run_dir, fmt: str, out, check_data=None, push=None, ort_dir=None, features: bool = False,
           int8: bool = False, min_agreement: float = INT8_AGREEMENT):
    """Write the model (input: normalized N x 3 x S x S float; output: logits, and with `features` (ONNX only) the
    pooled backbone features the on-menu score is computed from) and a JSON sidecar with classes,
    image size, mean and std; then compare its softmax with PyTorch's on real images. Both files are written under
    temporary names and renamed into place only once they agree: a failure or Ctrl-C leaves no part of them.
    `space` and `web` write a folder instead (classify.share): an ExportReport for files, a ShareReport for those.
    `int8` (onnx and web): the 8-bit copy `--runtime onnx-int8` scores with, features included, checked on its top
    class instead of the tolerance: refused below `min_agreement` (INT8_AGREEMENT unless the user accepts less)."""
    writers = {"onnx": _export_onnx, "torchscript": _export_torchscript}
    if int8 and fmt not in ("onnx", "web"):
        raise ClassifyError("--int8 is for --format onnx or web")
    if not 0 <= min_agreement <= 1:
        raise ClassifyError(f"--min-agreement must be between 0 and 1, got {min_agreement}")
    if fmt in FOLDER_FORMATS:
        from classify import share
        return share.export_space(run_dir, out, push=push) if fmt == "space" else \
            share.export_web(run_dir, out, ort_dir=ort_dir, check_data=check_data, int8=int8,
                             min_agreement=min_agreement)
    if fmt not in writers:
        raise ClassifyError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if features and fmt != "onnx":
        raise ClassifyError("the features output is written by the ONNX export only")
    out = Path(out)
    _check_out(run_dir, out)
    predictor = classify.load(run_dir, runtime="torch")  # it exports the PyTorch model itself
    model = predictor.model.eval().to(memory_format=torch.contiguous_format)
    x = _check_images(predictor, check_data)
    with torch.inference_mode():
        expected = model(x).softmax(-1).numpy()
    example = torch.zeros((1, 3, predictor.image_size, predictor.image_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        if int8:
            written = _export_int8(predictor, tmp, x)
            features = True
        else:
            written = writers[fmt](model, example, tmp, x, features) if features else writers[fmt](model, example,
                                                                                                     tmp, x)
        difference = float(np.abs(written - expected).max())
        agreement = float((written.argmax(1) == expected.argmax(1)).mean()) if int8 else None
        if int8 and agreement < min_agreement:
            raise ClassifyError(f"the int8 model names PyTorch's top class on only {100 * agreement:.0f} % of "
                                f"{len(x)} check images (at least {100 * min_agreement:.0f} % needed); nothing "
                                "written: export without --int8, or accept less with --min-agreement")
        if not int8 and difference >= TOLERANCE:
            raise ClassifyError(f"exported model disagrees with PyTorch (max |softmax difference| {difference:.2e}); "
                                f"nothing written")
        sidecar = {"classes": predictor.classes, "image_size": predictor.image_size, "resize_to": predictor.cache_size,
                   "mean": list(predictor.mean), "std": list(predictor.std),
                   "input": "float32 N x 3 x S x S, normalized", "output": "logits",
                   **({"features": "float32 N x D: the pooled backbone features (the head's input)"} if features else {}),
                   "temperature": predictor.temperature,
                   "probabilities": "softmax(logits / temperature): calibrated on the valid split",
                   "max_abs_softmax_difference": difference,
                   **({"int8": "weights and activations 8-bit (QDQ), calibrated on the bundle's examples",
                       "top_class_agreement": agreement} if int8 else {})}
        _sidecar(tmp).write_text(json.dumps(sidecar, indent=2))
        os.replace(tmp, out)
        os.replace(_sidecar(tmp), _sidecar(out))
    finally:
        tmp.unlink(missing_ok=True)
        _sidecar(tmp).unlink(missing_ok=True)
    return ExportReport(out, fmt, len(x), difference, top_class_agreement=agreement)


def _export_int8(predictor, path: Path, x) -> np.ndarray:
    """The int8 copy `--runtime onnx-int8` runs (same export, same calibration photos, from the same cache when it
    is there), written to `path`; its softmax on `x`."""
    import onnxruntime

    from classify import features, runtime

    path.write_bytes(runtime.int8_model(predictor.model, predictor.image_size, predictor.calibration_inputs(),
                                        features.cache_folder("auto")))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"pixels": x.numpy()})[0]).softmax(-1).numpy()


def _export_onnx(model, example, path: Path, x, features: bool = False) -> np.ndarray:
    try:
        import onnxruntime
    except ImportError:
        raise ClassifyError("ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    from classify.runtime import FeaturesAndLogits

    module, names = (FeaturesAndLogits(model), ["features", "logits"]) if features else (model, ["logits"])
    # The TorchScript-based exporter needs no onnxscript and handles timm's "same" padding.
    torch.onnx.export(module, (example,), str(path), input_names=["pixels"], output_names=names,
                      dynamic_axes={name: {0: "batch"} for name in ["pixels", *names]}, opset_version=17,
                      dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"pixels": x.numpy()})[0]
    return torch.from_numpy(logits).softmax(-1).numpy()


def _export_torchscript(model, example, path: Path, x) -> np.ndarray:
    with torch.inference_mode():
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return loaded(x).softmax(-1).numpy()
