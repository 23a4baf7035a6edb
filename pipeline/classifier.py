"""Train the product classifier (an EfficientNet backbone + dense head) and export it for serving.

The recipe (../shared/DESIGN.md, "Training") is every default here: 256 px, EfficientNet frozen, head
512→256→128→64 (ReLU, dropout, L2 0.005) → softmax, RMSprop lr 0.007, batch 64, up to 50 epochs, early
stopping with patience 5 on validation accuracy, MirroredStrategy over the GPUs present.

Backbones: a TF-Hub image module (`--backbone hub:<URL or local SavedModel folder>`, as the original loaded
EfficientNet-B0) — offline, `python -m pipeline.efficientnet_lite export` writes one with ImageNet-pretrained
EfficientNet-Lite0 weights — or keras.applications' EfficientNet-B0 (`efficientnet_b0`, weights from a file).
Two stages, each a run folder:

    # 1. frozen backbone, head only; features computed once per image and augmented copy (fast on CPU)
    python -m pipeline.classifier train --data ../shared/data/grocery_store --out artifacts/classifier_head \
        --backbone hub:artifacts/efficientnet_lite0 --input-size 224 --cached-feature-copies 3
    # 2. fine-tuning: every backbone weight trainable at a low learning rate, BatchNorm statistics kept
    python -m pipeline.classifier train ... --out artifacts/classifier --trainable-backbone \
        --init-from artifacts/classifier_head --learning-rate 5e-5 --batch-size 32 --epochs 6 --patience 2

Images are read with `pipeline.preprocessing.load_training_image`, the function serving uses too, so a
product looks the same in training and in production. The model takes float32 0–255 pixels and rescales
them itself; the export is a plain SavedModel with a `serve` endpoint that needs neither tf_keras nor TF-Hub:

    loaded = tf.saved_model.load("artifacts/classifier/export")
    probabilities = loaded.serve(tf.constant(batch))  # batch: [N, S, S, 3] float32 0–255

    python -m pipeline.classifier train ... --resume     # go on from the last checkpoint and epoch
    python -m pipeline.classifier export --out artifacts/classifier   # export the best checkpoint
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.model_label import LABELS_NAME, ModelLabelError, read_labels, write_labels
from pipeline.preprocessing import CLASSIFIER_INPUT_SIZE, load_training_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
EFFICIENTNET_B0 = "efficientnet_b0"
HUB_PREFIX = "hub:"

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


class DatasetError(ValueError):
    """The training data cannot be used; the message names the file or folder at fault."""


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    """Image paths and their class ids (0-based, in label order)."""

    paths: list[str]
    class_ids: list[int]
    boxes: list[tuple[float, float, float, float] | None] | None = None  # per item: the photo cut to a box; None: whole

    def counts(self, num_classes: int) -> list[int]:
        return np.bincount(np.asarray(self.class_ids, dtype=np.int64), minlength=num_classes).tolist()

    def box_array(self) -> np.ndarray:
        """[N, 4] float32 boxes, -1 where the item is the whole photo (tf.data needs one dense tensor)."""
        boxes = self.boxes or [None] * len(self.paths)
        return np.array([box if box is not None else (-1.0,) * 4 for box in boxes], dtype=np.float32).reshape(-1, 4)

    def with_crops(self, crop_boxes: dict[str, list[float] | None]) -> "Split":
        """These items, plus one item per photo cut to its box in `crop_boxes` ({photo path: box or null}, as
        `python -m pipeline.detector boxes` writes): the classifier then also learns the crops /hello sends it."""
        whole = self.boxes or [None] * len(self.paths)
        by_file = {Path(path).resolve(): box for path, box in crop_boxes.items()}
        files = [Path(path).resolve() for path in self.paths]
        if not any(file in by_file for file in files):
            raise DatasetError("the crop boxes name none of the training photos: were they made for this data?")
        extra = [(path, class_id, tuple(by_file[file])) for path, class_id, file in zip(self.paths, self.class_ids, files)
                 if by_file.get(file)]
        return Split(self.paths + [p for p, _, _ in extra], self.class_ids + [c for _, c, _ in extra],
                     list(whole) + [b for _, _, b in extra])


@dataclass(frozen=True)
class LabelledData:
    """A training set: class names and labels in class-id order, a train and a validation split."""

    source: str
    layout: str  # "split_files" or "class_folders"
    class_names: list[str]
    labels: list[str]
    train: Split
    val: Split

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def describe(self) -> dict:
        """What the training data was, for train_summary.json and the model manifest."""
        return {
            "source": self.source,
            "layout": self.layout,
            "num_classes": self.num_classes,
            "images": {"train": len(self.train.paths), "val": len(self.val.paths)},
            "train_detector_crops": sum(box is not None for box in self.train.boxes or []),
            "images_per_class": {
                "train": self.train.counts(self.num_classes),
                "val": self.val.counts(self.num_classes),
            },
        }


def grocery_store_label(class_name: str) -> str:
    """The original label format is name_container_size; GroceryStoreDataset classes have only a name,
    and a blank field is a single space."""
    return f"{class_name}_ _ "


def load_labelled_data(data_dir: str | Path, labels_file: str | Path | None = None, val_fraction: float = 0.1) -> LabelledData:
    """Read a data folder in one of the layouts below, check it, and return its splits.

    - split files (GroceryStoreDataset): train.txt and val.txt with `path, class_id[, ...]` lines (paths
      relative to the folder), class names in id order from classes.csv; labels `name_ _ `.
    - class folders: `train/<class>/` and `val/<class>/`, or just `<class>/` folders, of which every
      1/val_fraction-th image (in name order) is held back for validation; labels are the folder names.
    Class folders are in name order. A `labels_file` (one label per line, in class order) overrides labels.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir} is not a folder")
    if (data_dir / "train.txt").is_file():
        data = _load_split_files(data_dir)
    else:
        data = _load_class_folders(data_dir, val_fraction)
    if labels_file is not None:
        labels_file = Path(labels_file)
        try:
            labels = read_labels(labels_file)
        except (OSError, ModelLabelError) as error:
            raise DatasetError(f"{labels_file} cannot be read as a label file: {error}") from None
        if len(labels) != len(data.class_names):
            raise DatasetError(
                f"{labels_file} has {len(labels)} labels but {data.source} has {len(data.class_names)} classes: "
                "the label file must have one line per class, in class order"
            )
        data = dataclasses.replace(data, labels=labels)
    return data


def _load_split_files(data_dir: Path) -> LabelledData:
    classes_csv = data_dir / "classes.csv"
    if not classes_csv.is_file():
        raise DatasetError(f"{classes_csv} is missing: split files need it to name the classes")
    class_names = _read_classes_csv(classes_csv)
    splits = {}
    for name in ("train", "val"):
        split_file = data_dir / f"{name}.txt"
        if not split_file.is_file():
            raise DatasetError(f"{split_file} is missing (found {data_dir / 'train.txt'}, so split files are expected)")
        splits[name] = _read_split_file(split_file, data_dir, len(class_names))
    return LabelledData(
        source=str(data_dir),
        layout="split_files",
        class_names=class_names,
        labels=[grocery_store_label(name) for name in class_names],
        train=splits["train"],
        val=splits["val"],
    )


def _read_classes_csv(path: Path) -> list[str]:
    """classes.csv: a header, then `class name, class id, ...` rows; ids must be 0..n-1."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        rows = [row for row in csv.reader(file) if row]
    names_by_id: dict[int, str] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        try:
            names_by_id[int(row[1])] = row[0].strip()
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{line_number}: expected `class name, class id, ...`, got {row}") from None
    if sorted(names_by_id) != list(range(len(names_by_id))) or not names_by_id:
        raise DatasetError(f"{path}: class ids must be 0..n-1 with none missing, got {sorted(names_by_id)}")
    return [names_by_id[i] for i in range(len(names_by_id))]


def _read_split_file(split_file: Path, data_dir: Path, num_classes: int) -> Split:
    paths, class_ids = [], []
    for line_number, line in enumerate(split_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            relative_path, class_id = fields[0], int(fields[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{split_file}:{line_number}: expected `path, class_id, ...`, got {line!r}") from None
        if not 0 <= class_id < num_classes:
            raise DatasetError(
                f"{split_file}:{line_number}: class id {class_id} is out of range: there are {num_classes} classes "
                f"(ids 0..{num_classes - 1})"
            )
        path = data_dir / relative_path
        if not path.is_file():
            raise DatasetError(f"{split_file}:{line_number}: image {path} does not exist")
        paths.append(str(path))
        class_ids.append(class_id)
    if not paths:
        raise DatasetError(f"{split_file} lists no images")
    return Split(paths, class_ids)


def _list_class_folders(folder: Path) -> dict[str, list[str]]:
    """{class folder name: image paths}, both in name order; an empty class folder is an error."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{folder} has no class folders (expected one folder of images per class)")
    images = {}
    for class_dir in class_dirs:
        files = sorted(str(p) for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images[class_dir.name] = files
    return images


def _load_class_folders(data_dir: Path, val_fraction: float) -> LabelledData:
    if (data_dir / "train").is_dir():
        train_images = _list_class_folders(data_dir / "train")
        if not (data_dir / "val").is_dir():
            raise DatasetError(f"{data_dir / 'val'} is missing: with a train/ folder, a val/ folder is expected")
        val_images = _list_class_folders(data_dir / "val")
        if list(val_images) != list(train_images):
            raise DatasetError(
                f"{data_dir / 'val'} has class folders {list(val_images)} but {data_dir / 'train'} has {list(train_images)}"
            )
    else:
        if not 0 < val_fraction < 1:
            raise DatasetError(f"{data_dir} has no val/ folder, so --val-fraction must be between 0 and 1")
        every = max(2, round(1 / val_fraction))
        all_images = _list_class_folders(data_dir)
        train_images = {name: [p for i, p in enumerate(files) if i % every != every - 1] for name, files in all_images.items()}
        val_images = {name: [p for i, p in enumerate(files) if i % every == every - 1] for name, files in all_images.items()}
    class_names = list(train_images)

    def split(images: dict[str, list[str]]) -> Split:
        pairs = [(path, class_id) for class_id, name in enumerate(class_names) for path in images[name]]
        return Split([p for p, _ in pairs], [c for _, c in pairs])

    return LabelledData(
        source=str(data_dir),
        layout="class_folders",
        class_names=class_names,
        labels=list(class_names),
        train=split(train_images),
        val=split(val_images),
    )


class _ImageReader:
    """`load_training_image` for tf.numpy_function; remembers which file failed, because TensorFlow
    wraps Python exceptions raised inside the input pipeline into its own error types."""

    def __init__(self, size: int):
        self.size = size
        self.failures: list[str] = []

    def __call__(self, path: bytes, box: np.ndarray) -> np.ndarray:
        path = path.decode()
        try:
            return load_training_image(path, self.size, tuple(float(v) for v in box) if box[0] >= 0 else None)
        except Exception as error:
            message = f"image {path} cannot be read: {error}"
            self.failures.append(message)
            raise DatasetError(message) from None


# ------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentationConfig:
    """Random geometric changes applied to training images (the recipe's bounds).

    All of them make one affine transform per image, so each image is resampled once.
    """

    rotation_degrees: float = 20.0  # rotate by up to ± this
    shift_fraction: float = 0.3  # shift horizontally and vertically by up to ± this fraction of the side
    shear: float = 0.3  # shear factor (x += shear * y) of up to ± this
    zoom_range: tuple[float, float] = (0.8, 1.2)  # scale each axis by a factor in this range
    horizontal_flip: bool = True  # mirror half of the images left-right
    crop_scale: tuple[float, float] = (0.6, 1.0)  # crop a square of this fraction of the area, resized back

    @classmethod
    def none(cls) -> "AugmentationConfig":
        """No change at all (the identity transform)."""
        return cls(0.0, 0.0, 0.0, (1.0, 1.0), False, (1.0, 1.0))


def sample_augmentation(batch_size, size: int, config: AugmentationConfig) -> dict:
    """Random parameters for `batch_size` images, each within the config's bounds."""
    import tensorflow as tf

    def uniform(low, high):
        return tf.random.uniform([batch_size], low, high, dtype=tf.float32)

    crop_area = uniform(*config.crop_scale)
    crop_side = tf.sqrt(crop_area)  # as a fraction of the image side
    shift = config.shift_fraction * size
    return {
        "flip": tf.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0) if config.horizontal_flip else tf.ones([batch_size]),
        "crop_area": crop_area,
        "crop_x": uniform(-0.5, 0.5) * (1.0 - crop_side) * size,  # crop centre offset, pixels
        "crop_y": uniform(-0.5, 0.5) * (1.0 - crop_side) * size,
        "zoom_x": uniform(*config.zoom_range),
        "zoom_y": uniform(*config.zoom_range),
        "shear": uniform(-config.shear, config.shear),
        "rotation": uniform(-config.rotation_degrees, config.rotation_degrees) * (math.pi / 180.0),
        "shift_x": uniform(-shift, shift),
        "shift_y": uniform(-shift, shift),
    }


def augmentation_transforms(parameters: dict, size: int):
    """[batch, 8] transforms for ImageProjectiveTransformV3: each maps an output pixel to the input pixel
    it is sampled from, as flip, then crop, zoom, shear, rotation and shift, about the image centre."""
    import tensorflow as tf

    p = parameters
    one, zero = tf.ones_like(p["flip"]), tf.zeros_like(p["flip"])

    def matrix(rows):  # 3x3 per image from rows of per-image values
        return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)

    crop_side = tf.sqrt(p["crop_area"])
    cos, sin = tf.cos(p["rotation"]), tf.sin(p["rotation"])
    flip = matrix([[p["flip"], zero, zero], [zero, one, zero], [zero, zero, one]])
    crop = matrix([[crop_side, zero, p["crop_x"]], [zero, crop_side, p["crop_y"]], [zero, zero, one]])
    zoom = matrix([[p["zoom_x"], zero, zero], [zero, p["zoom_y"], zero], [zero, zero, one]])
    shear = matrix([[one, p["shear"], zero], [zero, one, zero], [zero, zero, one]])
    rotation = matrix([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shift = matrix([[one, zero, p["shift_x"]], [zero, one, p["shift_y"]], [zero, zero, one]])
    centre = (size - 1) / 2.0
    to_centre = matrix([[one, zero, -centre * one], [zero, one, -centre * one], [zero, zero, one]])
    from_centre = matrix([[one, zero, centre * one], [zero, one, centre * one], [zero, zero, one]])
    output_to_input = from_centre @ shift @ rotation @ shear @ zoom @ crop @ flip @ to_centre
    flat = tf.reshape(output_to_input, [-1, 9])
    return flat[:, :8] / flat[:, 8:9]


def augment_batch(images, config: AugmentationConfig):
    """Randomly transform a float32 [batch, S, S, 3] batch; pixels falling outside repeat the edge."""
    import tensorflow as tf

    size = images.shape[1]
    transforms = augmentation_transforms(sample_augmentation(tf.shape(images)[0], size, config), size)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([size, size], dtype=tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


# ------------------------------------------------------------------------------------------- input


def make_dataset(split: Split, size: int, batch_size: int, training: bool, augmentation: AugmentationConfig, reader: _ImageReader):
    """tf.data pipeline: decode in parallel with the shared preprocessing, cache the uint8 images in
    memory (decoded once), then (training) shuffle, batch, augment, prefetch. Yields (float32 0–255, id)."""
    import tensorflow as tf

    def load(path, box, class_id):
        image = tf.numpy_function(reader, [path, box], tf.uint8, stateful=False)
        image.set_shape([size, size, 3])
        return image, class_id

    dataset = tf.data.Dataset.from_tensor_slices((split.paths, split.box_array(), np.asarray(split.class_ids, dtype=np.int32)))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if training:
        dataset = dataset.shuffle(len(split.paths), reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if training:
        # Augmenting whole batches: one transform op per batch instead of one per image.
        dataset = dataset.map(
            lambda images, ids: (augment_batch(tf.cast(images, tf.float32), augmentation), ids),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(lambda images, ids: (tf.cast(images, tf.float32), ids))
    return dataset.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (saved next to the checkpoints for `export`)."""

    num_classes: int
    input_size: int = CLASSIFIER_INPUT_SIZE
    backbone: str = EFFICIENTNET_B0  # "efficientnet_b0" or "hub:<URL or local SavedModel folder>"
    backbone_weights: str | None = None  # efficientnet_b0 only: a weights file, or None for random
    trainable_backbone: bool = False
    head_units: tuple[int, ...] = (512, 256, 128, 64)
    dropout: float = 0.2
    l2: float = 0.005
    train_batchnorm: bool = False  # hub backbone: BatchNorm in training mode when fine-tuning (large data only)


def build_model(config: ModelConfig):
    """float32 [None, S, S, 3] pixels 0–255 → softmax over the classes.

    The rescaling is inside the model: keras.applications' EfficientNet rescales 0–255 itself, a TF-Hub
    image module expects [0, 1] so a Rescaling layer comes first.
    """
    import tf_keras

    inputs = tf_keras.Input(shape=(config.input_size, config.input_size, 3), dtype="float32", name="image")
    if config.backbone == EFFICIENTNET_B0:
        backbone = tf_keras.applications.EfficientNetB0(
            include_top=False,
            weights=config.backbone_weights,
            input_shape=(config.input_size, config.input_size, 3),
            pooling="avg",
        )
        backbone.trainable = config.trainable_backbone
        # A frozen backbone keeps its BatchNorm statistics (inference mode) while the head trains.
        features = backbone(inputs, training=None if config.trainable_backbone else False)
    elif config.backbone.startswith(HUB_PREFIX):
        features = hub_backbone(config)(
            tf_keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs),
            # Small-data fine-tuning: BatchNorm keeps its ImageNet statistics unless asked otherwise.
            training=None if config.train_batchnorm else False,
        )
    else:
        raise ValueError(f"unknown backbone {config.backbone!r}: use {EFFICIENTNET_B0!r} or '{HUB_PREFIX}<handle>'")
    return tf_keras.Model(inputs, add_head(features, config), name="product_classifier")


def hub_backbone(config: ModelConfig):
    """The TF-Hub image module ([0, 1] pixels → feature vector) as a Keras layer: a URL when online, or a local
    SavedModel folder such as the one `python -m pipeline.efficientnet_lite export` writes."""
    import tensorflow_hub as hub

    return hub.KerasLayer(config.backbone[len(HUB_PREFIX):], trainable=config.trainable_backbone, name="backbone")


def add_head(features, config: ModelConfig):
    """The recipe's head on a feature vector: Dense 512→256→128→64 (ReLU, L2, dropout) → softmax."""
    import tf_keras

    x = features
    for units in config.head_units:
        x = tf_keras.layers.Dense(
            units, activation="relu", kernel_regularizer=tf_keras.regularizers.L2(config.l2), name=f"head_dense_{units}"
        )(x)
        x = tf_keras.layers.Dropout(config.dropout, name=f"head_dropout_{units}")(x)
    return tf_keras.layers.Dense(config.num_classes, activation="softmax", name="probabilities")(x)


HEAD_LAYER_PREFIXES = ("head_", "probabilities")


def compile_model(model, learning_rate: float, num_classes: int, optimizer: str = "rmsprop") -> None:
    """Cross-entropy with accuracy and top-5 metrics; RMSprop is the recipe's optimizer."""
    import tf_keras

    optimizers = {"rmsprop": tf_keras.optimizers.RMSprop, "adam": tf_keras.optimizers.Adam}
    model.compile(
        optimizer=optimizers[optimizer](learning_rate=learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(),
        metrics=[
            tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            tf_keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5_accuracy"),
        ],
    )


def export_model(model, export_dir: Path) -> None:
    """Write a self-contained SavedModel with a `serve` endpoint (float32 [N,S,S,3] 0–255 → [N,C] softmax),
    then load it back with plain TensorFlow and check it agrees with the Keras model."""
    import tensorflow as tf

    if export_dir.exists():
        shutil.rmtree(export_dir)
    model.export(str(export_dir))
    size = model.input_shape[1]
    probe = tf.constant(np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32))
    loaded = tf.saved_model.load(str(export_dir))  # keep a reference: its variables die with it
    exported = loaded.serve(probe).numpy()
    expected = model(probe, training=False).numpy()
    if not np.allclose(exported, expected, atol=1e-4):
        raise RuntimeError(f"{export_dir} does not reproduce the model's output (max diff {np.abs(exported - expected).max()})")


# ---------------------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """The training run; every default is the recipe's."""

    data: str
    out: str
    labels_file: str | None = None
    val_fraction: float = 0.1
    input_size: int = CLASSIFIER_INPUT_SIZE
    backbone: str = EFFICIENTNET_B0
    backbone_weights: str | None = None
    trainable_backbone: bool = False
    dropout: float = 0.2
    l2: float = 0.005
    learning_rate: float = 0.007
    batch_size: int = 64
    epochs: int = 50
    patience: int = 5
    early_stopping_start_epoch: int = 0  # epochs before early stopping watches (a warm-up for training from scratch)
    augment: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    resume: bool = False
    train_batchnorm: bool = False  # hub backbone, fine-tuning: let BatchNorm learn batch statistics
    init_from: str | None = None  # another run folder whose best weights start this one (fine-tuning stage)
    crop_boxes: str | None = None  # JSON {photo path: detector box or null}: train on those crops as well
    cached_feature_copies: int = 0  # frozen backbone: train the head on features of this many augmented copies
    # of each training image (plus the image itself), computed once; 0: run the backbone at every step
    threads: int = 0  # TensorFlow intra- and inter-op threads; 0: all cores
    verbose: int = 1
    seed: int | None = None

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


def configure_threads(threads: int) -> int:
    """Set TensorFlow's thread pools; must run before TensorFlow executes anything."""
    import tensorflow as tf

    threads = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (main() called from Python): keep its pools
        print(f"TensorFlow is already initialized: thread pools stay at {tf.config.threading.get_intra_op_parallelism_threads()}", file=sys.stderr)
    return threads


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written file behind if the run is killed


def _has_weights(path: Path) -> bool:
    return Path(f"{path}.index").is_file()


def _read_model_config(checkpoint_dir: Path) -> ModelConfig:
    saved = _read_json(checkpoint_dir / MODEL_CONFIG_NAME)
    return ModelConfig(**{**saved, "head_units": tuple(saved["head_units"])})


def _callback_classes():
    """The callbacks subclass tf_keras classes, so they are defined once tf_keras is imported."""
    import tf_keras

    class EpochCheckpoints(tf_keras.callbacks.Callback):
        """After every epoch: save model + optimizer + epoch (to resume), the best weights by validation
        accuracy (to export), and state.json (epochs done, best so far)."""

        def __init__(self, manager, epoch_variable, best_weights_path: Path, state_path: Path, state: dict):
            super().__init__()
            self.started = time.time()
            self.wall_seconds_before = state.get("wall_seconds", 0.0)
            self.manager = manager
            self.epoch_variable = epoch_variable
            self.best_weights_path = best_weights_path
            self.state_path = state_path
            self.state = state

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            accuracy = float(logs.get("val_accuracy", float("nan")))
            if self.state.get("best_val_accuracy") is None or accuracy > self.state["best_val_accuracy"]:
                self.model.save_weights(str(self.best_weights_path))
                self.state.update(
                    best_epoch=epoch + 1,
                    best_val_accuracy=accuracy,
                    best_val_top5_accuracy=float(logs.get("val_top5_accuracy", float("nan"))),
                )
            self.epoch_variable.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)
            self.state["epochs_done"] = epoch + 1
            self.state["wall_seconds"] = round(self.wall_seconds_before + time.time() - self.started, 1)
            _write_json(self.state_path, self.state)

    class ResumableEarlyStopping(tf_keras.callbacks.EarlyStopping):
        """EarlyStopping whose count and best carry over from the run being resumed."""

        def __init__(self, resumed: dict | None = None, **kwargs):
            super().__init__(**kwargs)
            self.resumed = resumed

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.resumed:
                self.best = self.resumed["best"]
                self.best_epoch = self.resumed["best_epoch"]
                self.wait = self.resumed["wait"]
                self.best_weights = self.resumed["best_weights"]

    return EpochCheckpoints, ResumableEarlyStopping


def compute_features(feature_model, dataset, augmentation: AugmentationConfig | None = None) -> np.ndarray:
    """The frozen backbone's features of every image of an (ordered, batched) dataset, augmented or not."""
    import tensorflow as tf

    images = dataset.map(lambda x, _: x)
    if augmentation is not None:
        images = images.map(tf.autograph.experimental.do_not_convert(lambda x: augment_batch(x, augmentation)))
    return feature_model.predict(images, verbose=0)


def train_head_on_cached_features(config: TrainConfig, data: LabelledData, model_config: ModelConfig, reader) -> None:
    """The frozen stage, fast on CPU: the backbone runs once per image copy, not once per step.

    Each training image's features are computed for the image itself and for `cached_feature_copies` random
    augmentations of it (the recipe's augmentation); every epoch the head sees one copy of each image, drawn
    at random. Writes the same run folder as `train` (best weights, state, history, export).
    """
    import tensorflow as tf
    import tf_keras

    out = Path(config.out)
    checkpoint_dir = out / CHECKPOINT_DIR
    started = time.time()
    model = build_model(model_config)
    first_head_layer = model.get_layer(f"head_dense_{model_config.head_units[0]}")
    feature_model = tf_keras.Model(model.input, first_head_layer.input)
    # Features are kept per part and copy in feature_cache/, so a stopped run (or a rerun with other head
    # settings, or with detector crops added) computes only what is missing.
    whole_paths = [p for p, b in zip(data.train.paths, data.train.boxes or [None] * len(data.train.paths)) if b is None]
    crop_items = [(p, c, b) for p, c, b in zip(data.train.paths, data.train.class_ids, data.train.boxes or []) if b is not None]
    cache = out / "feature_cache"
    key = json.dumps([model_config.backbone, model_config.backbone_weights, config.input_size,
                      dataclasses.asdict(config.augmentation), config.seed, whole_paths, data.val.paths])
    if not (cache / "key.json").is_file() or (cache / "key.json").read_text() != key:
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        (cache / "key.json").write_text(key)
    plain = AugmentationConfig.none()

    def cached(name: str, compute) -> np.ndarray:
        path = cache / f"{name}.npy"
        if not path.is_file():
            if config.verbose:
                print(f"features: {name} ({time.time() - started:.0f} s)", flush=True)
            np.save(path, compute())
        return np.load(path)

    def part_features(name: str, split: Split) -> np.ndarray:
        """[items, 1 + copies, features]: each item itself, then its augmented copies."""
        images = make_dataset(split, config.input_size, config.batch_size, False, plain, reader)
        return np.stack(
            [cached(name, lambda: compute_features(feature_model, images))]
            + [cached(f"{name}_augmented_{copy}", lambda: compute_features(feature_model, images, config.augmentation))
               for copy in range(config.cached_feature_copies)],
            axis=1,
        )

    val_features = cached("val", lambda: compute_features(
        feature_model, make_dataset(data.val, config.input_size, config.batch_size, False, plain, reader)))
    parts = [part_features("train", Split(whole_paths, [0] * len(whole_paths)))]
    if crop_items:
        crops_split = Split([p for p, _, _ in crop_items], [c for _, c, _ in crop_items], [b for _, _, b in crop_items])
        digest = hashlib.sha256(json.dumps([crops_split.paths, crops_split.boxes]).encode()).hexdigest()[:12]
        parts.append(part_features(f"train_crops_{digest}", crops_split))
    train_features = np.concatenate(parts)  # [items, copies, features], whole photos first, as in data.train
    assert len(train_features) == len(data.train.paths)

    copies = train_features.shape[1]
    train_dataset = (
        tf.data.Dataset.from_tensor_slices((train_features, np.asarray(data.train.class_ids, np.int32)))
        .shuffle(len(train_features), reshuffle_each_iteration=True)
        .map(lambda f, y: (f[tf.random.uniform([], 0, copies, dtype=tf.int32)], y))
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_dataset = tf.data.Dataset.from_tensor_slices((val_features, np.asarray(data.val.class_ids, np.int32))).batch(256)
    head_input = tf_keras.Input(shape=train_features.shape[2:], name="features")
    head = tf_keras.Model(head_input, add_head(head_input, model_config), name="head")
    compile_model(head, config.learning_rate, data.num_classes)
    early_stopping = tf_keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True, verbose=1,
        start_from_epoch=config.early_stopping_start_epoch,
    )
    history = head.fit(
        train_dataset, validation_data=val_dataset, epochs=config.epochs, verbose=config.verbose,
        callbacks=[early_stopping, tf_keras.callbacks.CSVLogger(str(out / HISTORY_NAME))],
    ).history
    best = int(np.argmax(history["val_accuracy"]))
    for layer in head.layers:
        if layer.name.startswith(HEAD_LAYER_PREFIXES):
            model.get_layer(layer.name).set_weights(layer.get_weights())
    model.save_weights(str(checkpoint_dir / BEST_WEIGHTS_NAME))
    baseline = train_linear_baseline(model, first_head_layer.input, train_features, val_features, data, config,
                                     out / BASELINE_EXPORT_DIR)
    epochs_done = len(history["val_accuracy"])
    _write_json(checkpoint_dir / STATE_NAME, {
        "epochs_done": epochs_done,
        "best_epoch": best + 1,
        "best_val_accuracy": float(history["val_accuracy"][best]),
        "best_val_top5_accuracy": float(history["val_top5_accuracy"][best]),
        "stopped_early_at_epoch": epochs_done if epochs_done < config.epochs else None,
        "cached_feature_copies": config.cached_feature_copies,
        "backbone_baseline": baseline,
        "wall_seconds": round(time.time() - started, 1),
    })
    export_model(model, out / EXPORT_DIR)


def train_linear_baseline(model, backbone_output, train_features: np.ndarray, val_features: np.ndarray,
                          data: LabelledData, config: TrainConfig, export_dir: Path) -> dict:
    """The comparison's "backbone baseline": the same frozen backbone with only a linear softmax classifier on
    its features (no hidden layers), trained on the same cached features (Adam, early stopping on val
    accuracy); exported beside the run as a SavedModel like the classifier."""
    import tensorflow as tf
    import tf_keras

    features = train_features.reshape(-1, train_features.shape[-1])
    targets = np.repeat(np.asarray(data.train.class_ids, np.int32), train_features.shape[1])
    dense = tf_keras.layers.Dense(data.num_classes, activation="softmax", name="probabilities")
    linear = tf_keras.Sequential([tf_keras.Input(shape=features.shape[1:]), dense])
    compile_model(linear, 1e-3, data.num_classes, optimizer="adam")
    train_dataset = tf.data.Dataset.from_tensor_slices((features, targets)).shuffle(len(features)).batch(config.batch_size)
    val_dataset = tf.data.Dataset.from_tensor_slices((val_features, np.asarray(data.val.class_ids, np.int32))).batch(256)
    history = linear.fit(train_dataset, validation_data=val_dataset, epochs=100, verbose=0, callbacks=[
        tf_keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=10, restore_best_weights=True)]).history
    best = int(np.argmax(history["val_accuracy"]))
    export_model(tf_keras.Model(model.input, dense(backbone_output), name="backbone_baseline"), export_dir)
    return {"model": "frozen backbone + linear softmax", "best_epoch": best + 1,
            "val_accuracy": float(history["val_accuracy"][best]),
            "val_top5_accuracy": float(history["val_top5_accuracy"][best]), "export": export_dir.name}


def train(config: TrainConfig) -> dict:
    """Train, keep checkpoints, export the best weights; returns what train_summary.json holds."""
    import tensorflow as tf
    import tf_keras

    out = Path(config.out)
    checkpoint_dir = out / CHECKPOINT_DIR
    state_path = checkpoint_dir / STATE_NAME
    best_weights_path = checkpoint_dir / BEST_WEIGHTS_NAME
    if config.resume and not state_path.is_file():
        raise FileNotFoundError(f"--resume: {state_path} is missing, there is no run to resume in {out}")
    if not config.resume and state_path.is_file():
        raise FileExistsError(f"{out} already holds a run ({state_path}): pass --resume, or choose another --out")
    if config.backbone == EFFICIENTNET_B0 and config.backbone_weights is None and not config.trainable_backbone:
        raise ValueError("a frozen backbone with random weights learns nothing: pass --backbone-weights or --trainable-backbone")
    if config.seed is not None:
        tf_keras.utils.set_random_seed(config.seed)

    data = load_labelled_data(config.data, config.labels_file, config.val_fraction)
    if config.crop_boxes:
        data = dataclasses.replace(data, train=data.train.with_crops(_read_json(Path(config.crop_boxes))))
    model_config = config.model_config(data.num_classes)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_labels(out / LABELS_NAME, data.labels)
    if config.resume:
        saved = _read_model_config(checkpoint_dir)
        if saved != model_config:
            raise ValueError(f"--resume with a different model than {checkpoint_dir / MODEL_CONFIG_NAME}: {saved} vs {model_config}")
    _write_json(checkpoint_dir / MODEL_CONFIG_NAME, dataclasses.asdict(model_config))
    _write_json(checkpoint_dir / RUN_NAME, {"hyperparameters": dataclasses.asdict(config), "data": data.describe()})

    strategy = tf.distribute.MirroredStrategy()  # all GPUs present; the CPU when there are none
    reader = _ImageReader(config.input_size)
    if config.cached_feature_copies:
        if config.trainable_backbone or config.resume or config.init_from:
            raise ValueError("--cached-feature-copies trains a head on a frozen backbone: not with "
                             "--trainable-backbone, --resume or --init-from")
        # On cached features the head is small work: no distribution strategy (its scope also breaks exports).
        train_head_on_cached_features(config, data, model_config, reader)
        return write_summary(out, replicas=1)
    train_dataset = make_dataset(data.train, config.input_size, config.batch_size, True, config.augmentation if config.augment else AugmentationConfig.none(), reader)
    val_dataset = make_dataset(data.val, config.input_size, config.batch_size, False, AugmentationConfig.none(), reader)

    EpochCheckpoints, ResumableEarlyStopping = _callback_classes()
    with strategy.scope():
        model = build_model(model_config)
        compile_model(model, config.learning_rate, data.num_classes)
        epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=epoch_variable)
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir / LAST_CHECKPOINT_DIR), max_to_keep=1)
        state = {"epochs_done": 0, "best_epoch": None, "best_val_accuracy": None, "best_val_top5_accuracy": None, "wall_seconds": 0.0}
        if config.init_from and not config.resume:
            init_weights = Path(config.init_from) / CHECKPOINT_DIR / BEST_WEIGHTS_NAME
            if not _has_weights(init_weights):
                raise FileNotFoundError(f"--init-from: {init_weights} is missing (no finished epoch in that run)")
            model.load_weights(str(init_weights)).expect_partial()
            state["initialized_from"] = {"run": str(config.init_from), **_read_json(Path(config.init_from) / CHECKPOINT_DIR / STATE_NAME)}
        resumed_early_stopping = None
        if config.resume:
            state = _read_json(state_path)
            model.optimizer.build(model.trainable_variables)  # slots must exist for their values to be restored
            best_weights = None
            if _has_weights(best_weights_path):
                model.load_weights(str(best_weights_path)).expect_partial()
                best_weights = model.get_weights()
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            if int(epoch_variable.numpy()) != state["epochs_done"]:
                raise RuntimeError(f"{manager.latest_checkpoint} is at epoch {int(epoch_variable.numpy())} but {state_path} says {state['epochs_done']}")
            if state["best_epoch"] is not None:
                resumed_early_stopping = {
                    "best": state["best_val_accuracy"],
                    "best_epoch": state["best_epoch"] - 1,
                    "wait": state["epochs_done"] - state["best_epoch"],
                    "best_weights": best_weights,
                }

    early_stopping = ResumableEarlyStopping(
        resumed=resumed_early_stopping, monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True, verbose=1,
        start_from_epoch=config.early_stopping_start_epoch,
    )
    callbacks = [
        EpochCheckpoints(manager, epoch_variable, best_weights_path, state_path, state),
        early_stopping,
        tf_keras.callbacks.CSVLogger(str(out / HISTORY_NAME), append=config.resume),
    ]
    initial_epoch = state["epochs_done"]
    # A run that early stopping ended stays ended, unless resumed with a larger --patience.
    stopped_early_before = (
        resumed_early_stopping is not None
        and resumed_early_stopping["wait"] >= config.patience
        and initial_epoch > config.early_stopping_start_epoch
    )
    if initial_epoch < config.epochs and not stopped_early_before:
        state.pop("stopped_early_at_epoch", None)
        if config.verbose:
            print(f"training on {len(data.train.paths)} images, validating on {len(data.val.paths)}, {data.num_classes} classes, "
                  f"epochs {initial_epoch + 1}..{config.epochs}", flush=True)
        try:
            model.fit(
                train_dataset,
                validation_data=val_dataset,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=config.verbose,
            )
        except tf.errors.OpError:
            if reader.failures:
                raise DatasetError(reader.failures[0]) from None
            raise
        if early_stopping.stopped_epoch > 0:
            state["stopped_early_at_epoch"] = early_stopping.stopped_epoch + 1
            _write_json(state_path, state)

    # Export the best epoch's weights whatever ended the run (early stop, last epoch, a resumed run).
    model.load_weights(str(best_weights_path)).expect_partial()
    export_model(model, out / EXPORT_DIR)
    return write_summary(out, replicas=strategy.num_replicas_in_sync)


def write_summary(out: Path, replicas: int | None = None) -> dict:
    """train_summary.json from what checkpoints/ holds, so a stopped run's export has one too."""
    import tensorflow as tf

    checkpoint_dir = out / CHECKPOINT_DIR
    run = _read_json(checkpoint_dir / RUN_NAME) if (checkpoint_dir / RUN_NAME).is_file() else {}
    state = _read_json(checkpoint_dir / STATE_NAME)
    epochs = run.get("hyperparameters", {}).get("epochs")
    summary = {
        "hyperparameters": run.get("hyperparameters"),
        "model": _read_json(checkpoint_dir / MODEL_CONFIG_NAME),
        "epochs_run": state["epochs_done"],
        "best_epoch": state["best_epoch"],
        "best_val_accuracy": state["best_val_accuracy"],
        "best_val_top5_accuracy": state["best_val_top5_accuracy"],
        "finished_all_epochs": epochs is not None and state["epochs_done"] >= epochs,
        "stopped_early_at_epoch": state.get("stopped_early_at_epoch"),
        "initialized_from": state.get("initialized_from"),
        "cached_feature_copies": state.get("cached_feature_copies"),
        "wall_seconds": state.get("wall_seconds"),
        "data": run.get("data"),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "replicas": replicas,
        "tensorflow_version": tf.__version__,
        "export": EXPORT_DIR,
        "labels": LABELS_NAME,
    }
    _write_json(out / SUMMARY_NAME, summary)
    return summary


def export_checkpoint(out: str | Path) -> Path:
    """Rebuild the model from a run's checkpoints/ and export its best weights (e.g. after a stopped run)."""
    out = Path(out)
    checkpoint_dir = out / CHECKPOINT_DIR
    if not _has_weights(checkpoint_dir / BEST_WEIGHTS_NAME):
        raise FileNotFoundError(f"{checkpoint_dir / BEST_WEIGHTS_NAME} is missing: no epoch of this run has finished")
    model = build_model(_read_model_config(checkpoint_dir))
    model.load_weights(str(checkpoint_dir / BEST_WEIGHTS_NAME)).expect_partial()
    export_model(model, out / EXPORT_DIR)
    write_summary(out)
    return out / EXPORT_DIR


# --------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig(data="", out="")
    aug = AugmentationConfig()
    parser = argparse.ArgumentParser(prog="python -m pipeline.classifier", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_cmd = commands.add_parser("train", help="train, checkpoint every epoch, export the best weights")
    train_cmd.add_argument("--data", required=True, help="split files (train.txt, val.txt, classes.csv) or class folders")
    train_cmd.add_argument("--out", required=True, help="run folder: export/, labels.txt, history.csv, checkpoints/, train_summary.json")
    train_cmd.add_argument("--labels", dest="labels_file", help="label file, one per line in class order (overrides the data's names)")
    train_cmd.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="held back for validation when class folders have no val/")
    train_cmd.add_argument("--input-size", type=int, default=defaults.input_size)
    train_cmd.add_argument("--backbone", default=defaults.backbone, help=f"{EFFICIENTNET_B0} or {HUB_PREFIX}<URL or local SavedModel folder>")
    train_cmd.add_argument("--backbone-weights", default=None, help=f"{EFFICIENTNET_B0} weights file (default: random)")
    train_cmd.add_argument("--trainable-backbone", action="store_true", help="train the backbone too (needed without pretrained weights)")
    train_cmd.add_argument("--dropout", type=float, default=defaults.dropout)
    train_cmd.add_argument("--l2", type=float, default=defaults.l2)
    train_cmd.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train_cmd.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train_cmd.add_argument("--epochs", type=int, default=defaults.epochs)
    train_cmd.add_argument("--patience", type=int, default=defaults.patience, help="early stopping on validation accuracy")
    train_cmd.add_argument("--early-stopping-start-epoch", type=int, default=defaults.early_stopping_start_epoch,
                           help="epochs of warm-up before early stopping watches")
    train_cmd.add_argument("--no-augment", dest="augment", action="store_false")
    train_cmd.add_argument("--rotation-degrees", type=float, default=aug.rotation_degrees)
    train_cmd.add_argument("--shift-fraction", type=float, default=aug.shift_fraction)
    train_cmd.add_argument("--shear", type=float, default=aug.shear)
    train_cmd.add_argument("--zoom-range", type=float, nargs=2, default=aug.zoom_range)
    train_cmd.add_argument("--no-horizontal-flip", dest="horizontal_flip", action="store_false")
    train_cmd.add_argument("--crop-scale", type=float, nargs=2, default=aug.crop_scale)
    train_cmd.add_argument("--resume", action="store_true", help="continue from the last checkpoint and epoch in --out")
    train_cmd.add_argument("--crop-boxes", help="JSON {photo path: box} from `python -m pipeline.detector boxes`: "
                           "each training photo with a box is also a training item cut to it, as /hello cuts it")
    train_cmd.add_argument("--init-from", help="start from the best weights of another run folder (fine-tuning stage)")
    train_cmd.add_argument("--train-batchnorm", action="store_true",
                           help="hub backbone being fine-tuned: BatchNorm learns batch statistics (default: frozen)")
    train_cmd.add_argument("--cached-feature-copies", type=int, default=defaults.cached_feature_copies,
                           help="frozen backbone: compute features once for the image and this many augmented copies")
    train_cmd.add_argument("--threads", type=int, default=defaults.threads, help="TensorFlow threads (0: all cores)")
    train_cmd.add_argument("--verbose", type=int, default=defaults.verbose, choices=(0, 1, 2), help="1: progress bars")
    train_cmd.add_argument("--seed", type=int, default=None)

    export_cmd = commands.add_parser("export", help="export the best checkpoint of a run to <out>/export/")
    export_cmd.add_argument("--out", required=True, help="the run folder given to train")
    export_cmd.add_argument("--threads", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_threads(args.threads)
    if args.command == "export":
        print(export_checkpoint(args.out))
        return 0
    options = vars(args)
    augmentation = AugmentationConfig(
        rotation_degrees=options.pop("rotation_degrees"),
        shift_fraction=options.pop("shift_fraction"),
        shear=options.pop("shear"),
        zoom_range=tuple(options.pop("zoom_range")),
        horizontal_flip=options.pop("horizontal_flip"),
        crop_scale=tuple(options.pop("crop_scale")),
    )
    options.pop("command")
    try:
        summary = train(TrainConfig(**options, augmentation=augmentation))
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("epochs_run", "best_epoch", "best_val_accuracy", "best_val_top5_accuracy", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
