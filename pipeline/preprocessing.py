"""Image preprocessing shared by training (pipeline/) and serving (deployments/).

Training and serving must see a product the same way, so both go through these functions: `decode_photo`
turns uploaded bytes into an upright RGB picture, `detector_input` shrinks it for the detector and
`classifier_input` cuts out (a box of) it at the classifier's input size. Pixel scaling is not done here:
the classifier model rescales its uint8 input itself, so no caller can get it wrong.
Only numpy and Pillow: the CPU-only ingress imports this without TensorFlow or torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CLASSIFIER_INPUT_SIZE = 256
"""Side of the square the classifier sees (the recipe's 256 px)."""

DECODE_MIN_SIDE = 1000
"""A JPEG is decoded at a reduced scale (PIL draft) while its longest side stays at least this long:
enough for the detector (640 px) and for classifier crops of products that fill a good part of the photo;
a 12 MP phone JPEG (4032 px) then decodes at 1/4 scale, 16x fewer pixels than in full."""

MAX_IMAGE_PIXELS = 50_000_000
"""Largest photo accepted (50 MP covers today's phone sensors); larger headers are refused before
any pixel is decoded, so a decompression bomb costs nothing."""

RESAMPLE = Image.Resampling.BILINEAR

# Pillow's own bomb check would warn (not fail) between its limit and twice it; ours is explicit.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """The bytes are not a photo we can use; `code` is stable and goes into the HTTP error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Photo:
    """An upright RGB photo, possibly decoded at reduced size.

    `original_size` is (width, height) of the full-resolution photo after EXIF orientation; `scale`
    maps coordinates in `image` to original pixels (original = decoded * scale).
    """

    image: Image.Image
    original_size: tuple[int, int]
    format: str

    @property
    def scale(self) -> float:
        return self.original_size[0] / self.image.width


_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def decode_photo(data: bytes, min_side: int = DECODE_MIN_SIDE, max_pixels: int = MAX_IMAGE_PIXELS) -> Photo:
    """Decode image bytes once: first frame, EXIF-rotated, RGB, JPEGs at reduced size.

    Raises ImageError for empty, unreadable, truncated or oversized images.
    """
    if not data:
        raise ImageError("empty_image", "the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "the bytes are not an image format we can read (JPEG, PNG, WebP, ...)") from None
    except Exception as error:  # corrupt headers raise a zoo of exception types
        raise ImageError("not_an_image", f"the image header cannot be read: {error}") from None

    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("not_an_image", f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"the image has {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
        )
    orientation = image.getexif().get(0x0112, 1)
    original_size = (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)
    image_format = image.format or "unknown"

    if image_format == "JPEG":
        # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps the image at least this big.
        ratio = max(1.0, max(width, height) / min_side)
        image.draft("RGB", (int(width / ratio), int(height / ratio)))
    try:
        image.seek(0)  # first frame of an animation
        image.load()
    except Exception as error:
        raise ImageError("truncated_image", f"the image data is truncated or corrupt: {error}") from None

    image = ImageOps.exif_transpose(image)
    return Photo(image=_to_rgb(image), original_size=original_size, format=image_format)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency onto white, 16/32-bit and float rescaled, CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        if image.mode == "F" and pixels.max() <= 1.0:
            top = 1.0
        image = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def detector_input(image: Image.Image, size: int) -> np.ndarray:
    """The photo shrunk (never enlarged) so its longest side is at most `size`, as uint8 HxWx3.

    Ultralytics letterboxes it to its square input itself; sending this instead of the decoded photo keeps
    the message between deployments small.
    """
    ratio = max(image.width, image.height) / size
    if ratio > 1.0:
        image = image.resize((max(1, round(image.width / ratio)), max(1, round(image.height / ratio))), RESAMPLE)
    return np.asarray(image, dtype=np.uint8)


def classifier_input(
    image: Image.Image,
    box: tuple[float, float, float, float] | None = None,
    size: int = CLASSIFIER_INPUT_SIZE,
) -> np.ndarray:
    """A box (x1, y1, x2, y2 in `image` pixels; None for the whole image) resized to size x size uint8 RGB.

    The crop is squashed, not padded, the way the recipe's training resized whole photos.
    """
    if box is not None:
        x1, y1, x2, y2 = box
        left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        right, bottom = min(image.width, int(np.ceil(x2))), min(image.height, int(np.ceil(y2)))
        if right - left < 1 or bottom - top < 1:
            raise ValueError(f"box {box} has no pixels inside a {image.width}x{image.height} image")
        image = image.crop((left, top, right, bottom))
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_training_image(
    path: str, size: int = CLASSIFIER_INPUT_SIZE, box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """A labelled photo from disk as the classifier will see it when served: whole, or the detector's box
    (in decoded-photo pixels, as pipeline.recognition gives it)."""
    with open(path, "rb") as file:
        return classifier_input(decode_photo(file.read()).image, box, size)
