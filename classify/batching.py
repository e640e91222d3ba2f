"""Concurrent one-image predictions scored together: what a server's handler threads call instead of
`Predictor.prediction`, so that requests arriving while the model is busy share its next forward pass."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import replace

import torch

# Images per forward pass. Bare forward passes run fastest per image at 4 (bench/batch_size.py); with PyTorch the demo
# under 16 clients served more with 16 (the CPU default: 11.0 against 9.7 requests/s with 4). Through ONNX Runtime,
# side by side on 2 cores (2026-12-03, bench/RESULTS.md), 8 served lite0 more than 16 in both pairs (40.7 and 38.8
# against 31.4 and 34.7 requests/s, p95 646 / 464 against 1,130 / 673 ms); the CPU default showed no difference past
# the noise (12.5 and 17.0 against 14.8 and 13.7). Fewer handler threads wait on the GIL, and a pass starts sooner.
MAX_BATCH = 8


class Batcher:
    """Dynamic batching in front of a Predictor: `Batcher(predictor).prediction(image, k=5)` from any thread.

    The image is decoded in the caller's thread (Pillow releases the GIL, so uploads decode in parallel, and a bad
    image fails its own call only). One worker thread runs the forward passes, each on every image waiting when it
    starts (up to max_batch): a caller alone waits for nobody, and under load the batches fill by themselves.

    Written here rather than with Gradio's `batch=True`: when a batched Gradio function raises, every request of
    the batch gets the error (gradio/queueing.py `process_events`), so one corrupt upload would fail the fifteen
    photos batched with it; and a Gradio batch holds one endpoint's requests, where here the API's and the page's
    share the model.
    """

    def __init__(self, predictor, max_batch: int = MAX_BATCH):
        self.predictor, self.max_batch = predictor, max_batch
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def prediction(self, image, k: int = 5):
        """The image's classify.predict.Prediction, as `Predictor.prediction` gives it. Raises ClassifyError for an
        unreadable image."""
        pixels = self.predictor.preprocess(image)
        done: Future = Future()
        self._start()
        self._waiting.put((pixels, k, done))
        return done.result()

    def _start(self) -> None:
        with self._start_lock:  # on first use: a Batcher that is never called costs no thread
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="classify-batcher", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            self._score(batch)

    def _score(self, batch: list) -> None:
        try:
            predictions = self.predictor.predictions_from_cache(torch.stack([pixels for pixels, _, _ in batch]),
                                                                k=max(k for _, k, _ in batch))
        except Exception as error:  # raised in each caller's thread, where the server reports it
            for _, _, done in batch:
                done.set_exception(error)
            return
        for (_, k, done), prediction in zip(batch, predictions):
            done.set_result(replace(prediction, top=prediction.top[:max(1, k)]))


class SingleFlight:
    """Calls under one key while the first is still running wait for it and share its result (or its error), and
    for `keep_seconds` after it ends a call under that key gets the same result without running: `run(key, fn)` from
    any thread. At most `max_kept` results are kept, none past its time; errors are never kept.

    What it is for: a Gradio Image fires `change` twice when a photo replaces another (gradio-app/gradio#4589 and
    its kin; measured with Gradio 6: change, input, upload, then change again), so the demo's page asks for each
    photo twice, the second ask at once or a few milliseconds after the first answer (a tiny model's pass is
    quicker than that gap: 6 passes for 4 photos with sharing alone); it then rides on the first's pass instead of
    running the model (and the heat map) again.
    """

    def __init__(self, keep_seconds: float = 0.0, max_kept: int = 64):
        self.keep_seconds, self.max_kept = keep_seconds, max_kept
        self._lock = threading.Lock()
        self._running: dict = {}
        self._kept: dict = {}  # key -> (time it ended, result), oldest first

    def run(self, key, fn):
        with self._lock:
            now = time.monotonic()
            for old in [k for k, (ended, _) in self._kept.items() if now - ended > self.keep_seconds]:
                del self._kept[old]
            if key in self._kept:
                return self._kept[key][1]
            done = self._running.get(key)
            first = done is None
            if first:
                done = self._running[key] = Future()
        if not first:
            return done.result()
        try:
            result = fn()
        except BaseException as error:
            done.set_exception(error)
            with self._lock:
                del self._running[key]
            raise
        with self._lock:
            del self._running[key]
            if self.keep_seconds > 0:
                self._kept[key] = (time.monotonic(), result)
                while len(self._kept) > self.max_kept:
                    del self._kept[next(iter(self._kept))]
        done.set_result(result)
        return result
