"""When the catalog names a product instead of the classifier.

Every crop is classified and matched against the catalog's enrolled photos; this rule picks whose answer it is.
The catalog's nearest product alone would be wrong for the products the classifier was trained on (a flat
nearest-neighbour search over everything loses to the classifier on its own classes), so the catalog speaks only
when its match is close enough by the policy's measure. The policy and its threshold are chosen by the
leave-classes-out evaluation (pipeline.release.catalog_evaluation) on the selection split, for 95% precision of the
catalog's answers, and written into the manifest's `catalog.rule`.

An operator can say that an enrolled product takes precedence over trained classes in their store (the
product's `precedence`): for a crop whose nearest product is that one, those classes are set aside, as if the
classifier had never been trained on them (`trained_side`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the rule needs no faiss
    from pipeline.core.catalog.match import CatalogMatch

CATALOG_POLICIES = {
    "similarity": "the catalog's closest product, when its cosine similarity is at least `threshold`",
    "unknown_only": "the catalog's closest product, when its cosine similarity is at least `threshold` and the "
                    "classifier's own answer is unknown (its top probability under the unknown threshold)",
    "beats_training": "the catalog's closest product, when the crop is closer to it than to any photo the classifier "
                      "was trained on (model_label's gallery, pipeline.release.catalog_gallery) by at least `threshold` (cosine)",
    "calibrated": "the catalog's closest product, when a logistic score of its similarity, the crop's similarity to the "
                  "classifier's nearest training photo and the classifier's own top probability (`weights`, fitted on the "
                  "leave-classes-out selection split) is at least `threshold` (a log-odds)",
}
NEEDS_GALLERY = frozenset({"beats_training", "calibrated"})
CALIBRATED_FEATURES = ("bias", "catalog_similarity", "training_similarity", "model_confidence")
GALLERY_CLASSES = 8
"""How many trained classes' nearest photos a crop is given (the gallery's `top`): enough that the nearest of a class
its enrolled product does not take precedence over is among them."""
DEFAULT_CATALOG_POLICY = "similarity"
DEFAULT_THRESHOLD = 0.8
"""Until a model_label's manifest says otherwise (the evaluation's choice for that classifier)."""


@dataclass(frozen=True)
class TrainedSide:
    """What the classifier's side offers for one crop, with the classes its nearest product takes precedence over
    set aside: its top probability among the others, whether that is known, and the cosine of the crop's nearest
    training photo of another class (None: no gallery asked)."""

    confidence: float
    known: bool
    training_similarity: float | None = None
    label: str | None = None  # the trained class it would answer
    training_label: str | None = None  # the class of that nearest training photo


def trained_side(probabilities: np.ndarray, labels: Sequence[str], unknown_threshold: float,
                 neighbours: Sequence[CatalogMatch] | None = None, set_aside: Collection[str] = ()) -> TrainedSide:
    """The classifier's side for one crop: `probabilities` its softmax row, `neighbours` its nearest training photos
    per class (the gallery's `top`, labels as class names), `set_aside` the classes the matched product takes
    precedence over."""
    probabilities = np.asarray(probabilities, np.float64)
    if set_aside:
        probabilities = np.where(np.isin(np.asarray(labels), list(set_aside)), 0.0, probabilities)
    top = int(np.argmax(probabilities))
    confidence = float(probabilities[top])
    nearest = next((n for n in neighbours or () if n.label not in set_aside), None)
    return TrainedSide(confidence, confidence >= unknown_threshold,
                       None if neighbours is None else (nearest.similarity if nearest else -1.0),
                       labels[top], nearest.label if nearest else None)


@dataclass(frozen=True)
class CatalogRule:
    policy: str = DEFAULT_CATALOG_POLICY
    threshold: float = DEFAULT_THRESHOLD  # a cosine similarity; for beats_training a margin of cosines; for calibrated a log-odds
    weights: tuple[float, ...] = ()  # calibrated: one per CALIBRATED_FEATURES

    def __post_init__(self) -> None:
        if self.policy not in CATALOG_POLICIES:
            raise ValueError(f"unknown catalog policy {self.policy!r}; one of {sorted(CATALOG_POLICIES)}")
        if self.policy == "calibrated":
            if len(self.weights) != len(CALIBRATED_FEATURES) or not all(math.isfinite(w) for w in self.weights):
                raise ValueError(f"the calibrated policy takes {len(CALIBRATED_FEATURES)} finite weights: "
                                 f"{', '.join(CALIBRATED_FEATURES)}")
            if not math.isfinite(self.threshold):
                raise ValueError("a calibrated threshold is a finite log-odds")
        elif not -2 <= self.threshold <= 2:
            raise ValueError("a catalog threshold is a cosine similarity or a difference of two: in [-2, 2]")

    @property
    def needs_gallery(self) -> bool:
        return self.policy in NEEDS_GALLERY

    def score(self, match: CatalogMatch, training_similarity: float | None, model_confidence: float | None = None) -> float:
        """What the threshold is compared with."""
        if not self.needs_gallery:
            return match.similarity
        if training_similarity is None:
            raise ValueError(f"the catalog policy {self.policy!r} needs the classifier's gallery (pipeline.release.catalog_gallery)")
        if self.policy == "beats_training":
            return match.similarity - training_similarity
        if model_confidence is None:
            raise ValueError("the calibrated catalog policy needs the classifier's top probability")
        features = (1.0, match.similarity, training_similarity, model_confidence)
        return float(sum(w * f for w, f in zip(self.weights, features)))

    def picks_catalog(self, match: CatalogMatch | None, model_known: bool, training_similarity: float | None = None,
                      model_confidence: float | None = None) -> bool:
        """Whether `match` names the crop rather than the classifier (whose answer is `model_known` or not, with top
        probability `model_confidence`); `training_similarity`: the crop's cosine to the nearest photo of the
        classifier's gallery."""
        if match is None or self.score(match, training_similarity, model_confidence) < self.threshold:
            return False
        return self.policy != "unknown_only" or not model_known

    def picks_catalog_for(self, match: CatalogMatch | None, side: TrainedSide) -> bool:
        """`picks_catalog` with the classifier's side as `trained_side` gives it."""
        return self.picks_catalog(match, side.known, side.training_similarity, side.confidence)
