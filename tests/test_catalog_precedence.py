"""pipeline.release.catalog_precedence: the operator's word measured, on a world small enough to work out by hand.

Trained classes 0 and 1 (one training photo each: g0, close to the new product, and e3); product 2 enrolled from
two photos, A at e0 and B. A's nearest training photo (class 0, cosine 0.9) beats B (0.8): its feedback names
class 0, so the operator gives product 2 precedence over class 0. Queries: q1 of product 2, nearer g0 (0.99) than A
(0.95); q2, class 0's own training photo; q3 of class 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.catalog.match import CatalogIndex, CatalogSnapshot
from pipeline.core.catalog.rule import CatalogRule
from pipeline.release.catalog_evaluation import Embedded
from pipeline.release.catalog_precedence import labelled_gallery, measure, suggested

KEPT, LEFT_OUT, RULE, UNKNOWN = [0, 1], [2], CatalogRule("beats_training", 0.05), 0.5
E = np.eye(4, dtype=np.float32)
G0 = np.array([0.9, 0, np.sqrt(1 - 0.81), 0], np.float32)
B = np.array([0.8, 0.6, 0, 0], np.float32)


def world():
    pool = Embedded(["A", "B"], np.array([2, 2]), np.array([[0.7, 0.3], [0.4, 0.6]], np.float32), np.stack([E[0], B]),
                    np.ones(2, bool), np.stack([E[0], B]))
    index = CatalogIndex(CatalogSnapshot(1, "test", np.stack([E[0], B]), ["2", "2"], ["2", "2"]))
    gallery = labelled_gallery(np.stack([G0, E[3]]), np.array([0, 1]))
    q1 = np.array([0.95, 0, np.sqrt(1 - 0.95 ** 2), 0], np.float32)
    queries = Embedded(["q1", "q2", "q3"], np.array([2, 0, 1]), np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8]], np.float32),
                       np.stack([q1, G0, E[3]]), np.ones(3, bool), np.stack([q1, G0, E[3]]))
    return pool, index, gallery, queries


def test_the_feedback_on_the_enrollment_photos_names_the_class_whose_training_photos_win():
    pool, index, gallery, _ = world()
    # A: 0.8 to B, 0.9 to class 0's photo (margin -0.1), the classifier sure of class 0; B: 0.8 to A, 0.72 (+0.08)
    assert suggested(pool, np.array([0, 1]), index, gallery, KEPT, RULE, UNKNOWN) == {"2": ("0",)}
    assert suggested(pool, np.array([0, 1]), index, gallery, KEPT, CatalogRule("beats_training", -0.2), UNKNOWN) == {}


def test_precedence_names_the_product_where_its_class_won_and_costs_that_class_its_look_alikes():
    pool, index, gallery, queries = world()
    figures = measure(queries, gallery, pool, [(np.array([0, 1]), index)], KEPT, LEFT_OUT, RULE, UNKNOWN)
    assert figures == pytest.approx({
        "classes_set_aside_per_product": 1.0,
        # without: q1 is 0.99 from class 0's photo, 0.95 from A: the classifier answers it (class 0, wrong)
        "without_catalog_coverage_of_enrolled": 0.0, "without_catalog_precision": float("nan"),
        "without_enrolled_top1_served": 0.0, "without_trained_top1": 1.0, "without_set_aside_classes_top1": 1.0,
        # with: class 0 set aside for product 2, q1 is named (right) and so is q2, class 0's own photo (wrong)
        "with_precedence_catalog_coverage_of_enrolled": 1.0, "with_precedence_catalog_precision": 0.5,
        "with_precedence_enrolled_top1_served": 1.0, "with_precedence_trained_top1": 0.5,
        "with_precedence_set_aside_classes_top1": 0.0,
        # in a store that sells no class 0 (what precedence says), q2 never comes: every catalog answer is right
        "without_catalog_precision_without_set_aside_photos": float("nan"),
        "with_precedence_catalog_precision_without_set_aside_photos": 1.0}, nan_ok=True)
