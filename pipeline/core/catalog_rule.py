"""When the catalog names a product instead of the classifier.

Every crop is classified and matched against the catalog's enrolled photos; this rule picks whose answer it is.
The catalog's nearest product alone would be wrong for the products the classifier was trained on (a flat
nearest-neighbour search over everything loses to the classifier on its own classes), so the catalog speaks only
when its match is close, and, under the stricter policies, when the classifier is unsure. The policy and the
threshold are chosen by the leave-classes-out evaluation (pipeline.catalog_evaluation) on the selection split,
for 95% precision of the catalog's answers, and written into the manifest's `catalog` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rule needs no faiss
    from pipeline.core.catalog_match import CatalogMatch

CATALOG_POLICIES = {
    "similarity": "the catalog's closest product, when it is at least min_similarity close",
    "unknown_only": "the catalog's closest product, when it is at least min_similarity close and the classifier's "
                    "own answer is unknown (its top probability under the unknown threshold)",
}
DEFAULT_CATALOG_POLICY = "similarity"
DEFAULT_MIN_SIMILARITY = 0.8
"""Until a model_label's manifest says otherwise (the evaluation's choice for that classifier)."""


@dataclass(frozen=True)
class CatalogRule:
    policy: str = DEFAULT_CATALOG_POLICY
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    def __post_init__(self) -> None:
        if self.policy not in CATALOG_POLICIES:
            raise ValueError(f"unknown catalog policy {self.policy!r}; one of {sorted(CATALOG_POLICIES)}")
        if not -1 <= self.min_similarity <= 1:
            raise ValueError("min_similarity is a cosine similarity: in [-1, 1]")

    def picks_catalog(self, match: CatalogMatch | None, model_known: bool) -> bool:
        """Whether `match` names the crop rather than the classifier (whose answer is `model_known` or not)."""
        if match is None or match.similarity < self.min_similarity:
            return False
        return self.policy == "similarity" or not model_known
