"""The operator's word, measured: every enrolled product given precedence over the trained classes its enrollment
feedback names (pipeline.core.catalog.feedback: the classes that win its own photos, each asked without itself), as
an operator who follows every suggestion would; and what that costs those classes' photos.

Precedence is a store's decision ("we sell this product, not that trained one"), so its cost falls on trained
classes the store says it does not sell: the figures show both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeline.core.catalog.feedback import leave_one_out
from pipeline.core.catalog.match import CatalogIndex, CatalogMatch, CatalogSnapshot
from pipeline.core.catalog.rule import GALLERY_CLASSES, trained_side
from pipeline.release.catalog_calibration import QueryPhotos

if TYPE_CHECKING:
    from pipeline.core.catalog.rule import CatalogRule


class PhotosWithVectors(QueryPhotos, Protocol):
    """Photos as pipeline.release.catalog_evaluation embeds them, with their enrolled vectors."""

    @property
    def enrolled(self) -> np.ndarray: ...


def labelled_gallery(vectors: np.ndarray, class_ids: np.ndarray) -> CatalogIndex:
    """The classifier's gallery, each photo labelled with its class id as text (the names `suggested` uses)."""
    names = [str(int(c)) for c in class_ids]
    return CatalogIndex(CatalogSnapshot(0, "evaluation", vectors.astype(np.float32), names, names))


def suggested(pool: PhotosWithVectors, rows: np.ndarray, index: CatalogIndex, gallery: CatalogIndex, kept: list[int],
              rule: CatalogRule, unknown_threshold: float) -> dict[str, tuple[str, ...]]:
    """Per enrolled product (sku: its class id), the trained classes the feedback on its enrollment photos (`rows` of
    `pool`) names: the class of the nearest training photo, and the classifier's answer, of each photo the service
    would not answer as the product."""
    names = [str(c) for c in kept]
    precedence = {}
    for sku in sorted(set(index.snapshot.skus)):
        own = rows[pool.class_ids[rows] == int(sku)]
        others = CatalogIndex(index.snapshot.without(sku))
        feedback = leave_one_out(sku, sku, pool.embeddings[own], pool.probabilities[own], pool.enrolled[own], range(len(own)),
                                 others, gallery, names, rule, unknown_threshold)
        classes = {name for f in feedback if f.answered_as in ("trained_class", "unknown")
                   for name in (f.training_label, f.label) if name is not None}
        if classes:
            precedence[sku] = tuple(sorted(classes))
    return precedence


def answered(queries: PhotosWithVectors, neighbours: Sequence[Sequence[CatalogMatch]], index: CatalogIndex,
             precedence: dict[str, tuple[str, ...]], kept: list[int], rule: CatalogRule,
             unknown_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: the class answered, whether the catalog named it, and the catalog's nearest class, with each
    product's `precedence` applied as serving applies it (pipeline.core.catalog.rule.trained_side)."""
    names = [str(c) for c in kept]
    matches = index.best(queries.embeddings)
    by_catalog = np.array([m is not None and rule.picks_catalog_for(
        m, trained_side(p, names, unknown_threshold, n, precedence.get(m.sku, ())))
        for m, p, n in zip(matches, queries.probabilities, neighbours)])
    matched = np.array([int(m.sku) if m else -1 for m in matches])
    model = np.asarray(kept)[queries.probabilities.argmax(axis=1)]
    return np.where(by_catalog, matched, model), by_catalog, matched


def measure(queries: PhotosWithVectors, gallery: CatalogIndex, pool: PhotosWithVectors, draws: list[tuple[np.ndarray, CatalogIndex]],
            kept: list[int], left_out: list[int], rule: CatalogRule, unknown_threshold: float) -> dict[str, float]:
    """The catalog's figures with and without each product's suggested precedence, averaged over the draws
    (`draws`: each draw's enrollment rows of `pool` and its catalog)."""
    neighbours = gallery.top(queries.embeddings, GALLERY_CLASSES)
    enrolled, trained = np.isin(queries.class_ids, left_out), np.isin(queries.class_ids, kept)
    rows = []
    for enrollment, index in draws:
        precedence = suggested(pool, enrollment, index, gallery, kept, rule, unknown_threshold)
        row = {"classes_set_aside_per_product": float(np.mean([len(precedence.get(s, ())) for s in set(index.snapshot.skus)]))}
        for name, applied in (("without", {}), ("with_precedence", precedence)):
            answer, by_catalog, matched = answered(queries, neighbours, index, applied, kept, rule, unknown_threshold)
            right = answer == queries.class_ids
            set_aside = np.isin(queries.class_ids, [int(c) for classes in precedence.values() for c in classes]) & trained
            row |= {f"{name}_catalog_coverage_of_enrolled": by_catalog[enrolled].mean(),
                    f"{name}_catalog_precision": right[by_catalog].mean() if by_catalog.any() else float("nan"),
                    f"{name}_enrolled_top1_served": right[enrolled].mean(),
                    f"{name}_trained_top1": right[trained].mean(),
                    f"{name}_set_aside_classes_top1": right[set_aside].mean() if set_aside.any() else float("nan")}
            # in a store that sells none of the classes set aside (what the operator said): their photos never come
            sold = by_catalog & ~set_aside
            row[f"{name}_catalog_precision_without_set_aside_photos"] = right[sold].mean() if sold.any() else float("nan")
        rows.append(row)
    return {key: _mean_of_defined([row[key] for row in rows]) for key in rows[0]}


def _mean_of_defined(values: list[float]) -> float:
    """The mean over the draws where the figure is defined (a precision needs an answer); nan where it never is."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")
