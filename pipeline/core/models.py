"""Model loading adapters, one per runtime: the only place a detector or classifier file becomes a callable.

Each framework is imported when a model is loaded, never when this module is, so the ingress imports the core
without TensorFlow, torch or ultralytics. Load torch (the detector) before TensorFlow in one process: the other
order can crash it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.settings import DetectorSettings

logger = logging.getLogger("ray.serve")


class YoloDetector:
    """An ultralytics YOLO checkpoint: letterboxed RGB uint8 images → boxes [K, 5] (x1, y1, x2, y2, confidence)
    in letterbox pixels."""

    def __init__(self, path: Path | str, use_gpu: bool = False, threads: int | None = None) -> None:
        from pipeline.core.yolo_offline import prepare_ultralytics

        prepare_ultralytics()
        import torch
        from ultralytics import YOLO

        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.device = "cuda:0" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = YOLO(str(path), task="detect")
        # The first prediction loads the weights onto the device and makes ultralytics import the rest of torch
        # (torchvision ops, dynamo), which must happen before TensorFlow is loaded: now, not on a request.
        self.detect([np.zeros((64, 64, 3), np.uint8)], DetectorSettings())

    def detect(self, images: Sequence[np.ndarray], settings: DetectorSettings) -> list[np.ndarray]:
        """Boxes per square image; images of several sizes (a live resize under way) take one call per size."""
        boxes: list[np.ndarray] = [np.empty((0, 5), np.float32)] * len(images)
        for shape in {image.shape for image in images}:
            if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
                raise ValueError(f"the detector takes letterboxed square RGB images; got shape {shape}")
            indices = [i for i, image in enumerate(images) if image.shape == shape]
            for index, found in zip(indices, self._predict([images[i] for i in indices], settings)):
                boxes[index] = found
        return boxes

    def _predict(self, images: list[np.ndarray], settings: DetectorSettings) -> list[np.ndarray]:
        results: Any = self.model.predict(
            [image[..., ::-1] for image in images],  # ultralytics reads numpy arrays as BGR
            imgsz=images[0].shape[0],  # already letterboxed: predict's own letterbox leaves them as they are
            quantize=16 if settings.fp16_on_gpu and self.device != "cpu" else None,  # ultralytics 8.4's half=True
            conf=settings.confidence_threshold,
            iou=settings.iou_threshold,
            max_det=settings.max_detections,
            device=self.device,
            rect=False,  # always the same square letterbox: an image gets the same boxes alone or in any batch
            verbose=False,
        )
        return [
            np.concatenate([r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy()[:, None]], axis=1).astype(np.float32)
            for r in results
        ]


class SavedModelClassifier:
    """The classifier's TF SavedModel: uint8 crops [N, S, S, 3] → class probabilities [N, C], through its `serve`
    function (no Keras predict()), in batches of at most `batch`."""

    def __init__(self, path: Path | str, threads: int | None = None, batch: int = 32) -> None:
        import tensorflow as tf

        try:
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)  # TF takes the whole card otherwise
        except RuntimeError:  # TensorFlow already started in this process (tests, notebooks)
            logger.warning("TensorFlow was initialised before this classifier: thread and GPU settings unchanged")
        self.tf = tf
        self.gpus = tf.config.list_physical_devices("GPU")
        self.batch = batch
        self.model = tf.saved_model.load(str(path))

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        outputs = [self.model.serve(self.tf.constant(np.stack(crops[at:at + self.batch]).astype(np.float32))).numpy()
                   for at in range(0, len(crops), self.batch)]
        return np.concatenate(outputs)
