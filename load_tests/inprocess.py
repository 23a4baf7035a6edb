"""The recognition pipeline in one plain process, no Ray and no HTTP framework of ours: what the benchmark
compares the served graph against. Same models (the model_label loader), same recognition core
(pipeline.core.recognition), same settings (serve_config.yaml's user_config), so only the serving differs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.preprocessing import Letterboxed
from pipeline.core.recognition import (
    ServingSettings,
    boxes_in_photo,
    crop_boxes,
    crops,
    detect,
    needs_whole_photo,
    prepare_photo,
    prominent_probabilities,
    serving_settings,
)


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

    def __init__(self, model_dir: str | None, settings: ServingSettings | None = None, threads: int | None = None) -> None:
        from pipeline.core.yolo_offline import prepare_ultralytics

        prepare_ultralytics()
        import torch
        from ultralytics import YOLO

        from pipeline.core.model_label import load_model_label

        threads = threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.settings = settings or serving_settings()
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

    def decode(self, photos: list[bytes]) -> tuple[list, list[Letterboxed], float]:
        """Decode step on its own, so a caller can run it ahead in a thread (Pillow releases the GIL)."""
        started = time.perf_counter()
        prepared = [prepare_photo(data, self.settings.photo, self.bundle.detector_input_size) for data in photos]
        return [photo for photo, _ in prepared], [image for _, image in prepared], time.perf_counter() - started

    def recognize(self, photos: list[bytes], classifier_batch: int = 16, decoded: tuple | None = None) -> list[str]:
        """The top label of each photo's largest product (the whole photo when nothing is detected): what
        `/hello` answers. `decoded`: the result of `decode(photos)` when it was run ahead."""
        times = self.times
        decoded, detector_images, decode_s = decoded or self.decode(photos)
        times.decode += decode_s
        decoded_at = time.perf_counter()
        detections = detect(self.detector, [image.pixels for image in detector_images], self.settings.detector)
        detected_at = time.perf_counter()
        photo_crops, owners = [], []
        whole_photo_of: dict[int, int] = {}  # photo → index of its whole-photo crop, when the policy asks for one
        for index, (photo, image, boxes) in enumerate(zip(decoded, detector_images, detections)):
            regions = crop_boxes(boxes_in_photo(boxes, photo, image), self.settings.photo.crop_margin)
            if needs_whole_photo(self.bundle.hello_policy) and regions[0] is not None:
                whole_photo_of[index] = len(photo_crops) + len(regions)
                regions = regions + [None]
            photo_crops += crops(photo.image, regions, self.bundle.classifier_input_size)
            owners += [index] * len(regions)
        cropped_at = time.perf_counter()
        probabilities = []
        for at in range(0, len(photo_crops), classifier_batch):
            batch = photo_crops[at:at + classifier_batch]
            times.batches.append(len(batch))
            probabilities += list(self.classifier.serve(self.tf.constant(np.stack(batch).astype(np.float32))).numpy())
        classified_at = time.perf_counter()
        labels: list[str | None] = [None] * len(photos)
        for owner, p in zip(owners, probabilities):
            if labels[owner] is None:  # the first crop of a photo is its largest product
                whole = probabilities[whole_photo_of[owner]] if owner in whole_photo_of else None
                labels[owner] = self.labels[int(np.argmax(prominent_probabilities(p, whole, self.bundle.hello_policy)))]
        times.detect += detected_at - decoded_at
        times.crop += cropped_at - detected_at
        times.classify += classified_at - cropped_at
        times.photos += len(photos)
        times.crops += len(photo_crops)
        return labels
