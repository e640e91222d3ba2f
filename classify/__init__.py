"""classify: fine-tune a pretrained backbone on an ImageFolder set; evaluate, predict, export."""

import os

# OpenMP threads that spin while waiting turn a busy machine's CPU time into nothing: measured here with another
# process on the same 2 cores, a lite0 training step took 3.6 s with spinning and 0.19 s without. Only a default:
# set OMP_WAIT_POLICY yourself to override. It must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


class ClassifyError(Exception):
    """A problem the user can fix (bad data, unknown model, missing file); the CLI prints it as one line."""


RUNTIMES = ("auto", "onnx", "onnx-int8", "torch")  # how a Predictor scores on the CPU: classify/runtime.py


def load(run_dir, device: str = "cpu", runtime: str = "auto"):
    """Load a trained model bundle: `classify.load("runs/x").predict(pil_image, k=5)`. `runtime`: "auto" scores
    through ONNX Runtime on the CPU where it is installed, "torch" always through PyTorch, "onnx" insists,
    "onnx-int8" runs an 8-bit copy calibrated on the bundle's examples (about 2x faster, a little less accurate)."""
    from classify.predict import Predictor
    return Predictor(run_dir, device=device, runtime=runtime)
