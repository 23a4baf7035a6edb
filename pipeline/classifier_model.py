"""The classifier network: an EfficientNet backbone (keras.applications' B0, or a TF-Hub image module) under the
recipe's dense head, compiled with the recipe's loss and metrics, and exported as a plain SavedModel that serving
loads without tf_keras or TF-Hub."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.preprocessing import CLASSIFIER_INPUT_SIZE

EFFICIENTNET_B0 = "efficientnet_b0"
HUB_PREFIX = "hub:"
HEAD_LAYER_PREFIXES = ("head_", "probabilities")  # the layer names add_head gives


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
    """Write a self-contained SavedModel with a `serve` endpoint: float32 [N,S,S,3] 0–255 → [N,C] softmax, or, for
    a model with named outputs (pipeline.efficientnet_lite's), a dict of them ({"probabilities", "embedding"});
    then load it back with plain TensorFlow and check every output agrees with the Keras model's."""
    import tensorflow as tf

    if export_dir.exists():
        shutil.rmtree(export_dir)
    model.export(str(export_dir))
    size = model.input_shape[1]
    probe = tf.constant(np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32))
    loaded = tf.saved_model.load(str(export_dir))  # keep a reference: its variables die with it
    exported, expected = loaded.serve(probe), model(probe, training=False)
    served = exported if isinstance(exported, dict) else {"output": exported}
    computed = expected if isinstance(expected, dict) else {"output": expected}
    if served.keys() != computed.keys():
        raise RuntimeError(f"{export_dir} serves {sorted(served)} but the model answers {sorted(computed)}")
    for name in computed:
        ours, reference = served[name].numpy(), computed[name].numpy()
        if ours.shape != reference.shape or not np.allclose(ours, reference, atol=1e-4):
            raise RuntimeError(f"{export_dir} does not reproduce the model's {name}: shape {ours.shape} vs "
                               f"{reference.shape}, max diff {np.abs(ours - reference).max() if ours.shape == reference.shape else '-'}")
