"""The CPU forward pass through ONNX Runtime: a bundle's model exported once, cached, and run by onnxruntime.

Measured on the 2-core CPU in fresh processes (bench/predict_latency.py, file to top-5): one image through the CPU
default's three side-by-side backbones 30 ms against 95 ms in eager PyTorch, single Lite models 10-14 ms against
27-37; in batches of 16 the two are within 10 %. PyTorch's own routes were tried and left: folding batch norms into
the convolutions saved 10 %, TorchScript freezing (deprecated) 22 %. No library does this caching for a PyTorch
model (optimum exports transformers models only), hence the little code below.

The export (3.5 s for the CPU default, 1.3 s for lite0) is kept in the cache folder (`$PLATEKIT_CACHE`, else
~/.cache/platekit) under `onnx/<key>.onnx`, the key a sha256 over the model's weights, its input size and the
torch and onnxruntime versions; the next process loads it in 0.2 s. An unwritable cache falls back to the export in
memory. Heat maps use a second export with the feature maps as extra outputs (classify/explain.py); training
and GPUs keep using the PyTorch model.
"""
from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from classify import RUNTIMES, ClassifyError

log = logging.getLogger("classify")
KEEP_MODELS = 8  # exports kept in the cache, the most recently used (a bundle makes one; two once heat maps are drawn)


class FeaturesAndLogits(torch.nn.Module):
    """(features, logits), then the outputs of the `taps` (module names), in that order: feature maps for heat maps."""

    def __init__(self, model: torch.nn.Module, taps: tuple[str, ...] = ()):
        super().__init__()
        self.model, self.seen = model, []
        modules = dict(model.named_modules())
        for name in taps:
            modules[name].register_forward_hook(lambda module, args, output: self.seen.append(output))

    def forward(self, pixels):
        self.seen.clear()
        pooled = self.model.backbone(pixels)
        return (pooled, self.model.head(pooled), *self.seen)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401  (the TorchScript-based exporter writes through it)
    except ImportError:
        return False
    return True


def cache_key(model: torch.nn.Module, image_size: int, taps: tuple[str, ...] = ()) -> str:
    import onnxruntime

    digest = hashlib.sha256(f"{image_size} {torch.__version__} {onnxruntime.__version__} v1 {taps}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def output_names(taps: tuple[str, ...]) -> list[str]:
    return ["features", "logits", *(f"map{i}" for i in range(len(taps)))]


def _export(model: torch.nn.Module, image_size: int, taps: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    example = torch.zeros(1, 3, image_size, image_size)
    names = output_names(taps)
    if taps:  # hooks go on a copy: the model itself may be serving meanwhile
        model = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes mean nothing to a user here
        torch.onnx.export(FeaturesAndLogits(model, taps).eval(), (example,), buffer, input_names=["pixels"],
                          output_names=names, opset_version=17, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in ["pixels", *names]})
    return buffer.getvalue()


def _cached_model(model: torch.nn.Module, image_size: int, cache: Path | None,
                  taps: tuple[str, ...] = ()) -> bytes | str:
    """The ONNX model: a path in the cache when one is writable (exported on a miss), else the bytes."""
    if cache is None:
        return _export(model, image_size, taps)
    path = cache / "onnx" / f"{cache_key(model, image_size, taps)}.onnx"
    if path.is_file():
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
        return str(path)
    data = _export(model, image_size, taps)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a concurrent process reads a whole file or none
    except OSError as error:
        try:
            tmp.unlink(missing_ok=True)  # a disk that filled mid-write keeps no half file
        except OSError:
            pass
        log.info("ONNX cache %s not writable (%s): exported in memory", cache, error.strerror)
        return data
    _evict(path.parent, keep=path)
    return str(path)


def _evict(folder: Path, keep: Path) -> None:
    """Keep the KEEP_MODELS most recently used exports (one is 14-57 MB; every retrain makes a new one). Only files
    named as this module names them are touched."""
    try:
        ours = [p for p in folder.iterdir() if len(p.stem) == 32 and p.suffix == ".onnx" and p != keep
                and all(c in "0123456789abcdef" for c in p.stem)]
        ours.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in ours[KEEP_MODELS - 1:]:
            old.unlink(missing_ok=True)
    except OSError:  # another process evicting at the same time, or a read-only folder: harmless
        pass


class OnnxForward:
    """`forward(pixels) -> (features, logits, *tapped outputs)` for normalized N x 3 x S x S float pixels, as tensors.
    `taps`: names of modules in the model whose outputs come too."""

    def __init__(self, model: torch.nn.Module, image_size: int, cache: Path | None, taps: tuple[str, ...] = ()):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same cores PyTorch would have used
        options.log_severity_level = 3  # errors only: its hardware notes are not for users
        # No busy-waiting between runs: on 2 cores its spinning threads took the CPU from PyTorch's decoding and
        # normalizing around each call (one image through the CPU default: p50 37 -> 30 ms, p95 77 -> 35 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.names = output_names(taps)
        self.session = onnxruntime.InferenceSession(_cached_model(model.cpu().eval(), image_size, cache, taps),
                                                    options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = np.ascontiguousarray(pixels.detach().cpu().contiguous().numpy(), dtype=np.float32)
        return tuple(torch.from_numpy(out) for out in self.session.run(self.names, {"pixels": x}))


def forward_for(model: torch.nn.Module, image_size: int, device: torch.device, runtime: str,
                cache: Path | None) -> OnnxForward | None:
    """The ONNX Runtime forward for this model, or None where PyTorch runs it (a GPU, `torch`, no onnxruntime)."""
    if runtime not in RUNTIMES:
        raise ClassifyError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    if runtime == "torch" or device.type != "cpu":
        return None
    if not available():
        if runtime == "onnx":
            raise ClassifyError("--runtime onnx needs onnx and onnxruntime: pip install onnx onnxruntime")
        return None
    try:
        return OnnxForward(model, image_size, cache)
    except Exception as error:  # an op the exporter or runtime lacks: PyTorch still scores it, only slower
        if runtime == "onnx":
            raise ClassifyError(f"--runtime onnx: this model does not run in ONNX Runtime "
                                f"({str(error).splitlines()[0][:160]})") from None
        log.info("ONNX Runtime cannot run this model (%s): scoring with PyTorch", str(error).splitlines()[0][:160])
        return None
