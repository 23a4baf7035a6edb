"""What travels between the deployments: typed, so a field renamed on one side fails where it is read, not as
a KeyError deep in the ingress. Plain frozen dataclasses of numpy arrays and strings pickle cheaply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """The Detector's answer for one letterboxed image."""

    boxes: np.ndarray  # float32 [K, 5]: x1, y1, x2, y2 in letterbox pixels, confidence
    version: str  # the detector's model version


@dataclass(frozen=True)
class Classification:
    """The Classifier's answer for the crops of one photo, in the order they were sent."""

    probabilities: np.ndarray  # float32 [N, C]
    version: str  # the classifier's model version (the embeddings' space is pinned to it)
    embeddings: np.ndarray | None  # float32 [N, D] L2-normalised, same forward pass; None: the model has none


def row_slices(counts: list[int]) -> list[slice]:
    """The rows of each part of a call that carried several requests' items back to back (`counts` items each)."""
    ends = np.cumsum(counts, dtype=int).tolist()
    return [slice(end - count, end) for count, end in zip(counts, ends)]


@dataclass(frozen=True)
class Refusal:
    """The Catalog's refusal of a call (an unknown sku, a full catalog, no photo accepted): the ingress answers it
    as the JSON error `status` / `code`. Returned, not raised, so nothing of it depends on how Ray wraps errors."""

    status: int
    code: str
    message: str
    detail: dict | None = None  # extra fields of the error body (the rejected photos)
