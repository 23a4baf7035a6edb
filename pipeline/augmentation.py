"""Random geometric changes to training images (the recipe's augmentation), as one affine transform per image so
each image is resampled once. TensorFlow ops on batches: tf.data runs them, and so does the cached-feature stage."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.dataclass_cli import option


@dataclass(frozen=True)
class AugmentationConfig:
    """The recipe's bounds; each training image gets random values within them."""

    rotation_degrees: float = option(20.0, help="rotate by up to ± this many degrees")
    shift_fraction: float = option(0.3, help="shift horizontally and vertically by up to ± this fraction of the side")
    shear: float = option(0.3, help="shear factor (x += shear * y) of up to ± this")
    zoom_range: tuple[float, float] = option((0.8, 1.2), help="scale each axis by a factor in this range")
    horizontal_flip: bool = option(True, help="mirror half of the images left-right")
    crop_scale: tuple[float, float] = option((0.6, 1.0), help="crop a square of this fraction of the area, resized back")

    @classmethod
    def none(cls) -> AugmentationConfig:
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
