"""pipeline.train.retrieval_loss: the supervised contrastive loss and the class-balanced batches it needs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.train.retrieval_loss import balanced_batches, supervised_contrastive

pytestmark = pytest.mark.train  # torch


def test_the_contrastive_loss_is_worked_out_by_hand_and_falls_as_a_class_draws_together():
    import torch

    # Three unit vectors: 0 and 1 of class 7 at 90 degrees, 2 of class 8 opposite 0. T = 1.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    targets = torch.tensor([7, 7, 8])
    # anchor 0: -log(e^0 / (e^0 + e^-1)); anchor 1: -log(e^0 / (e^0 + e^0)); anchor 2 has no positive
    expected = (-math.log(1 / (1 + math.exp(-1))) - math.log(1 / 2)) / 2
    assert supervised_contrastive(features, targets, 1.0).item() == pytest.approx(expected, rel=1e-6)
    closer = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])  # class 7's photos 37 degrees apart
    assert supervised_contrastive(closer, targets, 1.0).item() < expected
    assert supervised_contrastive(features, torch.tensor([1, 2, 3]), 1.0).item() == 0.0  # no positives: no loss


def test_balanced_batches_hold_every_photo_once_in_groups_of_a_class():
    targets = np.array([0] * 7 + [1] * 4 + [2] * 9)
    batches = balanced_batches(targets, batch_size=8, per_class=4, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(targets)))
    assert all(len(batch) <= 8 for batch in batches)
    for batch in batches:  # at most 2 groups a batch; each group one class
        assert len(set(targets[batch].tolist())) <= 2
