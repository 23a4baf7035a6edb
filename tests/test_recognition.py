"""The recognition core shared by serving, evaluation and the benchmark: which box, how it is cut, what is
answered, and the settings all three read from serve_config.yaml."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from pipeline.paths import SERVE_CONFIG
from pipeline.preprocessing import Photo
from pipeline.recognition import (
    DetectorSettings, PhotoSettings, answer, boxes_in_photo, crop_boxes, crops, serving_settings,
)



def test_boxes_go_to_decoded_photo_pixels_largest_first():
    photo = Photo(image=Image.new("RGB", (1000, 500)), original_size=(4000, 2000), format="JPEG")
    detector_image = np.zeros((320, 640, 3), np.uint8)  # the photo shrunk by 1000/640
    boxes = np.array([[0, 0, 64, 64, 0.9], [100, 100, 300, 200, 0.4], [10, 10, 20, 20, 0.99]], np.float32)
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


def test_serving_settings_are_read_from_serve_config():
    settings = serving_settings(SERVE_CONFIG)
    assert settings.photo == PhotoSettings(detector_image_max_side=640, decode_min_side=1000, crop_margin=0.2)
    assert settings.detector.iou_threshold == 0.5 and settings.detector.max_detections == 10
    assert settings.unknown_threshold is None  # the manifest's calibrated threshold is used


def test_settings_refuse_values_the_models_cannot_use():
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorSettings(input_size=100)
    with pytest.raises(ValueError, match="decode_min_side"):
        PhotoSettings(detector_image_max_side=640, decode_min_side=320)
