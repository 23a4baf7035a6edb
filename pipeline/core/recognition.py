"""The recognition core: detector settings → boxes → which box → crops → classifier answer.

Serving (deployments/), evaluation (pipeline/evaluate.py) and the benchmark's in-process pipeline
(load_tests/inprocess.py) all go through these functions, so the figures the evaluation reports are those of
the code that answers `/hello`. No TensorFlow, torch or ultralytics imports here (the CPU-only ingress imports
it); the detector and classifier models are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.preprocessing import (
    DECODE_MIN_SIDE,
    Letterboxed,
    Photo,
    classifier_input,
    decode_photo,
    detector_input,
    letterbox,
)

Box = tuple[float, float, float, float]



@dataclass(frozen=True)
class DetectorSettings:
    """How the detector is asked: thresholds and the most boxes per photo."""

    confidence_threshold: float = 0.25
    iou_threshold: float = 0.5
    max_detections: int = 10

    def __post_init__(self) -> None:
        if not (0 <= self.confidence_threshold <= 1 and 0 < self.iou_threshold <= 1):
            raise ValueError("confidence_threshold must be in [0, 1] and iou_threshold in (0, 1]")
        if self.max_detections < 1:
            raise ValueError("max_detections must be >= 1")


@dataclass(frozen=True)
class PhotoSettings:
    """How the ingress turns an upload into the detector's image, and boxes into crops."""

    detector_image_max_side: int = 640  # the photo is shrunk to this, then letterboxed to the detector's input
    detector_input_size: int | None = None  # the letterbox side; None: the size the detector was trained at
    decode_min_side: int = DECODE_MIN_SIDE  # JPEGs decode at reduced size while the long side stays this long
    crop_margin: float = 0.2  # each side of a box grows by this share of its size before the crop: context

    def __post_init__(self) -> None:
        if self.detector_image_max_side < 32 or self.decode_min_side < self.detector_image_max_side:
            raise ValueError("detector_image_max_side must be >= 32 and decode_min_side >= detector_image_max_side")
        if self.detector_input_size is not None and (self.detector_input_size < 32 or self.detector_input_size % 32):
            raise ValueError("detector_input_size must be a multiple of 32 (the model's stride), at least 32")
        if not 0 <= self.crop_margin <= 1:
            raise ValueError("crop_margin must be in [0, 1]")


@dataclass(frozen=True)
class ServingSettings:
    """What serve_config.yaml's user_config says about recognition (evaluation and benchmarks reuse it)."""

    photo: PhotoSettings
    detector: DetectorSettings
    top_k: int = 5
    unknown_threshold: float | None = None  # None: the calibrated threshold in the manifest


def read_serve_config(path: Path | str = SERVE_CONFIG) -> dict:
    """serve_config.yaml as a dict: the one reader of the file (serving settings, tests, load tests)."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def deployment_config(config: dict, name: str) -> dict:
    """The `deployments` entry called `name` of a serve config's (only) application."""
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def serving_settings(path: Path | str = SERVE_CONFIG) -> ServingSettings:
    """The recognition settings of serve_config.yaml (the one place they are written down)."""
    application = read_serve_config(path)["applications"][0]
    configs = {d["name"]: d.get("user_config") or {} for d in application["deployments"]}
    classifier = configs.get("Classifier", {})

    # user_config also holds batching settings: keep the keys the settings dataclass has
    def fields_of(settings_type: type[PhotoSettings | DetectorSettings], deployment: str) -> dict:
        return {k: v for k, v in configs.get(deployment, {}).items() if k in settings_type.__dataclass_fields__}

    return ServingSettings(
        photo=PhotoSettings(**fields_of(PhotoSettings, "Recognizer")),
        detector=DetectorSettings(**fields_of(DetectorSettings, "Detector")),
        top_k=int(classifier.get("top_k", 5)),
        unknown_threshold=classifier.get("unknown_threshold"),
    )


def prepare_photo(data: bytes, settings: PhotoSettings, trained_size: int) -> tuple[Photo, Letterboxed]:
    """Decode an upload once; the detector's exact input (the photo shrunk, then letterboxed)."""
    photo = decode_photo(data, min_side=settings.decode_min_side)
    shrunk = detector_input(photo.image, settings.detector_image_max_side)
    return photo, letterbox(shrunk, settings.detector_input_size or trained_size)


def detect(model: Any, images: Sequence[np.ndarray], settings: DetectorSettings, device: str = "cpu",
           fp16: bool = False) -> list[np.ndarray]:
    """Boxes of letterboxed RGB uint8 images (all one square size) with an ultralytics YOLO model: float32
    [K, 5] (x1, y1, x2, y2, conf) in letterbox pixels. `fp16`: half precision, for CUDA (CPU stays fp32)."""
    sizes = {image.shape for image in images}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise ValueError(f"the detector takes letterboxed square images of one size; got shapes {sorted(sizes)}")
    results = model.predict(
        [image[..., ::-1] for image in images],  # ultralytics reads numpy arrays as BGR
        imgsz=images[0].shape[0],  # already letterboxed: predict's own letterbox leaves them as they are
        quantize=16 if fp16 else None,  # ultralytics 8.4's name for the former half=True
        conf=settings.confidence_threshold,
        iou=settings.iou_threshold,
        max_det=settings.max_detections,
        device=device,
        rect=False,  # always the same square letterbox: an image gets the same boxes alone or in any batch
        verbose=False,
    )
    return [
        np.concatenate([r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy()[:, None]], axis=1).astype(np.float32)
        for r in results
    ]


def boxes_in_photo(boxes: np.ndarray, photo: Photo, detector_image: Letterboxed) -> np.ndarray:
    """Detector boxes [K, 5] from letterbox pixels to decoded-photo pixels, largest first.

    The largest box is the product the shopper photographed: it is what `/hello` names.
    """
    boxes = detector_image.boxes_in_source(np.asarray(boxes).reshape(-1, 5))
    boxes[:, :4] *= photo.image.width / detector_image.source_size[0]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]


def crop_boxes(boxes: np.ndarray, margin: float = 0.0) -> list[Box | None]:
    """The regions to classify: every detected box grown by `margin` of its width and height on each side
    (the cut is clipped to the photo), or [None] (the whole photo) when nothing was detected.

    A little context around a tight box helps the classifier (on GroceryStore val, 0.2 took the /hello row of a
    head trained on unexpanded crops from 63.9% to 67.2% top-1)."""
    if len(boxes) == 0:
        return [None]
    regions: list[Box | None] = []
    for x1, y1, x2, y2 in (tuple(float(v) for v in box[:4]) for box in boxes):
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        regions.append((x1 - dx, y1 - dy, x2 + dx, y2 + dy))
    return regions


def crops(image: Image.Image, boxes: Sequence[Box | None], size: int) -> list[np.ndarray]:
    """Classifier inputs (uint8 size x size RGB) for each box of the decoded photo."""
    return [classifier_input(image, box, size) for box in boxes]


HELLO_POLICIES = {  # what the prominent product's (and /hello's) answer is made of; the manifest says which ships
    "crop": "the largest detector box, cropped with the margin",
    "whole_photo": "the whole photo",
    "average": "the mean of the probabilities of the largest box's crop and of the whole photo",
}
DEFAULT_HELLO_POLICY = "crop"


def prominent_probabilities(crop: np.ndarray, whole_photo: np.ndarray | None, policy: str) -> np.ndarray:
    """The prominent product's class probabilities under `policy` (HELLO_POLICIES), from the largest box's crop
    and the whole photo's (None when the crop already is the whole photo: nothing was detected)."""
    if policy not in HELLO_POLICIES:
        raise ValueError(f"unknown prominent-product policy {policy!r}; one of {sorted(HELLO_POLICIES)}")
    if whole_photo is None or policy == "crop":
        return crop
    return whole_photo if policy == "whole_photo" else (crop + whole_photo) / 2


def needs_whole_photo(policy: str) -> bool:
    """Whether the policy classifies the whole photo besides the crops."""
    return policy != "crop"


@dataclass(frozen=True)
class Answer:
    """The classifier's answer for one crop."""

    candidates: list[tuple[str, float]]  # top-k (label, probability), most likely first
    known: bool  # the top probability reaches the unknown threshold

    @property
    def label(self) -> str:
        """The top candidate, known or not (what the original client always got)."""
        return self.candidates[0][0]


def answer(probabilities: np.ndarray, labels: Sequence[str], top_k: int, unknown_threshold: float) -> Answer:
    """Top-k candidates of one softmax row, and whether the top one is sure enough to be called known."""
    top = np.argsort(-probabilities, kind="stable")[:top_k]
    return Answer(
        candidates=[(labels[i], float(probabilities[i])) for i in top],
        known=bool(probabilities[top[0]] >= unknown_threshold),
    )
