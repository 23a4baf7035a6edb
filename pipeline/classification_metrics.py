"""The arithmetic of classification figures, pure numpy: top-k accuracy, per-class accuracy, bootstrap intervals,
log-loss, and the unknown threshold. A leaf of pipeline/ (it imports no other part of it), so that training,
evaluation and release measure with the same functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def top_k_accuracy(probabilities: np.ndarray, targets: ArrayLike, k: int) -> float:
    """Share of rows whose target is among the k highest scores (ties go to the lower class index)."""
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    if len(targets) == 0:
        return float("nan")
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == targets[:, None], axis=1)))


def confusion_matrix(targets: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> list[float | None]:
    """Recall of each class from a confusion matrix; None for a class with no examples."""
    totals = matrix.sum(axis=1)
    return [float(matrix[i, i] / totals[i]) if totals[i] else None for i in range(len(matrix))]


BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(correct: ArrayLike, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> list[float]:
    """The percentile bootstrap interval of a mean of per-photo 0/1 outcomes (photos resampled with replacement,
    seeded): on 296 or 357 photos a point is 3-4 photos, and this says how far a figure can move by chance."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return [float("nan"), float("nan")]
    draws = np.random.default_rng(seed).integers(0, len(correct), size=(resamples, len(correct)))
    means = correct[draws].mean(axis=1)
    return [float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, 1 - (1 - level) / 2))]


def log_loss(probabilities: np.ndarray, targets: ArrayLike) -> float:
    """Mean -log of the probability given to the true class: every photo counts by how sure and how right the model
    is, not only whether its top answer is right, so it moves less by chance than top-1 on a few hundred photos."""
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(targets)), targets], 1e-12, 1.0))))


def summarize(probabilities: np.ndarray, targets: ArrayLike, labels: Sequence[str]) -> dict[str, Any]:
    """Top-1 (with its 95% bootstrap interval) / top-5 accuracy, per-class accuracy and the confusion matrix of one
    set of predictions."""
    matrix = confusion_matrix(targets, np.argmax(probabilities, axis=1), len(labels))
    return {
        "top1": top_k_accuracy(probabilities, targets, 1),
        "top1_ci95": bootstrap_interval(np.argmax(probabilities, axis=1) == np.asarray(targets)),
        "top5": top_k_accuracy(probabilities, targets, min(5, len(labels))),
        "per_class": {
            label: {"n": int(matrix[i].sum()), "accuracy": accuracy}
            for i, (label, accuracy) in enumerate(zip(labels, per_class_accuracy(matrix)))
        },
        "confusion_matrix": matrix.tolist(),
    }


def calibrate_unknown(probabilities: np.ndarray, targets: ArrayLike, target_precision: float = 0.95) -> dict[str, Any]:
    """The lowest top-1 probability threshold at which the answers called known are right at least
    `target_precision` of the time (ties: all answers at a probability are in or out together).

    Returns the threshold, the precision and coverage (share of photos answered known) it gives; when no
    threshold reaches the target, the one with the best precision, flagged `target_met: false`.
    """
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    return calibrate_score(probabilities.max(axis=1), probabilities.argmax(axis=1) == targets, target_precision)


def calibrate_score(score: ArrayLike, correct: ArrayLike, target_precision: float = 0.95) -> dict[str, Any]:
    """`calibrate_unknown` for any confidence score (higher: surer) of answers that are `correct` or not."""
    confidence, correct = np.asarray(score, dtype=np.float64), np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    cut = np.flatnonzero(np.append(confidence[1:] != confidence[:-1], True))  # last index of each distinct value
    precision = np.cumsum(correct)[cut] / (cut + 1)
    meets = np.flatnonzero(precision >= target_precision)
    best = int(meets[-1]) if len(meets) else int(np.argmax(precision))
    return {
        "unknown_threshold": float(confidence[cut[best]]),
        "target_precision": target_precision,
        "target_met": bool(len(meets)),
        "precision": float(precision[best]),
        "coverage": float((cut[best] + 1) / len(confidence)),
        "photos": len(confidence),
    }


def precision_at(probabilities: np.ndarray, targets: ArrayLike, threshold: float) -> dict[str, Any]:
    """Precision and coverage of the answers at or above a threshold fitted elsewhere (on the selection split)."""
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)
    known = probabilities.max(axis=1) >= threshold
    correct = probabilities.argmax(axis=1) == targets
    return {"unknown_threshold": float(threshold), "precision": float(correct[known].mean()) if known.any() else float("nan"),
            "coverage": float(known.mean()), "photos": int(len(targets))}


def surely_better(correct: ArrayLike, other: ArrayLike, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = 0) -> bool:
    """Whether per-photo outcomes `correct` beat `other` on the same photos in at least `level` of paired bootstrap
    resamples: a difference of a few photos in a few hundred is not taken for a real one."""
    correct, other = np.asarray(correct, dtype=np.float64), np.asarray(other, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(correct), size=(resamples, len(correct)))
    return bool(np.mean(correct[draws].mean(axis=1) > other[draws].mean(axis=1)) >= level)
