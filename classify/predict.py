"""Prediction: load a model bundle once and score images with it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from classify import ClassifyError
from classify import data as D
from classify import models

REQUIRED = ("config.json", "model.safetensors")


def read_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ClassifyError(f"model folder not found: {run_dir}")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise ClassifyError(f"{run_dir} is not a complete model bundle: missing {', '.join(missing)}")
    try:
        return json.loads((run_dir / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise ClassifyError(f"{run_dir / 'config.json'} is not valid JSON: {error}") from None


class Predictor:
    """A trained model loaded from its bundle: `Predictor("runs/x").predict(image, k=5)`."""

    def __init__(self, run_dir: str | Path, device: str = "cpu"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.run_dir = Path(run_dir)
        self.config = read_config(self.run_dir)
        try:
            self.classes = list(self.config["classes"])
            self.image_size = int(self.config["image_size"])
            self.cache_size = int(self.config["cache_size"])
            self.mean, self.std = tuple(self.config["mean"]), tuple(self.config["std"])
            architecture = self.config["architecture"]
        except (KeyError, TypeError, ValueError) as error:
            raise ClassifyError(f"{self.run_dir / 'config.json'} lacks a valid field: {error}") from None
        self.model, _, _ = models.create(architecture, len(self.classes), head=self.config.get("head", "linear"),
                                         pretrained=False, hf_config=self.config.get("hf_config"))
        try:
            state = load_file(str(self.run_dir / "model.safetensors"))
            self.model.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as error:
            raise ClassifyError(f"{self.run_dir / 'model.safetensors'} does not fit its config: "
                                f"{str(error).splitlines()[0][:160]}") from None
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval().to(memory_format=torch.channels_last)
        metrics_path = self.run_dir / "metrics.json"
        self.metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}

    def preprocess(self, image) -> torch.Tensor:
        """Path, file object or PIL image → 3 x S x S uint8 (shorter side resized, centred)."""
        return torch.from_numpy(D.decode(image, self.cache_size).copy()).permute(2, 0, 1)

    def probabilities_from_cache(self, images_uint8: torch.Tensor, tta: bool = False, batch_size: int = 64,
                                 progress: bool = False) -> np.ndarray:
        """N x C probabilities for decoded uint8 images (N x 3 x cache_size x cache_size)."""
        from tqdm.auto import tqdm

        outputs = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(images_uint8), batch_size), desc="predict", disable=not progress,
                              leave=False):
                pixels = D.center_crop(images_uint8[start:start + batch_size], self.image_size).to(self.device)
                x = D.normalize(pixels, self.mean, self.std)
                probabilities = self.model(x).float().softmax(-1)
                if tta:  # horizontal flip: food has no handedness
                    probabilities = (probabilities + self.model(x.flip(-1)).float().softmax(-1)) / 2
                outputs.append(probabilities.cpu())
        if not outputs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return torch.cat(outputs).numpy()

    def predict(self, image, k: int = 5) -> list[tuple[str, float]]:
        """Top-k (class, probability) pairs for one image, most likely first."""
        probabilities = self.probabilities_from_cache(self.preprocess(image).unsqueeze(0))[0]
        order = np.argsort(-probabilities)[: max(1, min(k, len(self.classes)))]
        return [(self.classes[i], float(probabilities[i])) for i in order]

    def predict_many(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        batch = torch.stack([self.preprocess(image) for image in images])
        probabilities = self.probabilities_from_cache(batch)
        k = max(1, min(k, len(self.classes)))
        return [[(self.classes[i], float(row[i])) for i in np.argsort(-row)[:k]] for row in probabilities]
