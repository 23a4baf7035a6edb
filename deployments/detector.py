"""Detector deployment: finds products in a photo with the ultralytics YOLO checkpoint from model_label/.

The ingress sends each photo already letterboxed to the model's square input (pipeline.core.preprocessing), so
requests from all concurrent callers are stacked by `@serve.batch` into one model call, run in a thread so the
next batch fills meanwhile. Boxes come back in letterbox pixels; the ingress maps them to the photo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from ray import serve

from deployments.payloads import Detection
from deployments.runtime import replica_cpu_threads, replica_gpu_ids, warn_gpu_fallback
from pipeline.core.model_label import load_model_label
from pipeline.core.recognition import DetectorSettings, detect

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class DetectorConfig(DetectorSettings):
    """Live-tunable settings (the deployment's `user_config`): the detector settings, batching and precision.
    The defaults also set `@serve.batch` below until the first reconfigure()."""

    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.05
    fp16_on_gpu: bool = True  # half precision when the replica has a CUDA device (ignored on CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@serve.deployment
class Detector:
    def __init__(self, model_dir: str | None = None) -> None:
        from pipeline.core.yolo_offline import prepare_ultralytics

        prepare_ultralytics()
        import torch
        from ultralytics import YOLO

        started = time.perf_counter()
        torch.set_num_threads(replica_cpu_threads())
        self.bundle = load_model_label(model_dir)
        self.version = self.bundle.versions["detector"]
        gpus = replica_gpu_ids()
        self.device = "cuda:0" if gpus and torch.cuda.is_available() else "cpu"
        if gpus and self.device == "cpu":
            warn_gpu_fallback("Detector", gpus, "torch (CUDA)")
        self.model = YOLO(str(self.bundle.detector_path), task="detect")
        self.config = DetectorConfig()
        self._predict([np.zeros((64, 64, 3), np.uint8)])  # load weights onto the device now, not on a request
        logger.info(
            "Detector %s ready on %s (%d torch threads, GPUs %s) in %.1fs",
            self.version, self.device, torch.get_num_threads(), gpus or "none", time.perf_counter() - started,
        )

    def reconfigure(self, user_config: dict) -> None:
        """Apply new thresholds and batching without a restart (serve_config.yaml user_config)."""
        self.config = DetectorConfig(**user_config)
        # @serve.batch's wrapper has these setters; Ray annotates the decorator as returning a plain callable.
        self.detect_batch.set_max_batch_size(self.config.max_batch_size)  # type: ignore[attr-defined]
        self.detect_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)  # type: ignore[attr-defined]
        logger.info("Detector config: %s", self.config)

    def _predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One model call per input size in the batch (one call, unless a live resize is under way)."""
        fp16 = self.config.fp16_on_gpu and self.device != "cpu"
        boxes: list[np.ndarray] = [np.empty((0, 5), np.float32)] * len(images)
        for size in {image.shape for image in images}:
            indices = [i for i, image in enumerate(images) if image.shape == size]
            for index, found in zip(indices, detect(self.model, [images[i] for i in indices], self.config, self.device, fp16)):
                boxes[index] = found
        return boxes

    @serve.batch(max_batch_size=DetectorConfig.max_batch_size, batch_wait_timeout_s=DetectorConfig.batch_wait_timeout_s)
    async def detect_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self._predict, images)

    async def detect(self, image: np.ndarray) -> Detection:
        """Boxes of one letterboxed RGB uint8 image [S, S, 3] (S a multiple of 32)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[0] % 32 or image.shape[2] != 3:
            raise ValueError(f"the detector takes letterboxed uint8 [S, S, 3] images, S a multiple of 32; got {image.dtype} {image.shape}")
        return Detection(boxes=await self.detect_batch(image), version=self.version)

    async def ready(self) -> str:
        return self.version
