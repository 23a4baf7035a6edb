"""Classifier deployment: names product crops with the EfficientNet SavedModel from model_label/.

Each caller sends the crops of one photo; the crops of all concurrent callers are batched together by
`@serve.batch`, so one model call serves several photos. The SavedModel's serving function is called
directly (no Keras predict()), on a fixed [N, S, S, 3] shape, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from ray import serve

from deployments.payloads import Classification
from deployments.runtime import replica_cpu_threads, replica_gpu_ids, warn_gpu_fallback
from pipeline.core.model_label import load_model_label
from pipeline.core.recognition import answer, prominent_probabilities

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ClassifierConfig:
    """Live-tunable settings (the deployment's `user_config`). The defaults also set `@serve.batch` below until
    the first reconfigure()."""

    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.05
    top_k: int = 5
    unknown_threshold: float | None = None  # top-1 probability under this: "unknown"; None: the manifest's calibrated one

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")
        if self.top_k < 1 or not (self.unknown_threshold is None or 0 <= self.unknown_threshold <= 1):
            raise ValueError("top_k must be >= 1 and unknown_threshold in [0, 1] (or null: the manifest's)")


@serve.deployment
class Classifier:
    def __init__(self, model_dir: str | None = None) -> None:
        import tensorflow as tf

        started = time.perf_counter()
        threads = replica_cpu_threads()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)  # TF takes the whole card otherwise
        except RuntimeError:  # TensorFlow already started in this process (only outside Serve replicas)
            logger.warning("TensorFlow was initialised before the Classifier: thread and GPU settings unchanged")
        if replica_gpu_ids() and not tf.config.list_physical_devices("GPU"):
            warn_gpu_fallback("Classifier", replica_gpu_ids(), "TensorFlow")
        self.tf = tf
        self.bundle = load_model_label(model_dir)
        self.version = self.bundle.versions["classifier"]
        self.labels = self.bundle.labels
        self.input_size = self.bundle.classifier_input_size
        self.model = tf.saved_model.load(str(self.bundle.classifier_path))
        self.config = ClassifierConfig()
        probabilities = self._predict([np.zeros((self.input_size, self.input_size, 3), np.uint8)])
        self.bundle.check_classifier_outputs(probabilities[0].shape[-1])
        logger.info(
            "Classifier %s ready (%d classes, %dpx, %d TF threads, GPUs %s) in %.1fs",
            self.version, len(self.labels), self.input_size, threads,
            replica_gpu_ids() or "none", time.perf_counter() - started,
        )

    def reconfigure(self, user_config: dict) -> None:
        """Apply new top-k, unknown threshold and batching without a restart."""
        self.config = ClassifierConfig(**user_config)
        # @serve.batch's wrapper has these setters; Ray annotates the decorator as returning a plain callable.
        self.classify_batch.set_max_batch_size(self.config.max_batch_size)  # type: ignore[attr-defined]
        self.classify_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)  # type: ignore[attr-defined]
        logger.info("Classifier config: %s", self.config)

    def _predict(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        batch = self.tf.constant(np.stack(crops).astype(np.float32))
        return list(self.model.serve(batch).numpy())

    @serve.batch(max_batch_size=ClassifierConfig.max_batch_size, batch_wait_timeout_s=ClassifierConfig.batch_wait_timeout_s)
    async def classify_batch(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self._predict, crops)

    async def classify(self, crops: list[np.ndarray], whole_photo_last: bool = False) -> Classification:
        """Top-k of each uint8 [S, S, 3] crop, and whether it is known, in the order sent.

        `whole_photo_last`: the last crop is the whole photo, folded into the first (the prominent product's) answer
        by the manifest's hello_policy; it gets no answer of its own. Crops go into the batch queue one by one, so
        a photo with many products never exceeds a batch.
        """
        for crop in crops:
            if crop.shape != (self.input_size, self.input_size, 3):
                raise ValueError(f"crop shape {crop.shape}; the model takes ({self.input_size}, {self.input_size}, 3)")
        config = self.config
        threshold = self.bundle.unknown_threshold if config.unknown_threshold is None else config.unknown_threshold
        probabilities = list(await asyncio.gather(*(self.classify_batch(crop) for crop in crops)))
        if whole_photo_last:
            whole_photo = probabilities.pop()
            probabilities[0] = prominent_probabilities(probabilities[0], whole_photo, self.bundle.hello_policy)
        answers = [answer(p, self.labels, config.top_k, threshold) for p in probabilities]
        return Classification(answers=answers, version=self.version)

    async def ready(self) -> str:
        return self.version
