"""Small real models made by the tests, in temporary folders, written in the model_label/ format."""

import shutil
from pathlib import Path

import numpy as np

from pipeline.core.model_label import (
    CLASSIFIER_NAME,
    DETECTOR_NAME,
    LABELS_NAME,
    write_labels,
    write_manifest,
)
from pipeline.core.paths import MODEL_LABEL_DIR

SHIPPED_MODEL_DIR = MODEL_LABEL_DIR


def tiny_classifier(path: Path, num_classes: int, input_size: int = 64, favourite: int | None = None) -> None:
    """A small conv net exported as a SavedModel like the real one (uint8-range input, softmax output).

    With `favourite`, the last layer always answers that class with high confidence, so a test knows the answer.
    """
    import tf_keras as keras

    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(num_classes, activation="softmax")
    model = keras.Model(inputs, head(x))
    if favourite is not None:
        bias = np.zeros(num_classes, np.float32)
        bias[favourite] = 10.0
        head.set_weights([np.zeros_like(head.get_weights()[0]), bias])
    model.export(str(path))


def tiny_detector(path: Path) -> None:
    """An untrained YOLOv8n checkpoint, built from its yaml (enough where only the file format matters)."""
    from pipeline.core.yolo_offline import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(str(path))


def make_model_label(
    directory: Path,
    labels: list[str],
    *,
    input_size: int = 64,
    favourite: int | None = None,
    detector_from: Path | None = None,
) -> Path:
    """A complete model_label/ folder; the detector is copied from `detector_from` or made untrained."""
    directory.mkdir(parents=True, exist_ok=True)
    tiny_classifier(directory / CLASSIFIER_NAME, len(labels), input_size, favourite)
    if detector_from is not None:
        shutil.copyfile(detector_from, directory / DETECTOR_NAME)
    else:
        tiny_detector(directory / DETECTOR_NAME)
    write_labels(directory / LABELS_NAME, labels)
    write_manifest(directory, classifier={"input_size": input_size, "num_classes": len(labels)}, detector={"input_size": 320})
    return directory
