"""The weights of the catalog's `calibrated` policy (pipeline.core.catalog.rule): a logistic regression of whether the
catalog's nearest product is the right answer for a crop, from what serving knows of it: the cosine of that match,
the cosine of the crop's nearest training photo, and the classifier's own top probability (a sure trained answer and
an unsure one are different evidence).

Fitted on the leave-classes-out run's selection split (pipeline.release.catalog_evaluation): every draw's catalog,
every selection photo, the trained classes' and the enrolled ones'. Four numbers fitted on a few thousand rows, so
little optimism; `cross_fitted` measures it: the weights fitted on half the classes (enrolled and trained), scored on
the other half, and the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeline.core.catalog.rule import CALIBRATED_FEATURES

if TYPE_CHECKING:
    from pipeline.core.catalog.match import CatalogIndex


class QueryPhotos(Protocol):
    """Query photos as pipeline.release.catalog_evaluation embeds them (its Embedded: what this module reads of it)."""

    @property
    def class_ids(self) -> np.ndarray: ...
    @property
    def probabilities(self) -> np.ndarray: ...
    @property
    def embeddings(self) -> np.ndarray: ...

L2 = 1e-2  # a little ridge: the features are correlated (two cosines)


def feature_rows(queries: QueryPhotos, training: np.ndarray, indexes: list[CatalogIndex]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw's catalog and query: the features (CALIBRATED_FEATURES' order), whether the catalog's nearest product
    is the query's class, and the query's class."""
    rows, right, classes = [], [], []
    confidence = queries.probabilities.max(axis=1)
    for index in indexes:
        matches = index.best(queries.embeddings)
        similarity = np.array([m.similarity if m else -1.0 for m in matches])
        rows.append(np.column_stack([np.ones(len(similarity)), similarity, training, confidence]))
        right.append(np.array([m is not None and int(m.sku) == c for m, c in zip(matches, queries.class_ids)]))
        classes.append(queries.class_ids)
    assert rows[0].shape[1] == len(CALIBRATED_FEATURES)
    return np.concatenate(rows), np.concatenate(right), np.concatenate(classes)


def fit_logistic(features: np.ndarray, target: np.ndarray, l2: float = L2, steps: int = 50) -> np.ndarray:
    """Newton's method on the ridge-penalised log-loss (convex: it converges in a few steps)."""
    weights = np.zeros(features.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-features @ weights))
        gradient = features.T @ (p - target) + l2 * weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + l2 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-9:
            break
    return weights


def fit_weights(queries: QueryPhotos, training: np.ndarray, indexes: list[CatalogIndex]) -> tuple[float, ...]:
    features, right, _ = feature_rows(queries, training, indexes)
    return tuple(round(float(w), 4) for w in fit_logistic(features, right.astype(float)))


def at_precision(score: np.ndarray, right: np.ndarray, enrolled: np.ndarray, target: float) -> dict[str, float] | None:
    """The lowest threshold whose catalog answers are right >= `target` of the time, and what the catalog then names:
    its share of the enrolled classes' photos and of the trained classes' (None: no threshold reaches it)."""
    order = np.argsort(-score, kind="stable")
    precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    reaching = np.flatnonzero(precision >= target)
    if not len(reaching):
        return None
    threshold = score[order[reaching.max()]]
    taken = score >= threshold
    return {"threshold": float(threshold), "catalog_coverage_of_enrolled": float(taken[enrolled].mean()),
            "catalog_precision": float(right[taken].mean()), "trained_taken_by_catalog": float(taken[~enrolled].mean())}


def cross_fitted(queries: QueryPhotos, training: np.ndarray, indexes: list[CatalogIndex], kept: list[int], left_out: list[int],
                 target: float) -> dict[str, float] | None:
    """The policy's figures with every row scored by weights that never saw its class (two folds by class)."""
    features, right, classes = feature_rows(queries, training, indexes)
    score = np.zeros(len(right))
    for fold in range(2):
        fitted_on = np.isin(classes, left_out[fold::2] + kept[fold::2])
        weights = fit_logistic(features[fitted_on], right[fitted_on].astype(float))
        score[~fitted_on] = features[~fitted_on] @ weights
    return at_precision(score, right, np.isin(classes, left_out), target)
