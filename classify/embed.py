"""Embeddings: pooled backbone features of images, for curation (near-duplicates, suspects) and analysis."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from classify import data as D
from classify import models


class Embedder:
    """A pretrained backbone without its head: `Embedder().embed_paths(paths)` → N x D unit-length features."""

    def __init__(self, model: str = "efficientnet_lite0", image_size: int = 0, device: str = "cpu"):
        classifier, self.spec, _ = models.create(model, num_classes=2)
        self.image_size = image_size or self.spec.image_size
        self.cache_size = D.eval_size(self.image_size, self.spec.crop_pct)
        self.device = torch.device(device)
        self.backbone = classifier.backbone.to(self.device).eval().to(memory_format=torch.channels_last)
        self.dimensions = classifier.num_features

    def embed_images(self, images_uint8: torch.Tensor, batch_size: int = 16, mirror_invariant: bool = False) -> np.ndarray:
        """Decoded uint8 images (N x 3 x cache_size x cache_size) → N x D float32, L2-normalized.

        mirror_invariant: the mean of the features of each image and of its mirror image (twice the work), so that a
        photo and its mirror get the same vector (near-duplicate search).
        """
        D.tune_cpu_allocator()
        if len(images_uint8) == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)

        def forward(batch):
            pixels = D.model_input(batch, self.image_size, self.spec.mean, self.spec.std, self.device)
            features = self.backbone(pixels).float()
            if mirror_invariant:
                features = features + self.backbone(pixels.flip(-1)).float()
            return torch.nn.functional.normalize(features, dim=1)
        return D.in_batches(forward, images_uint8, batch_size).numpy()

    def embed_paths(self, paths, batch_size: int = 16, progress: bool = False,
                    mirror_invariant: bool = False) -> tuple[np.ndarray, list]:
        """Embed image files; returns (features of the readable ones, in order; [(path, reason)] of the others)."""
        samples = [D.Sample(Path(p), 0) for p in paths]
        cache = D.load_cache(samples, self.cache_size, progress=progress, desc="embed")
        return self.embed_images(cache.images, batch_size, mirror_invariant), list(cache.skipped)
