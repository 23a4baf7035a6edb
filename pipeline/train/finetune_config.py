"""A fine-tuning run's options (the recipe's defaults) and the files of its run folder, shared by the run
(pipeline.train.finetune), its network (pipeline.train.finetune_network) and the export that reads the folder
(pipeline.release.export)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.train.dataclass_cli import option
from pipeline.train.efficientnet_lite import VARIANTS

SPLIT_NAME = "split.json"  # the fit / selection photos of this run
LAST_NAME = "last.pt"  # model, optimizer, scheduler, epoch: to resume from
BEST_NAME = "best.pt"  # the weights of the best selection top-1, to export
HISTORY_NAME = "history.csv"
SUMMARY_NAME = "train_summary.json"
CONFIG_NAME = "finetune_config.json"
PROBE_NAME = "probe.npz"  # the frozen network's linear probe: the baseline row, and the linear head's start
EXPORT_DIR = "export"
HEADS = ("linear", "cosine")
COSINE_SCALE = 16.0  # the cosine head's logit scale unless a run says otherwise
BASELINE_EXPORT_DIR = "baseline_export"  # ImageNet backbone + the linear probe, for the evaluation's first row


@dataclass
class FinetuneConfig:
    """One fine-tuning run; the defaults are the recipe that reached the shipped model (docs/training.md)."""

    out: str = option(help="run folder: split, checkpoints, history, summary, export")
    data: str = option("../shared/data/grocery_store", help="GroceryStore-layout data (train.txt; val.txt is not read)")
    backbone: str = option("lite0", help="EfficientNet-Lite variant", choices=tuple(VARIANTS))
    selection_fraction: float = option(0.15, help="share of each class of train held back for every choice")
    group_similarity: float = option(0.8, help="photos of a class closer than this (cosine, ImageNet Lite0 features) "
                                               "are one session: held back or kept together")
    epochs: int = option(8, help="epochs of fine-tuning")
    batch_size: int = option(32)
    head_lr: float = option(1e-3, help="AdamW learning rate of the linear head")
    backbone_lr: float = option(2e-4, help="AdamW learning rate of the backbone")
    weight_decay: float = option(1e-2, help="AdamW weight decay (none on biases and BatchNorm)")
    warmup_steps: int = option(40, help="linear warm-up, then cosine decay to 0")
    label_smoothing: float = option(0.1)
    head: str = option("cosine", help="cosine (the recipe's since 2026-12-02): a normalised-softmax head, logits = scale x "
                                      "the cosine of the pooled features and each class's weight, which shapes the "
                                      "embedding the catalog matches by; linear: the recipe's before",
                       choices=HEADS)
    cosine_scale: float = option(COSINE_SCALE, help="the cosine head's logit scale (1 / its softmax temperature)")
    cosine_margin: float = option(0.0, help="the cosine head's additive margin in training (CosFace; 0: none)")
    retrieval_weight: float = option(0.0, help="weight of a supervised contrastive loss on the normalised pooled features "
                                               "beside the classification loss (pipeline.train.retrieval_loss; 0: none)")
    retrieval_temperature: float = option(0.1, help="the contrastive loss's temperature")
    photos_per_class: int = option(0, help="batches of batch_size / this classes x this photos each, for the contrastive "
                                           "loss (0: batches drawn at random)")
    probe_l2: float = option(0.03, help="L2 of the linear probe that starts the head")
    resize_margin: float = option(256 / 224, help="photos are resized to input size x this, random crops cut from it")
    crop_scale: tuple[float, float] = option((0.6, 1.0), help="random-resized crop area range")
    color_jitter: float = option(0.2, help="brightness, contrast and saturation x (1 ± this)")
    ema_decay: float = option(0.0, help="also keep an exponential moving average of the weights, updated every step "
                                        "with this decay (0: none); each epoch scores both on the selection split and the "
                                        "better one is the epoch's candidate for best.pt")
    max_per_class: int | None = option(None, help="at most this many train photos per class (small test runs)")
    max_steps: int | None = option(None, help="stop each epoch after this many steps (small test runs)")
    threads: int = option(0, help="torch threads (0: all cores)")
    seed: int = option(0)
    leave_out: int = option(0, help="classes left out of training, drawn with --seed (the catalog's leave-classes-out "
                                    "evaluation: pipeline.release.catalog_evaluation); their train photos stay in split.json")
    resume: bool = option(False, help="go on from <out>/last.pt")
    final_fit: str | None = option(None, help="a held-back run's folder: train its recipe on its fit + selection photos "
                                              "for its chosen epochs and keep its chosen weights (VTAB's protocol); nothing "
                                              "is held back, so every choice comes from that run (the other options are "
                                              "its, but --out, --threads and --resume)")
