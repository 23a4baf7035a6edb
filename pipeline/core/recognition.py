"""The recognition core's steps: detector boxes → regions → crops → which answer is the prominent product's.

pipeline.core.photo_to_answer strings them into the one loop that serving, evaluation and the benchmarks run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pipeline.core.preprocessing import Letterboxed, Photo, classifier_input, decode_photo, detector_input, letterbox
from pipeline.core.settings import RecognizerSettings

if TYPE_CHECKING:
    from pipeline.core.catalog.match import CatalogMatch

Box = tuple[float, float, float, float]


def prepare_photo(data: bytes, settings: RecognizerSettings, trained_size: int) -> tuple[Photo, Letterboxed]:
    """Decode an upload once; the detector's exact input (the photo shrunk, then letterboxed)."""
    photo = decode_photo(data, min_side=settings.decode_min_side)
    shrunk = detector_input(photo.image, settings.detector_image_max_side)
    return photo, letterbox(shrunk, settings.detector_input_size or trained_size)


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

    A little context around a tight box helps the classifier (BENCHMARKS.md, "Figures behind the settings")."""
    if len(boxes) == 0:
        return [None]
    regions: list[Box | None] = []
    for x1, y1, x2, y2 in (tuple(float(v) for v in box[:4]) for box in boxes):
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        regions.append((x1 - dx, y1 - dy, x2 + dx, y2 + dy))
    return regions


def whole_photo_box(width: int, height: int, share: float = 1.0) -> Box | None:
    """The whole-photo view of a width x height photo: the centre `share` of each side (None: all of it).

    Training cuts random crops of 60-100% of a photo's area, so a product fills more of the network's input there
    than in the whole photo squashed: a centre cut at test time gives the network the size it learned (the "FixRes"
    effect). The share is the model's (model_label/ manifest, chosen on the selection split)."""
    if not 0 < share <= 1:
        raise ValueError(f"the whole-photo share must be in (0, 1], not {share}")
    if share == 1:
        return None
    dx, dy = width * (1 - share) / 2, height * (1 - share) / 2
    return (dx, dy, width - dx, height - dy)


def crops(image: Image.Image, boxes: Sequence[Box | None], size: int, whole_photo_share: float = 1.0) -> list[np.ndarray]:
    """Classifier inputs (uint8 size x size RGB) for each box of the decoded photo; None: its whole-photo view."""
    whole = whole_photo_box(image.width, image.height, whole_photo_share)
    return [classifier_input(image, whole if box is None else box, size) for box in boxes]


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


def hello_probabilities(crop: np.ndarray, whole_photo: np.ndarray, detected: Iterable[bool], policy: str) -> np.ndarray:
    """/hello's probabilities of many photos under `policy`: `prominent_probabilities` of each photo's row of
    `crop` (its largest box's crop) and of `whole_photo` (its whole photo's), a photo with nothing detected having
    only its whole photo (its `crop` row). Evaluation derives every policy's answers from one pass this way."""
    return np.stack([prominent_probabilities(c, w if d else None, policy) for c, w, d in zip(crop, whole_photo, detected)])


def needs_whole_photo(policy: str) -> bool:
    """Whether the policy classifies the whole photo besides the crops."""
    return policy != "crop"


@dataclass(frozen=True)
class Answer:
    """The answer for one crop: the classifier's, and the catalog's when the catalog rule gave it the word."""

    candidates: list[tuple[str, float]]  # the classifier's top-k (label, probability), most likely first
    known: bool  # the classifier's top probability reaches the unknown threshold
    match: CatalogMatch | None = None  # the catalog's closest enrolled product, when a catalog was asked
    by_catalog: bool = False  # the catalog names this product (pipeline.core.catalog.rule)

    @property
    def label(self) -> str:
        """What the product is called: the enrolled product's label, else the classifier's top candidate, known or
        not (what the original client always got)."""
        return self.match.label if self.by_catalog and self.match else self.candidates[0][0]


def answer(probabilities: np.ndarray, labels: Sequence[str], top_k: int, unknown_threshold: float) -> Answer:
    """Top-k candidates of one softmax row, and whether the top one is sure enough to be called known."""
    top = np.argsort(-probabilities, kind="stable")[:top_k]
    return Answer(
        candidates=[(labels[i], float(probabilities[i])) for i in top],
        known=bool(probabilities[top[0]] >= unknown_threshold),
    )
