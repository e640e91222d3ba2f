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

`runtime="onnx-int8"` (opt-in) runs an 8-bit copy: onnxruntime.quantization's static QDQ quantization (weights
per channel, in 7 bits), its activation ranges taken on the bundle's own examples/ photos (30 for 10 classes), the
stems (the convs on the 3 colour channels, with their padding), the pooled features and the head left in float.
Measured on the CPU default (bench/int8.py, a CPU without VNNI): 1.35x the images a second in batches of 16,
food-dev-extra accuracy 79.1 % against 80.2 % (the top class agrees on 95.4 % of photos), non-food rejected 99.6 %
in both. The quantization (about 20 s
for the CPU default) is cached like the export, keyed also on the calibration photos.
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
POOLING = ("GlobalAveragePool", "Flatten", "Concat")  # the pooled features: kept in float by the int8 copy
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


def cache_key(model: torch.nn.Module, image_size: int, taps: tuple[str, ...] = (), extra: bytes = b"") -> str:
    """`extra`: anything else the file depends on (the int8 copy: its calibration inputs)."""
    import onnxruntime

    digest = hashlib.sha256(f"{image_size} {torch.__version__} {onnxruntime.__version__} v1 {taps}".encode())
    digest.update(extra)
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


def _quantized(model: torch.nn.Module, image_size: int, calibration: np.ndarray) -> bytes:
    """The model's int8 copy (QDQ, weights per channel), activation ranges from `calibration` (N x 3 x S x S model
    inputs). Three parts stay in float, each for a measured reason (bench/RESULTS.md, int8.py):
    - the stems' padding: quantized, the CPU default's food-dev-extra accuracy fell to 79.2 % (94 % of top classes
      as float's), against 79.7 % (97.5 %) without;
    - the pooled features (the head's and the on-menu score's input): quantized, a 64-px lite0 gave the same
      features for every photo;
    - the stem convolutions and the head: they cost little time; quantizing them too read 79.9 % against 80.0 %
      (2 of 1,500 photos, 64 training photos for calibration), no difference to tell."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.rows = iter([{"pixels": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.rows, None)

    with tempfile.TemporaryDirectory(prefix="platekit-int8-") as tmp:
        plain, prepared, quantized = (os.path.join(tmp, name) for name in ("plain.onnx", "pre.onnx", "int8.onnx"))
        Path(plain).write_bytes(_export(model, image_size))
        quant_pre_process(plain, prepared, skip_symbolic_shape=True)
        graph = onnx.load(prepared).graph
        weights = {w.name: tuple(w.dims) for w in graph.initializer}
        stems = [node.name.rsplit("/", 1)[0] + "/" for node in graph.node if node.op_type == "Conv"
                 and len(weights.get(node.input[1], ())) == 4 and weights[node.input[1]][1] == 3]
        in_float = [node.name for node in graph.node if "/head/" in f"/{node.name.lstrip('/')}"
                    or node.op_type in POOLING or any(node.name.startswith(stem) for stem in stems)]
        # Weights in 7 bits (reduce_range): ONNX Runtime's x86 kernels multiply u8 activations by s8 weights through
        # VPMADDUBSW on a CPU without VNNI (AVX2 only), whose 16-bit sums saturate with 8-bit weights. On such a CPU
        # (a 2-core AMD EPYC, 2026-12-04) the tiny test model's copy kept float's top class on 6 of its 9 examples
        # (pooled features' cosine to float's 0.80) and disagreed with the same file in onnxruntime-web; 7-bit
        # weights: 8 of 9 (0.975). Unsigned weights (U8U8) read 9 of 9 (0.983) but ran 4.5x slower than float.
        quantize_static(prepared, quantized, Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=in_float)
        if not any(node.op_type == "DequantizeLinear" for node in onnx.load(quantized).graph.node):
            # e.g. a Hugging Face ResNet, whose exported weights reach its convs through Identity nodes
            log.warning("ONNX Runtime found nothing to quantize in this model: --runtime onnx-int8 scores in float")
        return Path(quantized).read_bytes()


def _cached_model(model: torch.nn.Module, image_size: int, cache: Path | None,
                  taps: tuple[str, ...] = (), calibration: np.ndarray | None = None) -> bytes | str:
    """The ONNX model (its int8 copy with `calibration`): a path in the cache when one is writable (made on a
    miss), else the bytes."""
    def make():
        if calibration is None:
            return _export(model, image_size, taps)
        return _quantized(model, image_size, calibration)

    if cache is None:
        return make()
    extra = b"" if calibration is None else \
        b"int8 v2 reduce_range" + np.ascontiguousarray(calibration, np.float32).tobytes()
    path = cache / "onnx" / f"{cache_key(model, image_size, taps, extra)}.onnx"
    if path.is_file():
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
        return str(path)
    data = make()
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


def int8_model(model: torch.nn.Module, image_size: int, calibration: np.ndarray, cache: Path | None) -> bytes:
    """The int8 copy's ONNX bytes, as `OnnxForward` runs them: read from the cache, or made (and cached) on a miss."""
    found = _cached_model(model.cpu().eval(), image_size, cache, calibration=calibration)
    return Path(found).read_bytes() if isinstance(found, str) else found


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
    `taps`: names of modules in the model whose outputs come too; `calibration`: model inputs to run an int8 copy
    calibrated on them instead (no taps then)."""

    def __init__(self, model: torch.nn.Module, image_size: int, cache: Path | None, taps: tuple[str, ...] = (),
                 calibration: np.ndarray | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same cores PyTorch would have used
        options.log_severity_level = 3  # errors only: its hardware notes are not for users
        # No busy-waiting between runs: on 2 cores its spinning threads took the CPU from PyTorch's decoding and
        # normalizing around each call (one image through the CPU default: p50 37 -> 30 ms, p95 77 -> 35 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.names = output_names(taps)
        self.session = onnxruntime.InferenceSession(
            _cached_model(model.cpu().eval(), image_size, cache, taps, calibration), options,
            providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = np.ascontiguousarray(pixels.detach().cpu().contiguous().numpy(), dtype=np.float32)
        return tuple(torch.from_numpy(out) for out in self.session.run(self.names, {"pixels": x}))


def forward_for(model: torch.nn.Module, image_size: int, device: torch.device, runtime: str,
                cache: Path | None, calibration=None) -> OnnxForward | None:
    """The ONNX Runtime forward for this model, or None where PyTorch runs it (a GPU, `torch`, no onnxruntime).
    `calibration`: a function giving the int8 copy's calibration inputs (N x 3 x S x S), called for "onnx-int8"."""
    if runtime not in RUNTIMES:
        raise ClassifyError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    if runtime == "torch" or device.type != "cpu":
        if runtime == "onnx-int8":
            log.warning("--runtime onnx-int8 is for the CPU: on %s PyTorch scores in float", device.type)
        return None
    if not available():
        if runtime != "auto":
            raise ClassifyError(f"--runtime {runtime} needs onnx and onnxruntime: pip install onnx onnxruntime")
        return None
    inputs = calibration() if runtime == "onnx-int8" else None
    try:
        return OnnxForward(model, image_size, cache, calibration=inputs)
    except Exception as error:  # an op the exporter or runtime lacks: PyTorch still scores it, only slower
        if runtime != "auto":
            raise ClassifyError(f"--runtime {runtime}: this model does not run in ONNX Runtime "
                                f"({str(error).splitlines()[0][:160]})") from None
        log.info("ONNX Runtime cannot run this model (%s): scoring with PyTorch", str(error).splitlines()[0][:160])
        return None
