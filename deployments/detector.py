"""Detector deployment: finds products in a photo with the ultralytics YOLO checkpoint from model_label/.

Requests from all concurrent callers are batched by `@serve.batch`; the model call runs in a thread so the
next batch fills while one runs. Boxes come back in the pixel coordinates of the image the caller sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from ray import serve

from deployments.runtime import replica_cpu_threads, replica_gpu_ids
from pipeline.model_label import load_model_label
from pipeline.recognition import DetectorSettings, detect

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class DetectorConfig(DetectorSettings):
    """Live-tunable settings (the deployment's `user_config`): the detector settings and batching."""

    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@serve.deployment
class Detector:
    def __init__(self, model_dir: str | None = None) -> None:
        from pipeline.yolo_offline import prepare_ultralytics

        prepare_ultralytics()
        import torch
        from ultralytics import YOLO

        started = time.perf_counter()
        torch.set_num_threads(replica_cpu_threads())
        self.bundle = load_model_label(model_dir)
        self.version = self.bundle.versions["detector"]
        gpus = replica_gpu_ids()
        self.device = "cuda:0" if gpus and torch.cuda.is_available() else "cpu"
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
        self.detect_batch.set_max_batch_size(self.config.max_batch_size)
        self.detect_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        logger.info("Detector config: %s", self.config)

    def _predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return detect(self.model, images, self.config, self.bundle.detector_input_size, self.device)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def detect_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self._predict, images)

    async def detect(self, image: np.ndarray) -> dict:
        """Boxes of one RGB uint8 image: {"boxes": float32 [K, 5] (x1, y1, x2, y2, confidence), "version"}."""
        return {"boxes": await self.detect_batch(image), "version": self.version}

    async def ready(self) -> str:
        return self.version
