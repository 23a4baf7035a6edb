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

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class DetectorConfig:
    """Live-tunable settings (the deployment's `user_config`)."""

    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    confidence_threshold: float = 0.25
    iou_threshold: float = 0.5
    input_size: int | None = None  # letterbox side; None: the size the model was trained at
    max_detections: int = 10

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")
        if not (0 <= self.confidence_threshold <= 1 and 0 < self.iou_threshold <= 1):
            raise ValueError("confidence_threshold must be in [0, 1] and iou_threshold in (0, 1]")
        if self.input_size is not None and (self.input_size < 32 or self.input_size % 32):
            raise ValueError("input_size must be a multiple of 32 (the model's stride), at least 32")
        if self.max_detections < 1:
            raise ValueError("max_detections must be >= 1")


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
        config = self.config
        results = self.model.predict(
            [image[..., ::-1] for image in images],  # ultralytics reads numpy arrays as BGR
            imgsz=config.input_size or self.bundle.detector_input_size,
            conf=config.confidence_threshold,
            iou=config.iou_threshold,
            max_det=config.max_detections,
            device=self.device,
            half=False,
            rect=False,  # always the same square letterbox: an image gets the same boxes alone or in any batch
            verbose=False,
        )
        return [
            np.concatenate([r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy()[:, None]], axis=1).astype(np.float32)
            for r in results
        ]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def detect_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self._predict, images)

    async def detect(self, image: np.ndarray) -> dict:
        """Boxes of one RGB uint8 image: {"boxes": float32 [K, 5] (x1, y1, x2, y2, confidence), "version"}."""
        return {"boxes": await self.detect_batch(image), "version": self.version}

    async def ready(self) -> str:
        return self.version
