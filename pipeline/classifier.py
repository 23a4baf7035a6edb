"""Train the product classifier (an EfficientNet backbone + dense head) and export it for serving.

The recipe (../shared/DESIGN.md, "Training") is every default here: 256 px, EfficientNet frozen, head
512→256→128→64 (ReLU, dropout, L2 0.005) → softmax, RMSprop lr 0.007, batch 64, up to 50 epochs, early
stopping with patience 5 on validation accuracy, MirroredStrategy over the GPUs present.

Backbones: a TF-Hub image module (`--backbone hub:<URL or local SavedModel folder>`, as the original loaded
EfficientNet-B0) — offline, `python -m pipeline.efficientnet_lite export` writes one with ImageNet-pretrained
EfficientNet-Lite0 weights — or keras.applications' EfficientNet-B0 (`efficientnet_b0`, weights from a file).
Two stages, each a run folder:

    # 1. frozen backbone, head only; features computed once per image and augmented copy, fast on CPU (pipeline.classifier_cached)
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
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.augmentation import AugmentationConfig
from pipeline.classifier_cached import train_head_on_cached_features
from pipeline.classifier_data import ImageReader, make_dataset
from pipeline.classifier_model import EFFICIENTNET_B0, build_model, compile_model, export_model
from pipeline.classifier_run import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_DIR,
    EXPORT_DIR,
    HISTORY_NAME,
    LAST_CHECKPOINT_DIR,
    MODEL_CONFIG_NAME,
    RUN_NAME,
    STATE_NAME,
    SUMMARY_NAME,
    TrainConfig,
    has_weights,
    read_json,
    read_model_config,
    write_json,
)
from pipeline.core.model_label import LABELS_NAME, write_labels
from pipeline.dataclass_cli import add_options, config_from_args
from pipeline.datasets import DatasetError, load_labelled_data


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
            write_json(self.state_path, self.state)

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
        data = dataclasses.replace(data, train=data.train.with_crops(read_json(Path(config.crop_boxes))))
    model_config = config.model_config(data.num_classes)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_labels(out / LABELS_NAME, data.labels)
    if config.resume:
        saved = read_model_config(checkpoint_dir)
        if saved != model_config:
            raise ValueError(f"--resume with a different model than {checkpoint_dir / MODEL_CONFIG_NAME}: {saved} vs {model_config}")
    write_json(checkpoint_dir / MODEL_CONFIG_NAME, dataclasses.asdict(model_config))
    write_json(checkpoint_dir / RUN_NAME, {"hyperparameters": dataclasses.asdict(config), "data": data.describe()})

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
            if not has_weights(init_weights):
                raise FileNotFoundError(f"--init-from: {init_weights} is missing (no finished epoch in that run)")
            model.load_weights(str(init_weights)).expect_partial()
            state["initialized_from"] = {"run": str(config.init_from), **read_json(Path(config.init_from) / CHECKPOINT_DIR / STATE_NAME)}
        resumed_early_stopping = None
        if config.resume:
            state = read_json(state_path)
            model.optimizer.build(model.trainable_variables)  # slots must exist for their values to be restored
            best_weights = None
            if has_weights(best_weights_path):
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
            write_json(state_path, state)

    # Export the best epoch's weights whatever ended the run (early stop, last epoch, a resumed run).
    model.load_weights(str(best_weights_path)).expect_partial()
    export_model(model, out / EXPORT_DIR)
    return write_summary(out, replicas=strategy.num_replicas_in_sync)


def write_summary(out: Path, replicas: int | None = None) -> dict:
    """train_summary.json from what checkpoints/ holds, so a stopped run's export has one too."""
    import tensorflow as tf

    checkpoint_dir = out / CHECKPOINT_DIR
    run = read_json(checkpoint_dir / RUN_NAME) if (checkpoint_dir / RUN_NAME).is_file() else {}
    state = read_json(checkpoint_dir / STATE_NAME)
    epochs = run.get("hyperparameters", {}).get("epochs")
    summary = {
        "hyperparameters": run.get("hyperparameters"),
        "model": read_json(checkpoint_dir / MODEL_CONFIG_NAME),
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
    write_json(out / SUMMARY_NAME, summary)
    return summary


def export_checkpoint(out: str | Path) -> Path:
    """Rebuild the model from a run's checkpoints/ and export its best weights (e.g. after a stopped run)."""
    out = Path(out)
    checkpoint_dir = out / CHECKPOINT_DIR
    if not has_weights(checkpoint_dir / BEST_WEIGHTS_NAME):
        raise FileNotFoundError(f"{checkpoint_dir / BEST_WEIGHTS_NAME} is missing: no epoch of this run has finished")
    model = build_model(read_model_config(checkpoint_dir))
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
