"""pipeline.core.nms: ultralytics' non-max suppression in numpy, which the ONNX detector runs so a CPU serving node
needs no torch. Its rules on hand-made outputs (fast tier), and the same boxes as ultralytics' own NMS on the
shipped detector's raw outputs for real photos."""

import numpy as np
import pytest

from pipeline.core.nms import non_max_suppression


def raw(*anchors: tuple) -> np.ndarray:
    """One image's YOLO output [1, 4 + classes, anchors] from (cx, cy, w, h, score per class...) rows."""
    return np.asarray(anchors, np.float32).T[None]


def test_an_overlapping_lower_box_of_the_same_class_is_suppressed_a_separate_one_kept():
    (found,) = non_max_suppression(raw((50, 50, 40, 40, 0.9), (52, 50, 40, 40, 0.8), (150, 150, 40, 40, 0.7)), 0.25, 0.5, 10)
    np.testing.assert_allclose(found, [[30, 30, 70, 70, 0.9, 0], [130, 130, 170, 170, 0.7, 0]], rtol=1e-6)


def test_suppression_needs_iou_over_the_threshold():
    # 40x40 boxes 20 px apart: IoU = 800 / 2400 = 1/3
    boxes = raw((50, 50, 40, 40, 0.9), (70, 50, 40, 40, 0.8))
    assert len(non_max_suppression(boxes, 0.25, 0.34, 10)[0]) == 2
    assert len(non_max_suppression(boxes, 0.25, 0.33, 10)[0]) == 1


def test_boxes_of_different_classes_never_suppress_each_other():
    (found,) = non_max_suppression(raw((50, 50, 40, 40, 0.9, 0.1), (50, 50, 40, 40, 0.1, 0.8)), 0.25, 0.5, 10)
    assert found[:, 5].tolist() == [0, 1]


def test_scores_at_or_under_the_threshold_are_dropped_and_at_most_max_det_kept_best_first():
    anchors = [(20 + 60 * i, 50, 40, 40, score) for i, score in enumerate((0.25, 0.3, 0.9, 0.5, 0.7))]
    (every,) = non_max_suppression(raw(*anchors), 0.25, 0.5, 10)
    np.testing.assert_allclose(every[:, 4], [0.9, 0.7, 0.5, 0.3])  # 0.25 is not over 0.25
    (found,) = non_max_suppression(raw(*anchors), 0.25, 0.5, 3)
    np.testing.assert_allclose(found[:, 4], [0.9, 0.7, 0.5])
    (none,) = non_max_suppression(raw(*anchors), 0.95, 0.5, 3)
    assert none.shape == (0, 6)


def test_a_batch_is_answered_image_by_image_and_a_wrong_shape_refused():
    batch = np.concatenate([raw((50, 50, 40, 40, 0.9)), raw((50, 50, 40, 40, 0.1))])
    assert [len(found) for found in non_max_suppression(batch, 0.25, 0.5, 10)] == [1, 0]
    with pytest.raises(ValueError, match="4 \\+ classes"):
        non_max_suppression(np.zeros((1, 4, 10), np.float32), 0.25, 0.5, 10)


@pytest.mark.models
@pytest.mark.data
@pytest.mark.parametrize(("confidence", "iou"), [(0.25, 0.5), (0.05, 0.7), (0.01, 0.3)])
def test_the_same_boxes_as_ultralytics_on_the_shipped_detectors_outputs(confidence, iou):
    import onnxruntime
    import torch
    from ultralytics.utils import nms as ultralytics_nms

    from load_tests.photos import freiburg_held_back_photos, grocery_val_photos
    from pipeline.core.model_label import load_model_label
    from pipeline.core.preprocessing import decode_photo, detector_input, letterbox

    bundle = load_model_label(None)
    session = onnxruntime.InferenceSession(str(bundle.runtime_path("detector", "onnx")), providers=["CPUExecutionProvider"])
    compared = 0
    for path in grocery_val_photos(8) + freiburg_held_back_photos(8):
        pixels = letterbox(detector_input(decode_photo(path.read_bytes()).image, 224), 224).pixels
        output = session.run(None, {session.get_inputs()[0].name: pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255})[0]
        (ours,) = non_max_suppression(output, confidence, iou, 10)
        (theirs,) = ultralytics_nms.non_max_suppression(torch.from_numpy(output), confidence, iou, None, False, max_det=10, nc=0)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, atol=1e-4)
        compared += len(ours)
    assert compared > 16  # boxes were found and compared, not empty lists
