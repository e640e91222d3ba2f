"""Backbone embeddings of workspace images, cached in the manifest by content and crop: one cache for suspects and dedup."""
from __future__ import annotations

import numpy as np

from curate import CurateError
from curate.workspace import ImageRecord, Workspace

DEFAULT_MODEL = "efficientnet_lite2"  # suspects' backbone (SuspectsConfig.model says why)
# Every vector is the mean of the features of the image and of its mirror image (classify.embed's mirror_invariant):
# a mirrored copy then gets the vector of its original, which dedup needs (a plain lite2 vector of a mirror is only
# as close as a crop's). The suffix is part of the content key, so vectors cached before it are embedded again.
MIRROR_MEAN = "|mirror-mean"
# Images decoded and embedded per step of the progress bar: about 1.5 s of lite2 on 2 CPU cores, two batches.
PROGRESS_CHUNK = 32


def content_key(record: ImageRecord) -> str:
    """What a cached vector was made from: the file's sha256, its crop box and the kind of embedding."""
    return record.sha256 + ("" if record.crop is None else ":" + ",".join(map(str, record.crop))) + MIRROR_MEAN


def cached_vectors(ws: Workspace, records: list[ImageRecord], model: str = DEFAULT_MODEL) -> dict[int, np.ndarray]:
    """The cached, still valid (same content and crop) embeddings of `records`; computes nothing."""
    cached = ws.embeddings(model)
    return {r.id: np.frombuffer(cached[r.id][1], dtype=np.float32) for r in records
            if r.id in cached and cached[r.id][0] == content_key(r)}


def embed_records(ws: Workspace, records: list[ImageRecord], model: str = DEFAULT_MODEL, batch_size: int = 16,
                  progress: bool = False) -> tuple[dict[int, np.ndarray], set[int], int]:
    """Embeddings of `records` (cache first): (image id → unit vector, ids that could not be read, newly embedded)."""
    vectors = cached_vectors(ws, records, model)
    missing = [r for r in records if r.id not in vectors]
    unreadable: set[int] = set()
    if not missing:
        return vectors, unreadable, 0
    import torch
    from tqdm.auto import tqdm

    from classify import ClassifyError
    from classify.data import decode
    from classify.embed import Embedder
    from curate.images import InvalidImage, crop, open_image

    # one bar over every image, from before the model loads: the review UI shows it (gr.Progress tracks tqdm)
    bar = tqdm(total=len(missing), desc="embedding images", unit="img", disable=not progress)
    try:
        embedder = Embedder(model)
    except ClassifyError as err:
        bar.close()
        raise CurateError(f"cannot load model {model!r} for embeddings: {err}") from None
    new: dict[int, np.ndarray] = {}
    plain = [r for r in missing if r.crop is None]
    for start in range(0, len(plain), PROGRESS_CHUNK):
        chunk = plain[start:start + PROGRESS_CHUNK]
        features, skipped = embedder.embed_paths([ws.abspath(r) for r in chunk], batch_size, mirror_invariant=True)
        bad = {str(p) for p, _ in skipped}
        good = [r for r in chunk if str(ws.abspath(r)) not in bad]
        unreadable |= {r.id for r in chunk if str(ws.abspath(r)) in bad}
        new.update(zip((r.id for r in good), features))
        bar.update(len(chunk))
    for r in (r for r in missing if r.crop is not None):  # crops are few: one at a time
        bar.update(1)
        try:
            pixels = decode(crop(open_image(ws.abspath(r)), r.crop), embedder.cache_size)
        except (InvalidImage, ClassifyError):
            unreadable.add(r.id)
            continue
        new[r.id] = embedder.embed_images(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None],
                                          mirror_invariant=True)[0]
    bar.close()
    by_id = {r.id: r for r in missing}
    ws.set_embeddings(model, {i: (content_key(by_id[i]), np.asarray(v, dtype=np.float32).tobytes()) for i, v in new.items()})
    vectors.update({i: np.asarray(v, dtype=np.float32) for i, v in new.items()})
    return vectors, unreadable, len(new)
