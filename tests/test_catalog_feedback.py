"""What the service will answer for each photo of a product being enrolled (pipeline.core.catalog.feedback), on
small vectors worked by hand: the cosines below are read off the coordinates.

The product's four photos (crop = stored vector, for the arithmetic), in 6 dimensions:
    x0 = (1, 0, 0, 0, 0, 0)     x1 = (.8, .6, 0, 0, 0, 0)     x2 = (.6, 0, .8, 0, 0, 0)     x3 = (0, 0, .6, .8, 0, 0)
    its other photos' nearest: x0 .8 (x1), x1 .8 (x0), x2 .6 (x0), x3 .48 (x2)
The classifier's training photos, one per class:
    Golden (.6, 0, 0, 0, .8, 0): x0 .6, x1 .48, x2 .36, x3 0      Granny (0, 0, .8, 0, 0, .6): x2 .64, x3 .48, x0 x1 0
    Milk (0, 0, 0, 0, 0, 1): 0 to every photo
Another enrolled product, milk-2, one photo (0, 0, 0, 1, 0, 0): x3 .8, the others 0.
Under beats_training with a margin of .05: x0 (.8 - .6) and x1 (.8 - .48) are answered as the product; x2 loses to
Granny's training photo (.6 - .64); x3 is nearer milk-2 (.8) than to its own (.48), and milk-2 beats Granny (.8 - .48).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.catalog.feedback import leave_one_out
from pipeline.core.catalog.match import CatalogIndex, CatalogSnapshot
from pipeline.core.catalog.rule import CatalogRule

LABELS = ["Golden", "Granny", "Milk"]
PHOTOS = np.array([[1, 0, 0, 0, 0, 0], [.8, .6, 0, 0, 0, 0], [.6, 0, .8, 0, 0, 0], [0, 0, .6, .8, 0, 0]], np.float32)
PROBABILITIES = np.array([[.6, .3, .1], [.5, .4, .1], [.2, .7, .1], [.1, .2, .7]], np.float32)
POSITIONS = [0, 2, 3, 5]  # the photos' places among the request's photo parts (1 and 4 rejected, say)
GALLERY = CatalogIndex(CatalogSnapshot(0, "m", np.array([[.6, 0, 0, 0, .8, 0], [0, 0, .8, 0, 0, .6], [0, 0, 0, 0, 0, 1]],
                                                        np.float32), ["0", "1", "2"], LABELS))
OTHERS = CatalogIndex(CatalogSnapshot(3, "m", np.array([[0, 0, 0, 1, 0, 0]], np.float32), ["milk-2"], ["Milk 1 l"]))
BEATS_TRAINING = CatalogRule("beats_training", 0.05)
GRANNY_WINS = ("its training photos of 'Granny' are as close (0.64) as this product's other photos (0.60); the "
               "classifier answers 'Granny' (70%). Add photos, or give the product precedence over 'Granny' in this store")


def feedback(rule: CatalogRule = BEATS_TRAINING, photos: slice = slice(None), **options) -> list[dict]:
    return [f.as_json() for f in leave_one_out("pink-1", "Pink Lady", PHOTOS[photos], PROBABILITIES[photos], PHOTOS[photos],
                                               POSITIONS[photos], options.pop("others", OTHERS), GALLERY, LABELS, rule,
                                               0.5, **options)]


def answer(position: int, answered_as: str, label: str | None, sku: str | None, product: float, model: tuple,
           training: tuple, reason: str) -> dict:
    return {"position": position, "answered_as": answered_as, "label": label, "sku": sku, "product_similarity": product,
            "model_label": model[0], "model_confidence": model[1], "training_label": training[0],
            "training_similarity": training[1], "reason": reason}


def test_each_photo_is_answered_as_the_rule_answers_it_asked_without_itself():
    assert feedback() == [
        answer(0, "this_product", "Pink Lady", "pink-1", 0.8, ("Golden", 0.6), ("Golden", 0.6), "answered as this product"),
        answer(2, "this_product", "Pink Lady", "pink-1", 0.8, ("Golden", 0.5), ("Golden", 0.48), "answered as this product"),
        answer(3, "trained_class", "Granny", None, 0.6, ("Granny", 0.7), ("Granny", 0.64), GRANNY_WINS),
        answer(5, "other_product", "Milk 1 l", "milk-2", 0.48, ("Milk", 0.7), ("Granny", 0.48),
               "closer to the enrolled product 'milk-2' (0.80) than to this product's other photos (0.48)"),
    ]


def test_precedence_over_the_class_it_lost_to_makes_that_photo_the_products():
    """With Granny set aside, x2's classifier side is its next class (Golden, .2: unsure) and Golden's training photo
    (.36): .6 - .36 beats the margin. The photo nearer milk-2 is milk-2's still: the precedence is pink-1's only."""
    answers = feedback(set_aside={"Granny"})
    assert answers[2] == answer(3, "this_product", "Pink Lady", "pink-1", 0.6, ("Golden", 0.2), ("Golden", 0.36),
                                "answered as this product")
    assert answers[:2] == feedback()[:2] and answers[3] == feedback()[3]


def test_the_rule_decides_not_the_nearest_product():
    """Another rule, other answers: under `similarity` at .5 every photo whose own product is nearest is the product's
    (x2 too, .6); under beats_training with a margin of .25, x0 (.8 - .6 = .2) goes to the classifier."""
    assert [a["answered_as"] for a in feedback(CatalogRule("similarity", 0.5))] == [
        "this_product", "this_product", "this_product", "other_product"]
    strict = feedback(CatalogRule("beats_training", 0.25))
    assert [a["answered_as"] for a in strict] == ["trained_class", "this_product", "trained_class", "other_product"]
    assert strict[0]["label"] == "Golden" and strict[0]["reason"].startswith("its training photos of 'Golden' are as close (0.60)")


def test_an_unsure_classifier_is_answered_unknown():
    unsure = PROBABILITIES.copy()
    unsure[2] = [.2, .45, .35]
    (third,) = [f.as_json() for f in leave_one_out("pink-1", "Pink Lady", PHOTOS[:3], unsure[:3], PHOTOS[:3], [0, 1, 2], None,
                                                   GALLERY, LABELS, BEATS_TRAINING, 0.5)][2:]
    assert (third["answered_as"], third["label"], third["model_label"], third["model_confidence"]) == ("unknown", None, "Granny", 0.45)
    assert "the classifier is unsure ('Granny', 45%)" in third["reason"]


def test_a_single_photo_has_nothing_to_be_asked_against():
    (alone,) = feedback(photos=slice(2, 3))
    assert alone == answer(3, "alone", None, None, None, ("Granny", 0.7), (None, None),
                           "the product's only photo: enroll two or more to see how its photos will be answered")


def test_photos_added_to_a_product_are_asked_against_its_stored_ones_too():
    """x2 added to a product that holds x0 and x1: its other photos are those two (.6), not asked themselves."""
    added = [f.as_json() for f in leave_one_out("pink-1", "Pink Lady", PHOTOS[2:3], PROBABILITIES[2:3], PHOTOS[2:3], [0],
                                                OTHERS, GALLERY, LABELS, BEATS_TRAINING, 0.5, extra_enrolled=PHOTOS[:2])]
    assert added == [answer(0, "trained_class", "Granny", None, 0.6, ("Granny", 0.7), ("Granny", 0.64), GRANNY_WINS)]
    both = leave_one_out("pink-1", "Pink Lady", PHOTOS[2:4], PROBABILITIES[2:4], PHOTOS[2:4], [0, 1], OTHERS, GALLERY,
                         LABELS, BEATS_TRAINING, 0.5, extra_enrolled=PHOTOS[:2])
    assert [(f.position, f.answered_as, f.product_similarity) for f in both] == [
        (0, "trained_class", pytest.approx(0.6)), (1, "other_product", pytest.approx(0.48))]


def test_without_other_products_the_nearest_is_the_products_own():
    answers = feedback(others=None)
    assert [a["answered_as"] for a in answers] == ["this_product", "this_product", "trained_class", "trained_class"]
    assert answers[3]["label"] == "Milk" and answers[3]["product_similarity"] == 0.48
