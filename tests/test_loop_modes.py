"""pipeline/core/loop_modes.py: what each named mode of the photo→answer loop computes, resolved in one place (the
loop itself, with stand-in models: tests/test_photo_to_answer.py)."""

from __future__ import annotations

import pytest

from pipeline.core.loop_modes import ALL_POLICIES, ENROLLMENT, EVERY_PRODUCT, HELLO, LARGEST_PRODUCT, LoopMode, Plan


@pytest.mark.parametrize("mode, model_policy, matching, plan", [
    (EVERY_PRODUCT, "crop", False, Plan("crop", asks_detector=True, regions=None, whole_photo=False)),
    (EVERY_PRODUCT, "average", True, Plan("average", asks_detector=True, regions=None, whole_photo=True)),
    (EVERY_PRODUCT, "whole_photo", False, Plan("whole_photo", asks_detector=True, regions=None, whole_photo=True)),
    # /hello under the whole-photo policy with no catalog to match: the whole photo alone, no detector
    (HELLO, "whole_photo", False, Plan("whole_photo", asks_detector=False, regions=1, whole_photo=True)),
    (HELLO, "whole_photo", True, Plan("whole_photo", asks_detector=True, regions=1, whole_photo=True)),
    (HELLO, "crop", False, Plan("crop", asks_detector=True, regions=1, whole_photo=False)),
    (HELLO, "average", False, Plan("average", asks_detector=True, regions=1, whole_photo=True)),
    (LARGEST_PRODUCT, "whole_photo", False, Plan("whole_photo", asks_detector=True, regions=1, whole_photo=True)),
    (LARGEST_PRODUCT, "crop", False, Plan("crop", asks_detector=True, regions=1, whole_photo=False)),
    # enrollment and evaluation look at the crop and the whole photo whatever the model's policy
    (ENROLLMENT, "crop", False, Plan("average", asks_detector=True, regions=1, whole_photo=True)),
    (ENROLLMENT, "whole_photo", False, Plan("average", asks_detector=True, regions=1, whole_photo=True)),
    (ALL_POLICIES, "crop", False, Plan("average", asks_detector=True, regions=1, whole_photo=True)),
    (ALL_POLICIES, "whole_photo", False, Plan("average", asks_detector=True, regions=1, whole_photo=True)),
], ids=lambda value: value.name if isinstance(value, LoopMode) else None)
def test_each_mode_resolves_what_the_loop_computes(mode, model_policy, matching, plan):
    assert mode.plan(model_policy, matching) == plan


def test_the_modes_are_named_and_distinct():
    modes = (EVERY_PRODUCT, HELLO, LARGEST_PRODUCT, ENROLLMENT, ALL_POLICIES)
    assert len({mode.name for mode in modes}) == len(modes) == len(set(modes))
