"""Prediction: load a model bundle once and score images with it: calibrated top-k, and whether it is on the menu."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from classify import ClassifyError
from classify import bundle as bundle_format
from classify import data as D
from classify import menu, models

log = logging.getLogger("classify")
TOP_K = 5  # classes shown per image


@dataclass(frozen=True)
class Prediction:
    """One image's top-k (class, calibrated probability), and whether it looks like one of the menu's dishes."""
    top: list
    on_menu: bool
    menu_score: float | None  # None: the bundle has no on-menu statistics (made before they existed)

    def to_json(self) -> dict:
        return {"predictions": [{"label": name, "probability": round(p, 6)} for name, p in self.top],
                "on_menu": self.on_menu,
                "menu_score": None if self.menu_score is None else round(self.menu_score, 4)}


class Predictor:
    """A trained model loaded from its bundle: `Predictor("runs/x").predict(image, k=5)`."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", runtime: str = "auto"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        # Measured in a fresh process (no training before it, unlike bench/predict_latency.py): one image through the
        # CPU default 105 ms untuned, 70 ms tuned; lite0 26 vs 18 ms. Every server and CLI that predicts starts here.
        D.tune_cpu_allocator()
        self.run_dir = Path(run_dir)
        self.bundle = bundle_format.read(self.run_dir)
        self.config = self.bundle.to_json()
        self.classes = list(self.bundle.classes)
        self.image_size, self.cache_size = self.bundle.image_size, self.bundle.cache_size
        self.mean, self.std = self.bundle.mean, self.bundle.std
        self.temperature = self.bundle.temperature
        self.model, _, _ = models.create(self.bundle.architecture, len(self.classes), head=self.bundle.head,
                                         pretrained=False, hf_config=self.bundle.hf_config)
        try:
            state = load_file(str(self.run_dir / "model.safetensors"))
            self.model.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as error:
            raise ClassifyError(f"{self.run_dir / 'model.safetensors'} does not fit its config: "
                                f"{str(error).splitlines()[0][:160]}") from None
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval().to(memory_format=torch.channels_last)
        # Scoring on the CPU runs through ONNX Runtime (one image through the CPU default 3.1x faster in a fresh
        # process, see classify/runtime.py); the PyTorch model stays for heat maps and on a GPU.
        from classify import features, runtime as runtimes
        self.onnx = runtimes.forward_for(self.model, self.image_size, self.device, runtime,
                                         features.cache_folder("auto"), calibration=self.calibration_inputs)
        self.int8 = runtime == "onnx-int8" and self.onnx is not None  # scoring with the 8-bit copy
        self.metrics = bundle_format.read_json(self.run_dir, "metrics.json")
        self.held_out = bundle_format.read_json(self.run_dir, bundle_format.HELD_OUT_FILE)
        self.menu_bank, self.menu_exposure = None, None
        if self.bundle.menu_method is not None and (self.run_dir / bundle_format.MENU_FILE).is_file():
            self.menu_bank, self.menu_exposure = menu.load(self.run_dir / bundle_format.MENU_FILE)
            self.menu_bank = self.menu_bank.to(self.device)
            if self.bundle.menu_method in menu.EXPOSED_METHODS and (self.menu_exposure is None or not set(
                    menu.EXPOSED_MIX) <= set(self.bundle.menu_mix)):
                raise ClassifyError(f"{self.run_dir}: menu.safetensors or config.json's menu_mix lacks part of the "
                                    f"not-on-the-menu classifier its rule ({self.bundle.menu_method!r}) needs: train "
                                    f"it again")
        if not self.bundle.calibrated:
            log.warning("%s was made before calibration: probabilities use temperature 1", self.run_dir)
        if self.menu_bank is None:
            log.warning("%s has no on-menu statistics: every photo counts as on the menu", self.run_dir)

    def calibration_inputs(self) -> np.ndarray:
        """Model inputs (N x 3 x S x S) of the bundle's examples/ photos: what an int8 copy is calibrated on."""
        folder = self.run_dir / bundle_format.EXAMPLES_DIR
        photos = sorted(folder.glob("*/*.jpg")) if folder.is_dir() else []
        if not photos:
            raise ClassifyError(f"--runtime onnx-int8 calibrates on the bundle's examples, and {folder} has none: "
                                "train the bundle again, or use --runtime onnx")
        batch = torch.stack([self.preprocess(photo) for photo in photos])
        return D.model_input(batch, self.image_size, self.mean, self.std, torch.device("cpu")).numpy()

    def preprocess(self, image) -> torch.Tensor:
        """Path, file object or PIL image → 3 x S x S uint8 (shorter side resized, centred)."""
        return torch.from_numpy(D.decode(image, self.cache_size).copy()).permute(2, 0, 1)

    def features_and_logits(self, images_uint8: torch.Tensor, tta: bool = False, batch_size: int = 64,
                            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Pooled backbone features (N x D) and logits (N x C, averaged with the mirrored image's with `tta`) of
        decoded uint8 images (N x 3 x cache_size x cache_size): one backbone pass per image (two with `tta`)."""
        if len(images_uint8) == 0:
            return np.zeros((0, self.model.num_features), np.float32), np.zeros((0, len(self.classes)), np.float32)

        def forward(batch):
            x = D.model_input(batch, self.image_size, self.mean, self.std, self.device)
            if self.onnx is not None:
                pooled, scores = self.onnx(x)
                if tta:
                    scores = (scores + self.onnx(x.flip(-1))[1]) / 2
                return pooled, scores
            pooled = self.model.backbone(x).float()
            scores = self.model.head(pooled).float()
            if tta:  # horizontal flip: food has no handedness
                scores = (scores + self.model(x.flip(-1)).float()) / 2
            return pooled, scores
        features, logits = D.in_batches(forward, images_uint8, batch_size, progress=progress, desc="predict")
        return features.numpy(), logits.numpy()

    def probabilities_from_logits(self, logits: np.ndarray) -> np.ndarray:
        from classify.calibration import softmax
        return softmax(logits, self.temperature)

    def menu_scores(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray | None:
        """On-menu score per image from its pooled features and logits (higher: more like the menu), or None without
        statistics."""
        if self.menu_bank is None:
            return None
        knn = menu.scores(self.menu_bank, torch.as_tensor(features).to(self.device), k=self.bundle.menu_k)
        if self.bundle.menu_method == "knn":
            return knn
        rule = menu.mixed(knn, np.asarray(logits).max(axis=1), self.bundle.menu_mix)
        if self.bundle.menu_method not in menu.EXPOSED_METHODS:
            return rule
        exposure = menu.exposure_scores(self.menu_exposure, features, self.bundle.menu_method)
        return menu.exposed(rule, exposure, self.bundle.menu_mix)

    def on_menu(self, scores: np.ndarray | None, n: int) -> np.ndarray:
        if scores is None:
            return np.ones(n, dtype=bool)
        return scores >= self.bundle.menu_threshold

    def predictions(self, images, k: int = TOP_K) -> list[Prediction]:
        """One Prediction per image (path, file object or PIL image), in one batch."""
        return self.predictions_from_cache(torch.stack([self.preprocess(image) for image in images]), k=k)

    def predictions_from_cache(self, batch: torch.Tensor, k: int = 5) -> list[Prediction]:
        """One Prediction per decoded uint8 image (N x 3 x cache_size x cache_size, as `preprocess` makes them)."""
        features, logits = self.features_and_logits(batch)
        return self.predictions_from_outputs(features, logits, k=k)

    def predictions_from_outputs(self, features: np.ndarray, logits: np.ndarray, k: int = TOP_K) -> list[Prediction]:
        """One Prediction per row of the model's outputs: pooled features (N x D) and logits (N x C)."""
        probabilities = self.probabilities_from_logits(logits)
        scores = self.menu_scores(features, logits)
        on_menu = self.on_menu(scores, len(probabilities))
        k = max(1, min(k, len(self.classes)))
        return [Prediction([(self.classes[i], float(row[i])) for i in np.argsort(-row)[:k]], bool(on_menu[n]),
                           None if scores is None else float(scores[n]))
                for n, row in enumerate(probabilities)]

    def prediction(self, image, k: int = TOP_K) -> Prediction:
        return self.predictions([image], k=k)[0]

    def predict(self, image, k: int = TOP_K) -> list[tuple[str, float]]:
        """Top-k (class, probability) pairs for one image, most likely first."""
        return self.prediction(image, k=k).top

