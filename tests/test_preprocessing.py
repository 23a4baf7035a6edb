"""decode_photo / detector_input / classifier_input on real photos and on the formats phones and people send."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.core.paths import SHARED_DATA
from pipeline.core.preprocessing import (
    MAX_IMAGE_PIXELS,
    ImageError,
    classifier_input,
    decode_photo,
    detector_input,
    load_training_image,
)

pytestmark = pytest.mark.data  # GROCERY_PHOTO; the fast tests move to made-up photos in the next commit

DATA = SHARED_DATA
GROCERY_PHOTO = DATA / "grocery_store" / "val" / "Fruit" / "Banana" / "Banana_001.jpg"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def phone_photo(width: int = 4032, height: int = 3024, orientation: int | None = None) -> bytes:
    """A real grocery photo upscaled to a phone's 12 MP, optionally with an EXIF orientation tag."""
    image = Image.open(GROCERY_PHOTO).convert("RGB").resize((width, height))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def test_large_jpeg_is_decoded_at_reduced_size_with_original_size_kept():
    photo = decode_photo(phone_photo(), min_side=1600)
    assert photo.original_size == (4032, 3024)
    assert photo.image.mode == "RGB"
    assert 1600 <= photo.image.width < 4032  # draft picked a DCT scale, not the full 12 MP
    assert photo.scale == pytest.approx(4032 / photo.image.width)


def test_exif_orientation_is_applied():
    photo = decode_photo(phone_photo(400, 300, orientation=6), min_side=1600)  # 6: rotate 90° clockwise
    assert photo.original_size == (300, 400)
    assert photo.image.size == (300, 400)


def test_png_with_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 30))
    image = decode_photo(encode(rgba, "PNG")).image
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (0, 0, 255)
    assert image.getpixel((35, 5)) == (255, 255, 255)  # transparent → white, not black


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.new("L", (20, 10), 128), "PNG"),
        (Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG"),
        (Image.fromarray(np.full((10, 20), 40000, np.uint16)), "PNG"),  # 16-bit grayscale
        (Image.new("P", (20, 10), 3), "GIF"),
        (Image.new("RGB", (20, 10), (10, 200, 30)), "WEBP"),
    ],
    ids=["grayscale", "cmyk", "16-bit", "palette-gif", "webp"],
)
def test_other_modes_become_8_bit_rgb(image, fmt):
    photo = decode_photo(encode(image, fmt))
    assert photo.image.mode == "RGB" and photo.image.size == (20, 10)
    assert np.asarray(photo.image).dtype == np.uint8


def test_16_bit_values_are_rescaled_not_clipped():
    image = Image.fromarray(np.full((10, 20), 32768, np.uint16))
    pixel = decode_photo(encode(image, "PNG")).image.getpixel((0, 0))
    assert pixel[0] in (127, 128)


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert decode_photo(data).image.getpixel((8, 8)) == (255, 0, 0)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty_image"),
        (b"%PDF-1.4 definitely not a photo", "not_an_image"),
        (phone_photo(800, 600)[:5000], "truncated_image"),
        (png_header_only(100_000, 100_000), "too_many_pixels"),
    ],
    ids=["empty", "not-an-image", "truncated", "bomb"],
)
def test_bad_bytes_raise_image_error_with_a_code(data, code):
    with pytest.raises(ImageError) as raised:
        decode_photo(data)
    assert raised.value.code == code


def test_pixel_limit_is_checked_before_decoding():
    assert 100_000 * 100_000 > MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="limit"):
        decode_photo(png_header_only(8000, 8000), max_pixels=1_000_000)


def test_detector_input_shrinks_keeping_aspect_and_never_enlarges():
    image = Image.new("RGB", (1600, 1200))
    assert detector_input(image, 640).shape == (480, 640, 3)
    assert detector_input(Image.new("RGB", (300, 200)), 640).shape == (200, 300, 3)


def test_classifier_input_crops_the_box_and_squashes_to_size():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 0, 0), (100, 0, 200, 100))
    crop = classifier_input(image, (100, 0, 200, 100), size=32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert (crop[..., 0] == 255).all() and (crop[..., 1] == 0).all()
    with pytest.raises(ValueError):
        classifier_input(image, (300, 0, 400, 100), size=32)


def test_training_sees_exactly_what_serving_sees():
    data = GROCERY_PHOTO.read_bytes()
    served = classifier_input(decode_photo(data).image, None, 256)
    trained = load_training_image(str(GROCERY_PHOTO), 256)
    np.testing.assert_array_equal(served, trained)
