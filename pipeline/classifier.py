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

Images are read with `pipeline.core.preprocessing.load_training_image`, the function serving uses too, so a
product looks the same in training and in production. The model takes float32 0–255 pixels and rescales
them itself; the export is a plain SavedModel with a `serve` endpoint that needs neither tf_keras nor TF-Hub:

    loaded = tf.saved_model.load("artifacts/classifier/export")
    probabilities = loaded.serve(tf.constant(batch))  # batch: [N, S, S, 3] float32 0–255

    python -m pipeline.classifier train ... --resume     # go on from the last checkpoint and epoch
    python -m pipeline.classifier export --out artifacts/classifier   # export the best checkpoint
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.augmentation import AugmentationConfig, augment_batch
from pipeline.classifier_data import ImageReader, make_dataset
from pipeline.classifier_model import (
    EFFICIENTNET_B0,
    HEAD_LAYER_PREFIXES,
    HUB_PREFIX,
    ModelConfig,
    add_head,
    build_model,
    compile_model,
    export_model,
)
from pipeline.core.model_label import LABELS_NAME, write_labels
from pipeline.core.preprocessing import CLASSIFIER_INPUT_SIZE
from pipeline.dataclass_cli import add_options, config_from_args, option
from pipeline.datasets import DatasetError, LabelledData, Split, load_labelled_data

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


def configure_threads(threads: int) -> int:
    """Set TensorFlow's thread pools; must run before TensorFlow executes anything."""
    import tensorflow as tf

    threads = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (main() called from Python): keep its pools
        print(f"TensorFlow is already initialized: thread pools stay at {tf.config.threading.get_intra_op_parallelism_threads()}",
              file=sys.stderr)
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
    reader = ImageReader(config.input_size)
    if config.cached_feature_copies:
        if config.trainable_backbone or config.resume or config.init_from:
            raise ValueError("--cached-feature-copies trains a head on a frozen backbone: not with "
                             "--trainable-backbone, --resume or --init-from")
        # On cached features the head is small work: no distribution strategy (its scope also breaks exports).
        train_head_on_cached_features(config, data, model_config, reader)
        return write_summary(out, replicas=1)
    train_augmentation = config.augmentation if config.augment else AugmentationConfig.none()
    train_dataset = make_dataset(data.train, config.input_size, config.batch_size, True, train_augmentation, reader)
    val_dataset = make_dataset(data.val, config.input_size, config.batch_size, False, AugmentationConfig.none(), reader)

    EpochCheckpoints, ResumableEarlyStopping = _callback_classes()
    with strategy.scope():
        model = build_model(model_config)
        compile_model(model, config.learning_rate, data.num_classes)
        epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=epoch_variable)
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir / LAST_CHECKPOINT_DIR), max_to_keep=1)
        state: dict[str, Any] = {"epochs_done": 0, "best_epoch": None, "best_val_accuracy": None, "best_val_top5_accuracy": None,
                                 "wall_seconds": 0.0}
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
                raise RuntimeError(f"{manager.latest_checkpoint} is at epoch {int(epoch_variable.numpy())} "
                                   f"but {state_path} says {state['epochs_done']}")
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
    parser = argparse.ArgumentParser(prog="python -m pipeline.classifier", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train, checkpoint every epoch, export the best weights")
    add_options(train_cmd, TrainConfig)
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
    try:
        summary = train(config_from_args(TrainConfig, args))
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("epochs_run", "best_epoch", "best_val_accuracy", "best_val_top5_accuracy", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
