"""decode_photo / detector_input / classifier_input on the formats phones and people send; and training's image of
a real photo against serving's."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from load_tests.photos import GROCERY, phone_photo
from pipeline.core.model_label import load_model_label
from pipeline.core.preprocessing import (
    MAX_IMAGE_PIXELS,
    ImageError,
    classifier_input,
    decode_photo,
    detector_input,
    load_training_image,
)
from pipeline.core.recognition import boxes_in_photo, crop_boxes, crops, prepare_photo
from pipeline.core.settings import serving_settings

GROCERY_PHOTO = GROCERY / "train" / "Fruit" / "Banana" / "Banana_001.jpg"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def textured_jpeg(width: int = 4032, height: int = 3024, orientation: int | None = None) -> bytes:
    """Noise, upscaled to a phone's 12 MP by default: its JPEG is too big to be whole in 5,000 bytes. With an optional
    EXIF orientation tag."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height // 8, width // 8, 3), np.uint8)).resize((width, height))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def test_large_jpeg_is_decoded_at_reduced_size_with_original_size_kept():
    photo = decode_photo(textured_jpeg(), min_side=1600)
    assert photo.original_size == (4032, 3024)
    assert photo.image.mode == "RGB"
    assert 1600 <= photo.image.width < 4032  # draft picked a DCT scale, not the full 12 MP
    assert photo.scale == pytest.approx(4032 / photo.image.width)


def test_exif_orientation_is_applied():
    photo = decode_photo(textured_jpeg(400, 300, orientation=6), min_side=1600)  # 6: rotate 90° clockwise
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
        (textured_jpeg(800, 600)[:5000], "truncated_image"),
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


@pytest.mark.data
@pytest.mark.parametrize("size", [None, (4032, 3024)], ids=["as-shot", "phone-size"])
def test_training_gets_the_pixels_serving_gives_the_classifier(tmp_path, size):
    """Training reads a labelled photo from disk (load_training_image, the whole photo or the box that
    `python -m pipeline.train.yolo_detector boxes` found in the photo as served: serve_config.yaml's decode_min_side and
    crop_margin); serving decodes the upload with those settings and cuts the same boxes. Tolerance: none. Both
    are the same decode, crop and resize of the same bytes, so any difference is a real disagreement, such as
    serve_config.yaml's decode_min_side set apart from the default training decodes at: the phone-size photo
    then decodes at another scale and the box lands elsewhere."""
    photo_path = GROCERY_PHOTO
    if size is not None:
        photo_path = tmp_path / "phone.jpg"
        photo_path.write_bytes(phone_photo(GROCERY_PHOTO, size))
    settings = serving_settings()
    bundle = load_model_label(verify_checksums=False)  # the shipped manifest: the models' input sizes
    photo, detector_image = prepare_photo(photo_path.read_bytes(), settings.recognizer, bundle.detector_input_size)
    side = detector_image.pixels.shape[0]
    detected = np.array([[0.3 * side, 0.25 * side, 0.7 * side, 0.6 * side, 0.9]], np.float32)  # letterbox pixels
    regions = crop_boxes(boxes_in_photo(detected, photo, detector_image), settings.recognizer.crop_margin) + [None]
    served = crops(photo.image, regions, bundle.classifier_input_size)
    trained = [load_training_image(str(photo_path), bundle.classifier_input_size, region) for region in regions]
    for region, serving_pixels, training_pixels in zip(regions, served, trained):
        np.testing.assert_array_equal(training_pixels, serving_pixels, err_msg=f"region {region}")
