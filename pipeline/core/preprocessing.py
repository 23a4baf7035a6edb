"""Image preprocessing shared by training (pipeline/) and serving (deployments/).

Training and serving must see a product the same way, so both go through these functions: `decode_photo`
turns uploaded bytes into an upright RGB picture, `detector_input` shrinks it and `letterbox` pads it to the
detector's square input exactly as ultralytics does, and `classifier_input` cuts out (a box of) it at the
classifier's input size. Pixel scaling is not done here: the models rescale their uint8 input themselves.
Only numpy, Pillow and OpenCV: the CPU-only ingress imports this without TensorFlow, torch or ultralytics.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

CLASSIFIER_INPUT_SIZE = 256
"""Side of the square the classifier sees (the recipe's 256 px)."""

DECODE_MIN_SIDE = 1000
"""A photo is decoded at a reduced scale while its longest side stays at least this long: enough for the
detector (640 px) and for classifier crops of products that fill a good part of the photo. A 12 MP phone JPEG
(4032 px) then decodes at 1/4 scale (PIL draft: 16x fewer pixels than in full); other formats are decoded in
full and reduced by a whole factor at once, so what the ingress keeps and converts stays small."""

MAX_IMAGE_PIXELS = 50_000_000
"""Largest photo accepted (50 MP covers today's phone sensors); larger headers are refused before
any pixel is decoded, so a decompression bomb costs nothing."""

DECODE_PEAK_BYTES_PER_PIXEL = 17
"""Upper bound of one decode's peak memory per pixel of the photo's header size (tests/test_hardening.py
measures it). Non-JPEG photos are decoded in full (at most 4 bytes a pixel) before they are reduced: PNG, TIFF,
BMP and GIF then peak at 4-5 bytes a pixel, 16-bit PNG at under 3; WebP is the costliest, as Pillow's decoder
holds about four full copies (16 bytes a pixel). JPEGs are decoded at reduced size and cost far less."""

DECODE_PEAK_BYTES = MAX_IMAGE_PIXELS * DECODE_PEAK_BYTES_PER_PIXEL
"""The most one decode can cost at the pixel limit."""

RESAMPLE = Image.Resampling.BILINEAR

_BAND_ROWS = 256
"""High-bit-depth pixels are rescaled this many rows at a time, so the float copies stay small."""

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
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_photo(data: bytes, min_side: int = DECODE_MIN_SIDE, max_pixels: int = MAX_IMAGE_PIXELS) -> Photo:
    """Decode image bytes once: first frame, EXIF-rotated, RGB, large photos at reduced size (JPEGs while decoding).

    Raises ImageError for empty, unreadable, truncated or oversized images.
    """
    if not data:
        raise ImageError("empty_image", "the image is empty (0 bytes)")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))  # reassigned below to plain Images (_reduce, transpose)
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
        # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps the image at least this big. No side is
        # asked below 1 px: a 4032x4 or 1x1001 JPEG would round it to 0, and Pillow divides by it.
        ratio = max(1.0, max(width, height) / min_side)
        image.draft("RGB", (max(1, int(width / ratio)), max(1, int(height / ratio))))
    try:
        image.seek(0)  # first frame of an animation
        image.load()
    except Exception as error:
        raise ImageError("truncated_image", f"the image data is truncated or corrupt: {error}") from None

    image = _reduce(image, min_side)
    if orientation in _EXIF_TRANSPOSE:  # ImageOps.exif_transpose's turn, without its full copy when there is none
        image = image.transpose(_EXIF_TRANSPOSE[orientation])
    return Photo(image=_to_rgb(image), original_size=original_size, format=image_format)


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """The decoded image shrunk by the largest whole factor that keeps its long side >= min_side (box filter).

    What JPEG's draft does while decoding, done for every format after it: a 7000x7000 PNG becomes 1000x1000
    before any mode conversion or EXIF rotation copies it. It goes in bands of whole boxes (the same pixels as
    one reduce()), so the full-size image is never copied: RGBA's premultiplied pass and the 8-bit conversion
    of modes reduce() cannot take (16-bit, palette, 1-bit) cost a band each.
    """
    factor = max(image.size) // min_side
    if factor < 2:
        return image
    rows = factor * max(1, _BAND_ROWS // factor)
    reduced: Image.Image | None = None
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(image.height, top + rows)))
        if band.mode.startswith("I;16"):
            band = _to_8_bit(band)  # always read as 0..65535, so a band rescales as the whole image would
        elif band.mode in ("1", "P"):
            band = band.convert("RGBA")  # a palette's transparency is kept for _to_rgb
        band = band.reduce(factor)
        if reduced is None:
            reduced = Image.new(band.mode, (-(-image.width // factor), -(-image.height // factor)))
        reduced.paste(band, (0, top // factor))
    assert reduced is not None
    return reduced


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float pixels as 8-bit grayscale (L), rescaled rather than clipped.

    16-bit modes, and 32-bit ones with values over 255, are read as 0..65535; floats up to 1.0 as 0..1; the rest
    as 0..255. Done in row bands at float32: a 7000x7000 16-bit PNG costs its 49 MB of output and one band,
    where a float64 copy of the whole image cost over a gigabyte.
    """
    high = image.getextrema()[1]
    assert isinstance(high, (int, float)), f"{image.mode} is not a single-band mode"  # one band: (min, max) numbers
    top = 65535.0 if image.mode.startswith("I;16") or high > 255 else 255.0
    if image.mode == "F" and high <= 1.0:
        top = 1.0
    pixels = np.empty((image.height, image.width), np.uint8)
    for row in range(0, image.height, _BAND_ROWS):
        band = np.asarray(image.crop((0, row, image.width, min(image.height, row + _BAND_ROWS))), dtype=np.float32)
        pixels[row:row + band.shape[0]] = np.clip(np.nan_to_num(band * np.float32(255.0 / top) + 0.5), 0, 255)
    return Image.fromarray(pixels)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency onto white, 16/32-bit and float rescaled, CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8_bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def detector_input(image: Image.Image, size: int) -> np.ndarray:
    """The photo shrunk (never enlarged) so its longest side is at most `size`, as uint8 HxWx3.

    `letterbox` then fits it to the detector's square input, as ultralytics did with it in training.
    """
    ratio = max(image.width, image.height) / size
    if ratio > 1.0:
        image = image.resize((max(1, round(image.width / ratio)), max(1, round(image.height / ratio))), RESAMPLE)
    return np.asarray(image, dtype=np.uint8)


LETTERBOX_PAD = 114
"""The grey ultralytics pads its letterbox with (LetterBox's padding_value), in training and prediction."""


@dataclass(frozen=True)
class Letterboxed:
    """The detector's exact input, and where the shrunk photo sits inside it."""

    pixels: np.ndarray  # uint8 [size, size, 3] RGB
    source_size: tuple[int, int]  # (width, height) of the image that was letterboxed

    def boxes_in_source(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [K, 4+] from letterbox pixels to the source image's (ultralytics' scale_boxes, then clipped)."""
        boxes = np.array(boxes, dtype=np.float64)  # a copy: the caller's boxes stay as they were
        size, (width, height) = self.pixels.shape[0], self.source_size
        gain = min(size / height, size / width)
        new_h, new_w = max(round(height * gain), 1), max(round(width * gain), 1)
        pad_x, pad_y = round((size - new_w) / 2 - 0.1), round((size - new_h) / 2 - 0.1)
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / (new_w / width)).clip(0, width)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / (new_h / height)).clip(0, height)
        return boxes


def letterbox(image: np.ndarray, size: int) -> Letterboxed:
    """`image` (uint8 HxWx3) resized to fit a size x size square and padded with grey: ultralytics' LetterBox
    (center, scaleup, no stride rounding, OpenCV bilinear), so the detector sees the pixels its own predict()
    would make. Done in the ingress, the detector gets ~150 KB instead of the shrunk photo; written here
    rather than imported, as ultralytics would bring torch into the ingress (tests check it is identical)."""
    height, width = image.shape[:2]
    gain = min(size / height, size / width)
    new_w, new_h = max(round(width * gain), 1), max(round(height * gain), 1)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
    pixels = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(LETTERBOX_PAD,) * 3)
    return Letterboxed(pixels=np.ascontiguousarray(pixels), source_size=(width, height))


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
    (in decoded-photo pixels, as pipeline.core.recognition gives it)."""
    with open(path, "rb") as file:
        return classifier_input(decode_photo(file.read()).image, box, size)
