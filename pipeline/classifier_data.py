"""The classifier's tf.data input: the photos of a Split read with serving's preprocessing
(`pipeline.core.preprocessing.load_training_image`), batched and, for training, augmented."""

from __future__ import annotations

import numpy as np

from pipeline.augmentation import AugmentationConfig, augment_batch
from pipeline.core.preprocessing import load_training_image
from pipeline.datasets import DatasetError, Split


class ImageReader:
    """`load_training_image` for tf.numpy_function; remembers which file failed, because TensorFlow
    wraps Python exceptions raised inside the input pipeline into its own error types."""

    def __init__(self, size: int):
        self.size = size
        self.failures: list[str] = []

    def __call__(self, path: bytes, box: np.ndarray) -> np.ndarray:
        name = path.decode()
        try:
            crop = (float(box[0]), float(box[1]), float(box[2]), float(box[3])) if box[0] >= 0 else None
            return load_training_image(name, self.size, crop)
        except Exception as error:  # noqa: BLE001 (whatever the failure, it is named and raised again)
            message = f"image {name} cannot be read: {error}"
            self.failures.append(message)
            raise DatasetError(message) from None


def make_dataset(split: Split, size: int, batch_size: int, training: bool, augmentation: AugmentationConfig, reader: ImageReader):
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
