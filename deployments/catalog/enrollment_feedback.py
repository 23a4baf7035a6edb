"""What an enrollment's answer tells the operator about its photos: for each accepted photo, what the service will
answer for it once enrolled (asked without itself, pipeline.core.catalog.feedback.leave_one_out) and why, and how
many of them will be answered as the product. The Catalog deployment adds it to the 201 of an enrollment, a
replacement and an addition of photos; it never fails the write: what cannot be computed says why instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.catalog.feedback import leave_one_out
from pipeline.core.catalog.match import CatalogIndex, CatalogSnapshot
from pipeline.core.photo_to_answer import PhotoToAnswer

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class AskedPhoto:
    """An accepted photo as recognition would ask it: its position in the request, its largest product's crop
    embedding (the query), the classifier's probabilities the service answers that product with, and its stored vector."""

    position: int
    query: np.ndarray | None  # None: the model gives no embedding
    probabilities: np.ndarray | None
    enrolled: np.ndarray


def unavailable(reason: str) -> dict[str, Any]:
    return {"feedback": None, "answered_as_product": None, "feedback_unavailable": reason}


def enrollment_feedback(sku: str, label: str, photos: Sequence[AskedPhoto], catalog: CatalogSnapshot,
                        gallery: CatalogIndex | None, loop: PhotoToAnswer, added: bool) -> dict[str, Any]:
    """The answer's `feedback` (one PhotoFeedback per photo), `answered_as_product` ({"photos": k, "of": n}: of the
    n photos asked, k will be answered as the product) and `feedback_unavailable` (why there is none, else None).

    `catalog`: the snapshot as the write found it; the product's own rows in it are its stored photos, which photos
    `added` to it are asked against too (a replacement's are replaced). `gallery`: the classifier's, for the rules that
    compare with it. The rule, the unknown threshold and the classes the product takes precedence over are those
    recognition applies: the loop's (the manifest's rule and the ingress's live overrides, the serving runtime's
    calibrated threshold) and the snapshot's."""
    try:
        if any(photo.query is None or photo.probabilities is None for photo in photos):
            return unavailable("the classifier gives no embedding of a crop (a model exported before embeddings)")
        rule = loop.catalog_rule
        if rule.needs_gallery and gallery is None:
            return unavailable(f"the catalog rule {rule.policy!r} compares with the classifier's gallery, which this "
                               "model folder lacks (python -m pipeline.release.catalog_gallery)")
        # The catalog less this product, as an index of its own: built per write from the snapshot's vectors (every
        # other product's photos scaled to int8 once: about 0.3 s at the store's 20,000-photo limit, on a thread).
        others = CatalogIndex(catalog.without(sku))
        queries = [p.query for p in photos if p.query is not None]  # all of them (checked above)
        probabilities = [p.probabilities for p in photos if p.probabilities is not None]
        answers = leave_one_out(sku, label, np.stack(queries), np.stack(probabilities),
                                np.stack([p.enrolled for p in photos]), [p.position for p in photos], others, gallery,
                                loop.models.labels, rule, loop.unknown_threshold, catalog.precedence.get(sku, ()),
                                extra_enrolled=catalog.vectors_of(sku) if added else None)
    except Exception as error:  # the photos are stored: what they will be answered as is a courtesy, never a failure
        logger.exception("Catalog: no enrollment feedback for %s", sku)
        return unavailable(f"the feedback could not be computed ({type(error).__name__}); the photos are enrolled")
    asked = [answer for answer in answers if answer.answered_as != "alone"]
    return {"feedback": [answer.as_json() for answer in answers], "feedback_unavailable": None,
            "answered_as_product": {"photos": sum(a.answered_as == "this_product" for a in asked), "of": len(asked)}}
