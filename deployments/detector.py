"""Detector deployment: finds products in a photo with the ultralytics YOLO checkpoint from model_label/.

The ingress sends each photo already letterboxed to the model's square input (pipeline.core.preprocessing), so
requests from all concurrent callers are stacked by `@serve.batch` into one model call, run in a thread so the
next batch fills meanwhile. Boxes come back in letterbox pixels; the ingress maps them to the photo.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve

from deployments.payloads import Detection
from deployments.runtime import replica_cpu_threads, replica_gpu_ids, warn_gpu_fallback
from pipeline.core.model_label import load_model_label
from pipeline.core.models import load_detector
from pipeline.core.settings import DetectorSettings

logger = logging.getLogger("ray.serve")


@serve.deployment
class Detector:
    def __init__(self, model_dir: str | None = None, runtime: str = "torch") -> None:
        started = time.perf_counter()
        self.bundle = load_model_label(model_dir)
        self.version = self.bundle.versions["detector"]
        gpus = replica_gpu_ids()
        path = self.bundle.runtime_path("detector", runtime)
        self.model = load_detector(path, runtime, use_gpu=bool(gpus), threads=replica_cpu_threads())
        if gpus and self.model.device == "cpu":
            warn_gpu_fallback("Detector", gpus, f"the {runtime} runtime")
        self.settings = DetectorSettings()
        logger.info(
            "Detector %s ready: runtime %s (%s) on %s, %d threads, GPUs %s, in %.1fs",
            self.version, runtime, path.name, self.model.device, self.model.threads, gpus or "none", time.perf_counter() - started,
        )

    def reconfigure(self, user_config: dict) -> None:
        """Apply new thresholds and batching without a restart (serve_config.yaml user_config)."""
        self.settings = DetectorSettings.from_config(user_config)
        # @serve.batch's wrapper has these setters; Ray annotates the decorator as returning a plain callable.
        self.detect_batch.set_max_batch_size(self.settings.max_batch_size)  # type: ignore[attr-defined]
        self.detect_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)  # type: ignore[attr-defined]
        logger.info("Detector settings: %s", self.settings)

    @serve.batch(max_batch_size=DetectorSettings.max_batch_size, batch_wait_timeout_s=DetectorSettings.batch_wait_timeout_s)
    async def detect_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self.model.detect, images, self.settings)

    async def detect(self, images: list[np.ndarray]) -> list[Detection]:
        """Boxes of each letterboxed RGB uint8 image [S, S, 3] (S a multiple of 32), in the order sent. A list, so an
        ingress sends the photos it gathered in one call; each image goes into the batch queue on its own."""
        for image in images:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[0] % 32 or image.shape[2] != 3:
                raise ValueError("the detector takes letterboxed uint8 [S, S, 3] images, S a multiple of 32; "
                                 f"got {image.dtype} {image.shape}")
        boxes = await asyncio.gather(*(self.detect_batch(image) for image in images))
        return [Detection(boxes=found, version=self.version) for found in boxes]

    async def ready(self) -> str:
        return self.version
