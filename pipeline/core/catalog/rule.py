"""When the catalog names a product instead of the classifier.

Every crop is classified and matched against the catalog's enrolled photos; this rule picks whose answer it is.
The catalog's nearest product alone would be wrong for the products the classifier was trained on (a flat
nearest-neighbour search over everything loses to the classifier on its own classes), so the catalog speaks only
when its match is close enough by the policy's measure. The policy and its threshold are chosen by the
leave-classes-out evaluation (pipeline.release.catalog_evaluation) on the selection split, for 95% precision of the
catalog's answers, and written into the manifest's `catalog.rule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rule needs no faiss
    from pipeline.core.catalog.match import CatalogMatch

CATALOG_POLICIES = {
    "similarity": "the catalog's closest product, when its cosine similarity is at least `threshold`",
    "unknown_only": "the catalog's closest product, when its cosine similarity is at least `threshold` and the "
                    "classifier's own answer is unknown (its top probability under the unknown threshold)",
    "beats_training": "the catalog's closest product, when the crop is closer to it than to any photo the classifier "
                      "was trained on (model_label's gallery, pipeline.release.catalog_gallery) by at least `threshold` (cosine)",
}
NEEDS_GALLERY = frozenset({"beats_training"})
DEFAULT_CATALOG_POLICY = "similarity"
DEFAULT_THRESHOLD = 0.8
"""Until a model_label's manifest says otherwise (the evaluation's choice for that classifier)."""


@dataclass(frozen=True)
class CatalogRule:
    policy: str = DEFAULT_CATALOG_POLICY
    threshold: float = DEFAULT_THRESHOLD  # a cosine similarity, or for beats_training a margin of cosines

    def __post_init__(self) -> None:
        if self.policy not in CATALOG_POLICIES:
            raise ValueError(f"unknown catalog policy {self.policy!r}; one of {sorted(CATALOG_POLICIES)}")
        if not -2 <= self.threshold <= 2:
            raise ValueError("a catalog threshold is a cosine similarity or a difference of two: in [-2, 2]")

    @property
    def needs_gallery(self) -> bool:
        return self.policy in NEEDS_GALLERY

    def score(self, match: CatalogMatch, training_similarity: float | None) -> float:
        """What the threshold is compared with."""
        if not self.needs_gallery:
            return match.similarity
        if training_similarity is None:
            raise ValueError(f"the catalog policy {self.policy!r} needs the classifier's gallery (pipeline.release.catalog_gallery)")
        return match.similarity - training_similarity

    def picks_catalog(self, match: CatalogMatch | None, model_known: bool, training_similarity: float | None = None) -> bool:
        """Whether `match` names the crop rather than the classifier (whose answer is `model_known` or not);
        `training_similarity`: the crop's cosine to the nearest photo of the classifier's gallery."""
        if match is None or self.score(match, training_similarity) < self.threshold:
            return False
        return self.policy != "unknown_only" or not model_known
