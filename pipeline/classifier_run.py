"""A classifier training run: its options (TrainConfig, each one a `train` flag) and the files it keeps in its run
folder, in one place because both trainers (pipeline.classifier, pipeline.classifier_cached) and the export read
and write them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.augmentation import AugmentationConfig
from pipeline.classifier_model import EFFICIENTNET_B0, HUB_PREFIX, ModelConfig
from pipeline.core.preprocessing import CLASSIFIER_INPUT_SIZE
from pipeline.dataclass_cli import option

EXPORT_DIR = "export"
BASELINE_EXPORT_DIR = "baseline_export"  # frozen backbone + linear classifier: the comparison's first row
HISTORY_NAME = "history.csv"
SUMMARY_NAME = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT_DIR = "last"  # model + optimizer + epoch, to resume from
BEST_WEIGHTS_NAME = "best/weights"  # weights of the best validation accuracy, to export (TF checkpoint format:
# tf_keras cannot load .h5 weights into a model built under MirroredStrategy)
STATE_NAME = "state.json"  # epochs done and the best so far, written after every epoch
MODEL_CONFIG_NAME = "model_config.json"  # what `export` needs to rebuild the model
RUN_NAME = "run.json"  # hyperparameters and data description, for the summary `export` writes


@dataclass
class TrainConfig:
    """The training run; every default is the recipe's. Each field is a `train` option too (pipeline.dataclass_cli)."""

    data: str = option(help="split files (train.txt, val.txt, classes.csv) or class folders")
    out: str = option(help="run folder: export/, labels.txt, history.csv, checkpoints/, train_summary.json")
    labels_file: str | None = option(None, flag="--labels",
                                     help="label file, one per line in class order (overrides the data's names)")
    val_fraction: float = option(0.1, help="held back for validation when class folders have no val/")
    input_size: int = option(CLASSIFIER_INPUT_SIZE, help="side of the square model input, in pixels")
    backbone: str = option(EFFICIENTNET_B0, help=f"{EFFICIENTNET_B0} or {HUB_PREFIX}<URL or local SavedModel folder>")
    backbone_weights: str | None = option(None, help=f"{EFFICIENTNET_B0} weights file (default: random)")
    trainable_backbone: bool = option(False, help="train the backbone too (needed without pretrained weights)")
    dropout: float = option(0.2, help="dropout rate after each hidden head layer")
    l2: float = option(0.005, help="L2 factor on the head's hidden layers")
    learning_rate: float = option(0.007, help="RMSprop learning rate")
    batch_size: int = option(64, help="images per step")
    epochs: int = option(50, help="at most this many epochs")
    patience: int = option(5, help="early stopping on validation accuracy")
    early_stopping_start_epoch: int = option(
        0, help="epochs of warm-up before early stopping watches (a warm-up for training from scratch)")
    augment: bool = option(True, help="augment the training images")
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)  # its fields are options too
    resume: bool = option(False, help="continue from the last checkpoint and epoch in --out")
    train_batchnorm: bool = option(
        False, help="hub backbone being fine-tuned: BatchNorm learns batch statistics (default: frozen)")
    init_from: str | None = option(
        None, help="start from the best weights of another run folder (fine-tuning stage)")
    crop_boxes: str | None = option(
        None, help="JSON {photo path: box} from `python -m pipeline.detector boxes`: each training photo with a box "
                   "is also a training item cut to it, as /hello cuts it")
    cached_feature_copies: int = option(
        0, help="frozen backbone: compute features once for the image and this many augmented copies, and train the "
                "head on them (0: run the backbone at every step)")
    threads: int = option(0, help="TensorFlow intra- and inter-op threads (0: all cores)")
    verbose: int = option(1, choices=(0, 1, 2), help="1: progress bars")
    seed: int | None = option(None, help="random seed of weights, shuffling and augmentation")

    def model_config(self, num_classes: int) -> ModelConfig:
        return ModelConfig(
            num_classes=num_classes,
            input_size=self.input_size,
            backbone=self.backbone,
            backbone_weights=self.backbone_weights,
            trainable_backbone=self.trainable_backbone,
            dropout=self.dropout,
            l2=self.l2,
            train_batchnorm=self.train_batchnorm,
        )


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, content: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written file behind if the run is killed


def has_weights(path: Path) -> bool:
    return Path(f"{path}.index").is_file()


def read_model_config(checkpoint_dir: Path) -> ModelConfig:
    saved = read_json(checkpoint_dir / MODEL_CONFIG_NAME)
    return ModelConfig(**{**saved, "head_units": tuple(saved["head_units"])})
