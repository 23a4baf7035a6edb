"""YOLO's raw output → boxes, in numpy: what ultralytics' `non_max_suppression` does for a detect model, without
torch, so a CPU serving node runs the ONNX detector with ONNX Runtime and numpy alone.

Same steps as ultralytics 8.4 (`ultralytics.utils.nms.non_max_suppression`, best class per box, class-aware):
keep anchors whose best class score is over the confidence threshold, centre-size boxes to corners, at most
`MAX_NMS` by score, greedy suppression of any box whose IoU with a kept higher-scoring box of the same class is
over the IoU threshold (torchvision's `nms` rule), at most `max_det` boxes, highest score first.
tests/test_runtimes.py holds the boxes to the torch runtime's.
"""

from __future__ import annotations

import numpy as np

MAX_NMS = 30000
"""Most candidate boxes an image sends to the suppression (ultralytics' max_nms)."""
CLASS_OFFSET = 7680
"""Boxes of different classes are moved this far apart so they never suppress each other (ultralytics' max_wh)."""


def non_max_suppression(raw: np.ndarray, conf_threshold: float, iou_threshold: float, max_det: int) -> list[np.ndarray]:
    """`raw` [N, 4 + classes, anchors] (centre x, centre y, width, height, class scores) → per image
    [K, 6] float32 rows (x1, y1, x2, y2, score, class), highest score first."""
    if raw.ndim != 3 or raw.shape[1] < 5:
        raise ValueError(f"expected YOLO output [N, 4 + classes, anchors]; got {raw.shape}")
    return [_one_image(image.T, conf_threshold, iou_threshold, max_det) for image in raw]


def _one_image(anchors: np.ndarray, conf_threshold: float, iou_threshold: float, max_det: int) -> np.ndarray:
    scores_per_class = anchors[:, 4:]
    classes = scores_per_class.argmax(axis=1)
    scores = scores_per_class[np.arange(len(anchors)), classes]
    keep = scores > conf_threshold
    if not keep.any():
        return np.empty((0, 6), np.float32)
    centre, half = anchors[keep, :2], anchors[keep, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    scores, classes = scores[keep], classes[keep].astype(np.float32)
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    kept = _greedy(boxes + classes[:, None] * CLASS_OFFSET, iou_threshold, max_det)
    return np.concatenate([boxes[kept], scores[kept, None], classes[kept, None]], axis=1).astype(np.float32)


def _greedy(boxes: np.ndarray, iou_threshold: float, max_det: int) -> np.ndarray:
    """Indices kept from `boxes` sorted by descending score (at most `max_det`): each suppresses the later ones it
    overlaps by more than `iou_threshold`."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        kept.append(i)
        if len(kept) == max_det:
            break
        rest = np.arange(i + 1, len(boxes))
        rest = rest[~suppressed[rest]]
        if not len(rest):
            break
        top_left = np.maximum(boxes[i, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return np.asarray(kept, dtype=np.int64)
