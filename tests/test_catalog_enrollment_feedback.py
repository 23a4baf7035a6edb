"""The enrollment's feedback and the operator's precedence through the ingress, in this process as
tests/test_catalog_routes.py runs it (the real Catalog deployment class and SQLite store, stand-in models whose
embedding of a crop is its mean colour): each accepted photo told as the service will answer it, asked as
recognition asks it; a training photo of a trained class that wins, until the product is given precedence over that
class, which changes the served answer, and clearing it changes it back; and a feedback that cannot be computed
never fails the enrollment."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.catalog.match import CatalogIndex, CatalogSnapshot
from tests.ingress_fakes import BLUE, BLUE_LABEL, OTHER_LABEL, RED_LABEL, colour_embedding, shelf_photo, use_policy
from tests.test_catalog_routes import ADMIN, answer_when, catalog_service, enroll, red_photo


@pytest.fixture
def service(monkeypatch, tmp_path):
    yield from catalog_service(monkeypatch, tmp_path)


def catalog_replica(service):
    return service.replica.catalog.replica


def test_each_accepted_photo_is_told_by_its_place_in_the_request(service):
    response = enroll(service, "cola-1", "Cola", [b"junk", red_photo(800), red_photo(1000, shade=10)])
    assert response.status_code == 201, response.text
    body = response.json()
    assert [(f["position"], f["answered_as"], f["sku"]) for f in body["feedback"]] == [(1, "this_product", "cola-1"),
                                                                                        (2, "this_product", "cola-1")]
    assert body["answered_as_product"] == {"photos": 2, "of": 2} and body["feedback_unavailable"] is None
    assert all(f["product_similarity"] > 0.99 and f["reason"] == "answered as this product" for f in body["feedback"])

    alone = enroll(service, "blue-1", "Blue", [shelf_photo(red=None)]).json()
    assert [f["answered_as"] for f in alone["feedback"]] == ["alone"] and alone["answered_as_product"] == {"photos": 0, "of": 0}
    assert alone["feedback"][0]["reason"].startswith("the product's only photo")


def test_a_photo_added_is_told_what_recognition_answers_for_it_against_the_stored_ones(service):
    """A small product (4% of the photo): its crop is red (the stand-in classifier's RED_LABEL, 0.9), its whole photo
    white (OTHER_LABEL, 0.3). Under the whole-photo /hello policy, recognition answers the product with the whole
    photo's row: the feedback must tell that row (not the crop's, nor the enrollment pass's average of both), and the
    similarity recognition finds against the photo already stored."""
    use_policy(service.replica, "whole_photo")  # the ingress as the shipped manifest says (the Catalog reads it too)
    first, second = (shelf_photo(size, red=box, blue=None) for size, box in (((1500, 2000), (600, 800, 900, 1200)),
                                                                           ((1600, 2100), (620, 800, 930, 1220))))
    assert enroll(service, "cola-1", "Cola", [first]).status_code == 201
    served = answer_when(service, lambda a: a["models"]["catalog"] == 1, second)["products"][0]
    assert served["candidates"][0]["label"] == OTHER_LABEL and served["sku"] == "cola-1"

    added = service.client.post("/v1/catalog/products/cola-1/photos", headers=ADMIN,
                                files=[("photo", ("b.jpg", second, "image/jpeg"))])
    assert added.status_code == 200, added.text
    (told,) = added.json()["feedback"]
    assert told["position"] == 0 and told["answered_as"] != "alone"  # asked against the stored photo
    assert told["product_similarity"] == pytest.approx(served["similarity"], abs=2e-4)
    assert (told["model_label"], told["model_confidence"]) == (OTHER_LABEL, pytest.approx(served["candidates"][0]["confidence"], abs=1e-4))
    assert told["answered_as"] == ("this_product" if served["label_source"] == "catalog" else "unknown")


def red_training_photo(service) -> np.ndarray:
    """The crop recognition cuts of red_photo(): as if the classifier had been trained on exactly it."""
    calls = len(service.classifier.classify.calls)
    assert service.recognize(red_photo()).status_code == 200
    (crop,) = service.classifier.classify.calls[calls][0]
    return colour_embedding(crop)


def with_gallery(service, red: np.ndarray) -> None:
    """The classifier's gallery, in the ingress and the Catalog: RED_LABEL's training photo `red`, BLUE_LABEL's blue."""
    blue = colour_embedding(np.full((224, 224, 3), BLUE, np.uint8))
    gallery = CatalogIndex(CatalogSnapshot(0, "gallery", np.stack([red, blue]).astype(np.float32), ["0", "1"],
                                           [RED_LABEL, BLUE_LABEL]))
    service.replica.gallery = catalog_replica(service).gallery = gallery


def test_precedence_over_the_class_a_photo_lost_to_changes_the_feedback_and_the_served_answer(service):
    assert service.replica.bundle.catalog_rule.policy == "beats_training"  # the shipped rule: it weighs the gallery
    with_gallery(service, red_training_photo(service))
    photos = [red_photo(800), red_photo(1000, shade=10)]
    body = enroll(service, "pink-1", "Pink Lady", photos).json()
    assert body["answered_as_product"] == {"photos": 0, "of": 2}
    for told in body["feedback"]:
        assert (told["answered_as"], told["label"], told["training_label"]) == ("trained_class", RED_LABEL, RED_LABEL)
        assert told["training_similarity"] > told["product_similarity"] > 0.98
        assert f"give the product precedence over '{RED_LABEL}'" in told["reason"]
    served = answer_when(service, lambda a: a["models"]["catalog"] == 1, red_photo())["products"][0]
    assert (served["label_source"], served["label"]) == ("model", RED_LABEL)

    put = service.client.put("/v1/catalog/products/pink-1/precedence", json={"over": [RED_LABEL]}, headers=ADMIN)
    assert put.status_code == 200 and put.json()["catalog_version"] == 2
    served = answer_when(service, lambda a: a["models"]["catalog"] == 2, red_photo())["products"][0]
    assert (served["label_source"], served["sku"], served["label"]) == ("catalog", "pink-1", "Pink Lady")
    other = service.recognize(shelf_photo(red=None)).json()["products"][0]  # a blue product: not pink-1's, untouched
    assert (other["label_source"], other["label"]) == ("model", BLUE_LABEL)

    again = enroll(service, "pink-1", "Pink Lady", photos, replace="true").json()  # a replacement keeps the precedence
    assert again["answered_as_product"] == {"photos": 2, "of": 2}
    assert service.client.get("/v1/catalog/products/pink-1").json()["precedence"] == [RED_LABEL]

    cleared = service.client.put("/v1/catalog/products/pink-1/precedence", json={"over": []}, headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["catalog_version"] == 4
    served = answer_when(service, lambda a: a["models"]["catalog"] == 4, red_photo())["products"][0]
    assert (served["label_source"], served["label"]) == ("model", RED_LABEL)


def test_precedence_sets_aside_its_classes_only_a_look_alike_of_another_class_still_wins(service):
    """Once a product takes precedence, recognition weighs the nearest training photo of each of several classes:
    here BLUE_LABEL has a training photo where RED_LABEL's is, so with RED_LABEL set aside that one still lies as close
    as the product's photos, and the classifier keeps the answer (had recognition asked for the nearest class alone,
    nothing would be left to compare with and the catalog would answer)."""
    red = red_training_photo(service)
    blue = colour_embedding(np.full((224, 224, 3), BLUE, np.uint8))
    gallery = CatalogIndex(CatalogSnapshot(0, "gallery", np.stack([red, red, blue]).astype(np.float32), ["0", "1", "1"],
                                           [RED_LABEL, BLUE_LABEL, BLUE_LABEL]))
    service.replica.gallery = catalog_replica(service).gallery = gallery
    assert enroll(service, "pink-1", "Pink Lady", [red_photo(800), red_photo(1000, shade=10)]).status_code == 201
    put = service.client.put("/v1/catalog/products/pink-1/precedence", json={"over": [RED_LABEL]}, headers=ADMIN)
    assert put.status_code == 200 and put.json()["catalog_version"] == 2
    served = answer_when(service, lambda a: a["models"]["catalog"] == 2, red_photo())["products"][0]
    assert served["label_source"] == "model" and served["sku"] is None


def test_feedback_that_cannot_be_computed_never_fails_the_enrollment(service, monkeypatch):
    gallery, catalog_replica(service).gallery = catalog_replica(service).gallery, None  # the shipped rule needs it
    body = enroll(service, "cola-1", "Cola", [red_photo(800), red_photo(1000, shade=10)]).json()
    assert body["catalog_version"] == 1 and len(body["accepted"]) == 2
    assert body["feedback"] is None and body["answered_as_product"] is None
    assert "compares with the classifier's gallery" in body["feedback_unavailable"]

    catalog_replica(service).gallery = gallery

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("deployments.catalog.enrollment_feedback.leave_one_out", broken)
    added = service.client.post("/v1/catalog/products/cola-1/photos", headers=ADMIN,
                                files=[("photo", ("c.jpg", red_photo(1200, 20), "image/jpeg"))])
    assert added.status_code == 200 and added.json()["catalog_version"] == 2 and added.json()["feedback"] is None
    assert added.json()["feedback_unavailable"] == "the feedback could not be computed (RuntimeError); the photos are enrolled"
    assert service.client.get("/v1/catalog/products/cola-1").json()["photos"] == 3
