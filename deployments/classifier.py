"""Classifier deployment: class probabilities and embeddings of product crops, from the EfficientNet in
model_label/ in the runtime build_app chose (the SavedModel, or TFLite fp32 / int8 on CPU).
The answer (top-k, known, the prominent product's policy) is the ingress's, in the photo→answer loop.

Each caller sends the crops of one photo; the crops of all concurrent callers are batched together by
`@serve.batch`, so one model call serves several photos. The SavedModel's serving function is called
directly (no Keras predict()), on a fixed [N, S, S, 3] shape, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve

from deployments.payloads import Classification
from deployments.runtime import replica_cpu_threads, replica_gpu_ids, warn_gpu_fallback
from pipeline.core.model_label import load_model_label
from pipeline.core.models import load_classifier
from pipeline.core.settings import ClassifierSettings

logger = logging.getLogger("ray.serve")


@serve.deployment
class Classifier:
    def __init__(self, model_dir: str | None = None, runtime: str = "savedmodel") -> None:
        started = time.perf_counter()
        threads = replica_cpu_threads()
        self.bundle = load_model_label(model_dir)
        self.version = self.bundle.versions["classifier"]
        self.input_size = self.bundle.classifier_input_size
        path = self.bundle.runtime_path("classifier", runtime)
        self.model = load_classifier(path, runtime, threads=threads)
        if replica_gpu_ids() and not self.model.gpus:
            warn_gpu_fallback("Classifier", replica_gpu_ids(), f"the {runtime} runtime")
        self.settings = ClassifierSettings()
        probe = self.model([np.zeros((self.input_size, self.input_size, 3), np.uint8)])
        embedding_dim = None if probe.embeddings is None else probe.embeddings.shape[-1]
        self.bundle.check_classifier_outputs(probe.probabilities.shape[-1], embedding_dim)
        if embedding_dim is None:
            logger.warning("Classifier %s has no embedding output: the catalog cannot match its crops", self.version)
        logger.info(
            "Classifier %s ready: runtime %s (%s), %d classes, %s-d embeddings, %dpx, %d threads, GPUs %s, in %.1fs",
            self.version, runtime, path.name, len(self.bundle.labels), embedding_dim or "no", self.input_size, threads,
            replica_gpu_ids() or "none", time.perf_counter() - started,
        )

    def reconfigure(self, user_config: dict) -> None:
        """Apply new batching without a restart."""
        self.settings = ClassifierSettings.from_config(user_config)
        # @serve.batch's wrapper has these setters; Ray annotates the decorator as returning a plain callable.
        self.classify_batch.set_max_batch_size(self.settings.max_batch_size)  # type: ignore[attr-defined]
        self.classify_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)  # type: ignore[attr-defined]
        logger.info("Classifier settings: %s", self.settings)

    @serve.batch(max_batch_size=ClassifierSettings.max_batch_size, batch_wait_timeout_s=ClassifierSettings.batch_wait_timeout_s)
    async def classify_batch(self, crops: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per crop, its probabilities row and its embedding row (None when the model has no embeddings)."""
        classified = await asyncio.to_thread(self.model, crops)
        embeddings = classified.embeddings if classified.embeddings is not None else [None] * len(crops)
        return list(zip(classified.probabilities, embeddings))

    async def classify(self, crops: list[np.ndarray]) -> Classification:
        """Class probabilities and embedding of each uint8 [S, S, 3] crop, in the order sent. Crops go into the batch
        queue one by one, so a photo with many products never exceeds a batch."""
        for crop in crops:
            if crop.shape != (self.input_size, self.input_size, 3):
                raise ValueError(f"crop shape {crop.shape}; the model takes ({self.input_size}, {self.input_size}, 3)")
        rows = await asyncio.gather(*(self.classify_batch(crop) for crop in crops))
        embeddings = [embedding for _, embedding in rows if embedding is not None]
        return Classification(probabilities=np.stack([probabilities for probabilities, _ in rows]), version=self.version,
                              embeddings=np.stack(embeddings) if len(embeddings) == len(rows) else None)

    async def ready(self) -> str:
        return self.version
