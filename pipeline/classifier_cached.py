"""The frozen stage on cached features (`train --cached-feature-copies N`): the backbone runs once per image and
augmented copy instead of once per step, so the head, and the linear baseline beside it, train in minutes on CPU."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.augmentation import AugmentationConfig, augment_batch
from pipeline.classifier_data import make_dataset
from pipeline.classifier_model import HEAD_LAYER_PREFIXES, ModelConfig, add_head, build_model, compile_model, export_model
from pipeline.classifier_run import (
    BASELINE_EXPORT_DIR,
    BEST_WEIGHTS_NAME,
    CHECKPOINT_DIR,
    EXPORT_DIR,
    HISTORY_NAME,
    STATE_NAME,
    TrainConfig,
    write_json,
)
from pipeline.datasets import LabelledData, Split


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
    write_json(checkpoint_dir / STATE_NAME, {
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
