"""A retrieval loss beside the classification loss (issue 34's embedding lever): the supervised contrastive loss
(Khosla et al., 2020) on the L2-normalised pooled features, the vectors the catalog matches by. Photos of one class in
a batch are pulled together and every other photo pushed away, in the features themselves rather than only through
the class weights, which is what a product never trained on relies on. It needs photos of one class together in a
batch: `balanced_batches`. torch is imported inside each function, as in pipeline.train.finetune_network."""

from __future__ import annotations

from typing import Any

import numpy as np


def features_and_logits(network, x: Any) -> tuple[Any, Any]:
    """EfficientNet-Lite's forward, keeping its pooled features [B, 1280] beside its logits (torch tensors)."""
    features = network._avg_pooling(network.extract_features(x)).flatten(1)
    return features, network._fc(network._dropout(features))


def supervised_contrastive(features: Any, targets: Any, temperature: float) -> Any:
    """Mean over the anchors that have a positive of -mean_p log(exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T))."""
    import torch

    z = torch.nn.functional.normalize(features, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_probability = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (targets[:, None] == targets[None, :]) & ~self_mask
    count = positives.sum(dim=1)
    anchors = count > 0
    if not anchors.any():
        return features.sum() * 0.0
    per_anchor = torch.where(positives, log_probability, torch.zeros_like(log_probability)).sum(dim=1)
    return -(per_anchor[anchors] / count[anchors]).mean()


class ClassificationAndRetrievalLoss:
    """`classification(logits, targets) + weight x supervised_contrastive(features, targets)` (no parameters of its own)."""

    needs_features = True

    def __init__(self, classification: Any, weight: float, temperature: float):
        self.classification, self.weight, self.temperature = classification, weight, temperature

    def __call__(self, features: Any, logits: Any, targets: Any) -> Any:
        return self.classification(logits, targets) + self.weight * supervised_contrastive(features, targets, self.temperature)


def balanced_batches(targets: np.ndarray, batch_size: int, per_class: int, rng: np.random.Generator) -> list[np.ndarray]:
    """An epoch's batches of batch_size // per_class classes x per_class photos each (P x K sampling): every photo once
    (a class's last group may be smaller), classes and groups shuffled."""
    groups = []
    for class_id in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == class_id))
        groups += [members[start:start + per_class] for start in range(0, len(members), per_class)]
    order = rng.permutation(len(groups))
    classes_per_batch = max(1, batch_size // per_class)
    return [np.concatenate([groups[g] for g in order[start:start + classes_per_batch]])
            for start in range(0, len(order), classes_per_batch)]
