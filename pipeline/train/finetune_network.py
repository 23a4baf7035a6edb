"""The torch network a fine-tuning run trains (pipeline.train.finetune): the pretrained EfficientNet-Lite with a new
head, its features and logits, the linear probe that starts a head, the optimiser's groups and schedule, the
augmentation, one training step, and the softmax temperature fitted before export. torch is imported inside each
function, so that importing the run's module (its CLI, its data handling) loads no torch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.core.progress import progress
from pipeline.train.efficientnet_lite import MEAN, STDDEV, VARIANTS
from pipeline.train.finetune_config import COSINE_SCALE, FinetuneConfig
from pipeline.train.retrieval_loss import features_and_logits


def build_network(variant: str, num_classes: int, head: str = "linear", cosine_scale: float = COSINE_SCALE):
    """The torch EfficientNet-Lite with its ImageNet weights (strict) and a new `num_classes` head (HEADS)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name(f"efficientnet-{variant}")
    network.load_state_dict(torch.load(VARIANTS[variant].weights_path(), map_location="cpu", weights_only=True))
    if head == "cosine":
        from pipeline.train.cosine_head import CosineHead  # imports torch at module level: here, torch loads only when training

        network._fc = CosineHead(network._fc.in_features, num_classes, cosine_scale)
    else:
        network._fc = torch.nn.Linear(network._fc.in_features, num_classes)
    return network


def to_input(images):
    """uint8 NHWC (numpy or torch) → the network's normalised float NCHW."""
    import torch

    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    return (x - MEAN) / STDDEV


def pooled_features(network, images: np.ndarray, batch: int = 64, desc: str = "features") -> np.ndarray:
    """The frozen network's pooled features [N, 1280] (eval mode); a progress bar named `desc` counts the photos."""
    import torch

    network.eval()
    out = []
    with torch.no_grad(), progress(desc=desc, total=len(images), unit="photo", leave=False) as bar:
        for start in range(0, len(images), batch):
            x = network.extract_features(to_input(images[start:start + batch]))
            out.append(network._avg_pooling(x).flatten(1).numpy())
            bar.update(len(x))
    return np.concatenate(out)


def logits_of(network, images: np.ndarray, batch: int = 64, desc: str = "scoring") -> np.ndarray:
    """The network's logits [N, classes] (eval mode); a progress bar named `desc` counts the photos."""
    import torch

    network.eval()
    out = []
    with torch.no_grad(), progress(desc=desc, total=len(images), unit="photo", leave=False) as bar:
        for start in range(0, len(images), batch):
            out.append(network(to_input(images[start:start + batch])).numpy())
            bar.update(len(out[-1]))
    return np.concatenate(out)


def linear_probe(features: np.ndarray, targets: np.ndarray, num_classes: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression (L-BFGS) on standardised features, folded back to raw features: (W [C, F], b [C])."""
    import torch

    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = torch.from_numpy((features - mean) / std).float()
    y = torch.from_numpy(targets).long()
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=500, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + l2 * (weight ** 2).sum() / 2
        loss.backward()
        return loss

    optimizer.step(closure)
    w = weight.detach().numpy() / std
    return w.astype(np.float32), (bias.detach().numpy() - w @ mean).astype(np.float32)


def freeze_batchnorm_statistics(network) -> None:
    """BatchNorm layers in eval mode (ImageNet running statistics kept); their scale and shift still train."""
    import torch

    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def parameter_groups(network, config: FinetuneConfig) -> list[dict[str, Any]]:
    """Head and backbone at their own rates; no weight decay on biases and BatchNorm (1-d parameters)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in network.named_parameters():
        groups.setdefault((name.startswith("_fc."), parameter.ndim > 1), []).append(parameter)
    return [{"params": params, "lr": config.head_lr if head else config.backbone_lr,
             "weight_decay": config.weight_decay if decay else 0.0}
            for (head, decay), params in sorted(groups.items())]


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def augment(batch, size: int, config: FinetuneConfig):
    """Random-resized crop to `size`, horizontal flip, brightness/contrast/saturation jitter (uint8 NHWC tensor in)."""
    from torchvision.transforms import v2

    jitter = config.color_jitter
    transform = v2.Compose([
        v2.RandomResizedCrop(size, scale=config.crop_scale, ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
    ])
    import torch

    return torch.stack([transform(image) for image in batch.permute(0, 3, 1, 2)]).permute(0, 2, 3, 1)


def weight_average(network, decay: float):
    """An exponential moving average of the network's weights (torch's AveragedModel; the BatchNorm statistics are
    frozen, so copied), or None for decay 0. Averaging the last steps' weights is a free gain on small data sets."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_step(network, optimizer, scheduler, loss_function, images, targets: np.ndarray) -> float:
    """One update on a batch of uint8 NHWC images; the batch's loss before it."""
    import torch

    x, y = to_input(images), torch.from_numpy(targets).long()
    if getattr(loss_function, "needs_features", False):  # pipeline.train.retrieval_loss
        loss = loss_function(*features_and_logits(network, x), y)
    else:
        loss = loss_function(network(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood (on the selection photos)."""
    import torch

    x, y = torch.from_numpy(logits).double(), torch.from_numpy(targets).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
