"""classify: fine-tune a pretrained backbone on an ImageFolder set; evaluate, predict, export."""

__version__ = "0.1.0"


class ClassifyError(Exception):
    """A problem the user can fix (bad data, unknown model, missing file); the CLI prints it as one line."""


def load(run_dir, device: str = "cpu"):
    """Load a trained model bundle: `classify.load("runs/x").predict(pil_image, k=5)`."""
    from classify.predict import Predictor
    return Predictor(run_dir, device=device)
