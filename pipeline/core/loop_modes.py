"""What a pass of the photo→answer loop is for, and so what it computes: the loop's modes, resolved in one place.

Serving asks for every product (/v1/recognize) or for /hello's answer alone; the Catalog embeds an enrollment
photo's largest product; evaluation compares every /hello policy from one pass; training and calibration want the
largest product's region. Each mode says how many regions are classified and which /hello policy makes the
prominent product's answer; `LoopMode.plan` turns that, with the model's policy and whether a catalog is matched,
into what the loop does: whether it asks the detector, how many regions it classifies, whether the whole photo too.
What the loop matches against (a catalog, the classifier's gallery) is data the caller passes, not a mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.recognition import needs_whole_photo

ENROLLMENT_POLICY = "average"
"""The policy an enrollment photo goes through the loop with: its largest product's crop and the whole photo are
both classified, for `Recognized.enrolled_vector`."""


@dataclass(frozen=True)
class Plan:
    """What one pass of the loop computes."""

    policy: str  # the /hello policy the prominent product's answer is made by (recognition.HELLO_POLICIES)
    asks_detector: bool  # False: the whole photo alone is classified, and the detector's stage takes no time
    regions: int | None  # how many regions are classified, largest first; None: every one
    whole_photo: bool  # the whole photo is classified too, besides a detected product's crop


@dataclass(frozen=True)
class LoopMode:
    """A named purpose of the loop: how many regions it classifies and by which /hello policy."""

    name: str
    largest_only: bool  # only the largest product's region (what /hello names); else every detected product
    policy: str | None = None  # the /hello policy this mode always uses; None: the model's (its manifest's)
    answer_only: bool = False  # only what the prominent answer reads: under the whole-photo policy with no
    #   catalog to match, the whole photo alone, without asking the detector (its boxes would change no answer)

    def plan(self, model_policy: str, matching: bool) -> Plan:
        """What this mode computes for a model whose /hello policy is `model_policy`; `matching`: a catalog is
        matched against the regions' embeddings (it needs the crop of the largest product)."""
        policy = self.policy or model_policy
        whole_photo_alone = self.answer_only and policy == "whole_photo" and not matching
        return Plan(policy, asks_detector=not whole_photo_alone, regions=1 if self.largest_only else None,
                    whole_photo=needs_whole_photo(policy))


EVERY_PRODUCT = LoopMode("every product", largest_only=False)
"""/v1/recognize: every detected product, the first answer by the model's /hello policy."""

HELLO = LoopMode("/hello's answer", largest_only=True, answer_only=True)
"""/hello (and the benchmarks of it): only what the prominent product's answer reads."""

LARGEST_PRODUCT = LoopMode("the largest product", largest_only=True)
"""The largest product's region, by the model's policy: what /hello's classifier is sent (calibration, the detector's
check of its crops)."""

ENROLLMENT = LoopMode("enrollment", largest_only=True, policy=ENROLLMENT_POLICY)
"""A catalog photo: its largest product's crop and the whole photo, for `Recognized.enrolled_vector`."""

ALL_POLICIES = LoopMode("all /hello policies", largest_only=True, policy="average")
"""Evaluation: the largest product's crop and the whole photo (policy "average" classifies both), from which every
/hello policy's answer is derived (recognition.hello_probabilities)."""
