"""The recognition core shared by serving, evaluation and the benchmark: which box, how it is cut, what is
answered."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from load_tests.photos import freiburg_held_back_photos, grocery_val_photos
from pipeline.core.model_label import load_model_label
from pipeline.core.models import YoloDetector
from pipeline.core.paths import SERVE_CONFIG
from pipeline.core.preprocessing import Letterboxed, Photo, detector_input, letterbox
from pipeline.core.recognition import answer, boxes_in_photo, crop_boxes, crops, prepare_photo, prominent_probabilities
from pipeline.core.settings import serving_settings


def test_boxes_go_to_decoded_photo_pixels_largest_first():
    photo = Photo(image=Image.new("RGB", (1000, 500)), original_size=(4000, 2000), format="JPEG")
    # the photo shrunk by 1000/640 to 640x320, letterboxed into 640x640: 160 px of padding above
    detector_image = Letterboxed(pixels=np.zeros((640, 640, 3), np.uint8), source_size=(640, 320))
    boxes = np.array([[0, 160, 64, 224, 0.9], [100, 260, 300, 360, 0.4], [10, 170, 20, 180, 0.99]], np.float32)
    placed = boxes_in_photo(boxes, photo, detector_image)
    assert placed[:, 4].tolist() == pytest.approx([0.4, 0.9, 0.99])  # largest, not most confident, first
    assert placed[0, :4].tolist() == pytest.approx([156.25, 156.25, 468.75, 312.5])
    assert crop_boxes(placed)[0] == pytest.approx((156.25, 156.25, 468.75, 312.5))
    assert crop_boxes(boxes_in_photo(np.zeros((0, 5), np.float32), photo, detector_image)) == [None]


def test_crop_margin_grows_each_box_by_its_own_size():
    boxes = np.array([[100, 50, 200, 250, 0.9]], np.float64)
    assert crop_boxes(boxes, margin=0.2) == [pytest.approx((80, 10, 220, 290))]
    assert crop_boxes(np.zeros((0, 5)), margin=0.2) == [None]
    near_edge = crops(Image.new("RGB", (100, 100), (0, 255, 0)), crop_boxes(np.array([[0, 0, 50, 50, 1.0]]), 0.5), 8)
    assert near_edge[0].shape == (8, 8, 3) and (near_edge[0][..., 1] == 255).all()  # clipped to the photo


def test_crops_cut_each_box_and_the_whole_photo_at_the_classifier_size():
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, 100:] = (255, 0, 0)  # right half red
    image = Image.fromarray(pixels)
    left, right, whole = crops(image, [(0, 0, 100, 100), (100, 0, 200, 100), None], 32)
    assert left.shape == right.shape == whole.shape == (32, 32, 3)
    assert left.max() == 0 and (right[..., 0] == 255).all() and whole[:, 0].max() == 0 and whole[:, -1, 0].min() == 255


def test_answer_top_k_and_unknown_threshold():
    probabilities = np.array([0.1, 0.6, 0.3])
    sure = answer(probabilities, ["a", "b", "c"], top_k=2, unknown_threshold=0.6)
    assert sure.candidates == [("b", 0.6), ("c", 0.3)] and sure.known and sure.label == "b"
    assert not answer(probabilities, ["a", "b", "c"], top_k=2, unknown_threshold=0.61).known


@pytest.mark.models
@pytest.mark.parametrize("shape", [(480, 640), (640, 427), (333, 640), (640, 640), (50, 640), (120, 90)])
def test_letterbox_is_ultralytics_letterbox(shape):
    """The ingress letterboxes for the detector; it must be pixel for pixel what ultralytics' predict() does."""
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = letterbox(image, 224)
    theirs = LetterBox((224, 224), auto=False, stride=32)(image=image)
    assert ours.pixels.shape == (224, 224, 3) and np.array_equal(ours.pixels, theirs)
    boxes = np.array([[3.5, 20.25, 100.0, 210.0], [0.0, 0.0, 224.0, 224.0]])
    assert ours.boxes_in_source(boxes) == pytest.approx(scale_boxes((224, 224), boxes.copy(), shape))


@pytest.mark.models
@pytest.mark.data
def test_letterboxed_in_the_ingress_gives_the_boxes_ultralytics_gave_on_the_shrunk_photo():
    """Real photos: boxes from the ingress's letterbox (what is served now) equal those of ultralytics' predict()
    on the shrunk photo (what was served before the letterbox moved to the ingress)."""
    bundle = load_model_label()
    detector = YoloDetector(bundle.detector_path)
    settings = serving_settings(SERVE_CONFIG)
    found = 0
    for path in grocery_val_photos(3) + freiburg_held_back_photos(5):
        photo, detector_image = prepare_photo(path.read_bytes(), settings.recognizer, bundle.detector_input_size)
        served = boxes_in_photo(detector.detect([detector_image.pixels], settings.detector)[0], photo, detector_image)
        shrunk = detector_input(photo.image, settings.recognizer.detector_image_max_side)
        result = detector.model.predict(shrunk[..., ::-1], imgsz=bundle.detector_input_size, conf=settings.detector.confidence_threshold,
                               iou=settings.detector.iou_threshold, max_det=settings.detector.max_detections, verbose=False)[0]
        before = np.concatenate([result.boxes.xyxy.numpy(), result.boxes.conf.numpy()[:, None]], axis=1)
        before[:, :4] *= photo.image.width / shrunk.shape[1]  # the mapping served before: shrunk → decoded photo
        before = before[np.argsort(-(before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]), kind="stable")]
        assert served.shape == before.shape and served == pytest.approx(before, abs=1e-3), path.name
        found += len(served)
    assert found > 0


def test_prominent_probabilities_by_policy():
    crop, whole = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.6, 0.3])
    assert prominent_probabilities(crop, whole, "crop") is crop
    assert prominent_probabilities(crop, whole, "whole_photo") is whole
    assert prominent_probabilities(crop, whole, "average") == pytest.approx([0.4, 0.4, 0.2])
    assert prominent_probabilities(crop, None, "average") is crop  # nothing detected: the crop is the whole photo
    with pytest.raises(ValueError, match="unknown prominent-product policy"):
        prominent_probabilities(crop, whole, "max")
