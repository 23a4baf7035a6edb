"""The recognition pipeline in one plain process, no Ray and no HTTP framework of ours: what the benchmark
compares the served graph against. Same models (the model_label loader), same preprocessing
(pipeline.preprocessing), same settings (serve_config.yaml's user_config), so only the serving differs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """The user_config values of serve_config.yaml that shape the work per photo."""

    decode_min_side: int
    detector_image_max_side: int
    input_size: int | None
    confidence_threshold: float
    iou_threshold: float
    max_detections: int

    @classmethod
    def shipped(cls, path: Path = REPO / "serve_config.yaml") -> "Settings":
        deployments = {d["name"]: d.get("user_config", {}) for d in yaml.safe_load(path.read_text())["applications"][0]["deployments"]}
        recognizer, detector = deployments["Recognizer"], deployments["Detector"]
        return cls(recognizer["decode_min_side"], recognizer["detector_image_max_side"], detector.get("input_size"),
                   detector["confidence_threshold"], detector["iou_threshold"], detector["max_detections"])


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over every photo processed."""

    decode: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    classify: float = 0.0
    photos: int = 0
    crops: int = 0
    batches: list[int] = field(default_factory=list)


class InProcessPipeline:
    """decode → YOLO → crop → classify, on lists of photos (one at a time: the original module's shape)."""

    def __init__(self, model_dir: str | None, settings: Settings | None = None, threads: int | None = None) -> None:
        from pipeline.yolo_offline import prepare_ultralytics

        prepare_ultralytics()
        import torch
        from ultralytics import YOLO

        from pipeline.model_label import load_model_label

        threads = threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.settings = settings or Settings.shipped()
        self.bundle = load_model_label(model_dir)
        self.detector = YOLO(str(self.bundle.detector_path), task="detect")
        # A first prediction makes ultralytics import the rest of torch (torchvision ops, dynamo, triton),
        # which segfaults once TensorFlow is loaded: so torch goes all the way in before TensorFlow.
        self.detector.predict([np.zeros((64, 64, 3), np.uint8)], imgsz=64, device="cpu", verbose=False)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        self.tf = tf
        self.classifier = tf.saved_model.load(str(self.bundle.classifier_path))
        self.labels = self.bundle.labels
        self.times = StageTimes()
        self.recognize([self._warmup_photo()])  # load weights and trace now, not on the first request
        self.times = StageTimes()

    @staticmethod
    def _warmup_photo() -> bytes:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (640, 480), (128, 128, 128)).save(buffer, "JPEG")
        return buffer.getvalue()

    def decode(self, photos: list[bytes]) -> tuple[list, list[np.ndarray], float]:
        """Decode step on its own, so a caller can run it ahead in a thread (Pillow releases the GIL)."""
        from pipeline.preprocessing import decode_photo, detector_input

        started = time.perf_counter()
        decoded = [decode_photo(data, min_side=self.settings.decode_min_side) for data in photos]
        detector_images = [detector_input(photo.image, self.settings.detector_image_max_side) for photo in decoded]
        return decoded, detector_images, time.perf_counter() - started

    def recognize(self, photos: list[bytes], classifier_batch: int = 16, decoded: tuple | None = None) -> list[str]:
        """The top label of each photo's largest product (the whole photo when nothing is detected).

        `decoded`: the result of `decode(photos)` when it was run ahead."""
        from pipeline.preprocessing import classifier_input

        s, times = self.settings, self.times
        decoded, detector_images, decode_s = decoded or self.decode(photos)
        times.decode += decode_s
        decoded_at = time.perf_counter()
        results = self.detector.predict(
            [image[..., ::-1] for image in detector_images],  # ultralytics reads numpy arrays as BGR
            imgsz=s.input_size or self.bundle.detector_input_size, conf=s.confidence_threshold, iou=s.iou_threshold,
            max_det=s.max_detections, device="cpu", half=False, rect=False, verbose=False,
        )
        detected_at = time.perf_counter()
        crops, owners = [], []
        for index, (photo, image, result) in enumerate(zip(decoded, detector_images, results)):
            boxes = result.boxes.xyxy.cpu().numpy().astype(np.float64) * (photo.image.width / image.shape[1])
            boxes = boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")]
            for box in ([None] if len(boxes) == 0 else [tuple(b) for b in boxes]):
                crops.append(classifier_input(photo.image, box, self.bundle.classifier_input_size))
                owners.append(index)
        cropped_at = time.perf_counter()
        probabilities = []
        for at in range(0, len(crops), classifier_batch):
            batch = crops[at:at + classifier_batch]
            times.batches.append(len(batch))
            probabilities += list(self.classifier.serve(self.tf.constant(np.stack(batch).astype(np.float32))).numpy())
        classified_at = time.perf_counter()
        labels: list[str | None] = [None] * len(photos)
        for owner, p in zip(owners, probabilities):
            if labels[owner] is None:  # the first crop of a photo is its largest product
                labels[owner] = self.labels[int(np.argmax(p))]
        times.detect += detected_at - decoded_at
        times.crop += cropped_at - detected_at
        times.classify += classified_at - cropped_at
        times.photos += len(photos)
        times.crops += len(crops)
        return labels
