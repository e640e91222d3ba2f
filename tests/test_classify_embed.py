"""classify.embed: unit-length features; similar images land close, different ones far."""
import numpy as np
from PIL import Image

from classify.embed import Embedder
from conftest import make_image


def test_embeddings(tmp_path):
    red_a = make_image(tmp_path / "ra.jpg", (200, 30, 30), 1)
    red_b = tmp_path / "rb.jpg"
    Image.open(red_a).resize((150, 125)).save(red_b, quality=70)  # the same picture, resized and recompressed
    blue = make_image(tmp_path / "b.jpg", (30, 30, 200), 7)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    embedder = Embedder("efficientnet_lite0", image_size=96)
    features, skipped = embedder.embed_paths([red_a, red_b, tmp_path / "bad.jpg", blue])
    assert features.shape == (3, embedder.dimensions) and features.dtype == np.float32
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    assert [p.name for p, _ in skipped] == ["bad.jpg"]
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2] + 0.05
