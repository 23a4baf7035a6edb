"""Normalised softmax's head for pipeline.train.finetune (`--head cosine`): logits = scale x cos(features, class weight).

Only directions count, so training pulls each photo's pooled features towards its class's direction: the
L2-normalised embedding the catalog compares crops by is what the loss shapes, not only a linear separation of
the trained classes (Wang et al., NormFace, 2017; Zhai & Wu, "Classification is a strong baseline for deep metric
learning", 2019). Its own module because it imports torch, which the rest of the pipeline imports lazily.
"""

from __future__ import annotations

import torch


class CosineHead(torch.nn.Module):
    def __init__(self, in_features: int, num_classes: int, scale: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(num_classes, in_features), dim=1))
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalize = torch.nn.functional.normalize
        return self.scale * normalize(features, dim=1) @ normalize(self.weight, dim=1).T

    def imprint(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Each class's weight: the mean direction of its photos' features (weight imprinting, Qi et al. 2018), so
        epoch 1 starts from the nearest-class-mean classifier rather than from chance."""
        directions = torch.nn.functional.normalize(features, dim=1)
        with torch.no_grad():
            for class_id in range(self.weight.shape[0]):
                members = directions[targets == class_id]
                if len(members):
                    self.weight[class_id] = torch.nn.functional.normalize(members.mean(0), dim=0)


class AdditiveMarginLoss(torch.nn.Module):
    """Cross-entropy on the cosine head's logits with the true class's cosine lowered by `margin` (CosFace: Wang et al.,
    2018): a photo counts as right only once it is `margin` closer to its class than to any other, which pulls each
    class tighter and pushes classes apart, in the features a nearest-neighbour search reads. Training only: served
    logits are the plain scale x cosine."""

    def __init__(self, scale: float, margin: float, label_smoothing: float = 0.0):
        super().__init__()
        self.scale, self.margin = scale, margin
        self.cross_entropy = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lowered = logits - self.scale * self.margin * torch.nn.functional.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return self.cross_entropy(lowered, targets)
