"""What the service will answer for each photo of a product being enrolled: the catalog rule, shown to the operator.

Each photo is asked as recognition asks a crop (its embedding and the classifier's probabilities) against the catalog
as it will be less that photo: the product's other photos and every other product. A photo the service would not
answer as the product says why (which trained class or product wins, how close), so the operator can add photos or
say that the product takes precedence over that class in their store (pipeline.core.catalog.rule).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.core.catalog.match import CatalogIndex, CatalogMatch, unit_rows
from pipeline.core.catalog.rule import GALLERY_CLASSES, CatalogRule, trained_side

ANSWERS = ("this_product", "other_product", "trained_class", "unknown", "alone")


@dataclass(frozen=True)
class PhotoFeedback:
    """One photo's answer once enrolled, asked without itself, and why."""

    position: int  # the photo's index among the request's photos
    answered_as: str  # one of ANSWERS; "alone": the product's only photo, nothing to ask it against
    label: str | None  # what the service would answer
    sku: str | None  # the product named, when the catalog names one
    product_similarity: float | None  # cosine to the product's nearest other photo
    model_label: str | None  # the classifier's own answer, and its top probability
    model_confidence: float | None
    training_label: str | None  # the trained class of the crop's nearest training photo, and its cosine
    training_similarity: float | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def leave_one_out(sku: str, label: str, crops: np.ndarray, probabilities: np.ndarray, enrolled: np.ndarray,
                  positions: Sequence[int], others: CatalogIndex | None, gallery: CatalogIndex | None, labels: Sequence[str],
                  rule: CatalogRule, unknown_threshold: float, set_aside: Collection[str] = (),
                  extra_enrolled: np.ndarray | None = None) -> list[PhotoFeedback]:
    """Per photo of the product (`crops` [n, D]: its crop's embedding, the query; `probabilities` [n, C]: the
    classifier's answer for it; `enrolled` [n, D]: its stored vector; `positions`: its index in the request), the
    answer the service will give it. `others`: the catalog without this product; `gallery`: the classifier's
    (labelled with class names); `set_aside`: the classes the product takes precedence over; `extra_enrolled`
    [m, D]: the product's photos already stored (photos added to it), its other photos too, but not asked."""
    crops, enrolled = unit_rows(crops), unit_rows(enrolled)
    extra = unit_rows(extra_enrolled) if extra_enrolled is not None else np.empty((0, crops.shape[1]), np.float32)
    if len(crops) == 1 and not len(extra):
        alone = trained_side(probabilities[0], labels, unknown_threshold)
        return [PhotoFeedback(positions[0], "alone", None, None, None, alone.label, alone.confidence, None, None,
                              "the product's only photo: enroll two or more to see how its photos will be answered")]
    similarity = crops @ enrolled.T
    np.fill_diagonal(similarity, -np.inf)
    similarity = np.concatenate([similarity, crops @ extra.T], axis=1)
    other_best = others.best(crops) if others is not None and not others.empty else [None] * len(crops)
    neighbours = gallery.top(crops, GALLERY_CLASSES) if gallery is not None and rule.needs_gallery else [None] * len(crops)
    result = []
    for i, position in enumerate(positions):
        own = CatalogMatch(sku, label, float(similarity[i].max()))
        other = other_best[i]
        closest = other if other is not None and other.similarity > own.similarity else own
        side = trained_side(probabilities[i], labels, unknown_threshold, neighbours[i], set_aside if closest is own else ())
        facts = (own.similarity, side.label, side.confidence, side.training_label, side.training_similarity)
        if rule.picks_catalog_for(closest, side):
            if closest is own:
                result.append(PhotoFeedback(position, "this_product", label, sku, *facts, "answered as this product"))
            else:
                result.append(PhotoFeedback(position, "other_product", closest.label, closest.sku, *facts,
                                            f"closer to the enrolled product {closest.sku!r} ({closest.similarity:.2f}) than to "
                                            f"this product's other photos ({own.similarity:.2f})"))
            continue
        answered_as = "trained_class" if side.known else "unknown"
        result.append(PhotoFeedback(position, answered_as, side.label if side.known else None, None, *facts,
                                    _why_not(closest, own, side, rule)))
    return result


def _why_not(closest: CatalogMatch, own: CatalogMatch, side, rule: CatalogRule) -> str:
    if closest is not own:
        lead = f"closer to {closest.sku!r} ({closest.similarity:.2f}) than to this product's other photos ({own.similarity:.2f}), and "
    else:
        lead = ""
    model = f"the classifier answers {side.label!r} ({side.confidence:.0%})" if side.known else \
        f"the classifier is unsure ({side.label!r}, {side.confidence:.0%})"
    if side.training_similarity is not None and side.training_label is not None:
        return (f"{lead}its training photos of {side.training_label!r} are as close ({side.training_similarity:.2f}) as this "
                f"product's other photos ({own.similarity:.2f}); {model}. Add photos, or give the product precedence over "
                f"{side.training_label!r} in this store")
    return f"{lead}this product's other photos are not close enough ({own.similarity:.2f}); {model}. Add photos"
