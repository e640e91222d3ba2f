"""Concurrent one-image predictions scored together: what a server's handler threads call instead of
`Predictor.prediction`, so that requests arriving while the model is busy share its next forward pass."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import replace

import torch

# Images per forward pass; a 224 px lite0 batch of 16 takes ~0.2 s on 2 CPU cores. Bare forward passes run fastest per
# image at 4 (bench/batch_size.py), but the demo under 16 clients served fewer requests with 4 (the CPU default: 9.7
# against 11.0 requests/s, bench/RESULTS.md), so 16 it stays.
MAX_BATCH = 16


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
