"""The catalog's HTTP behaviour in the ingress (the Recognizer's /v1/catalog routes, deployments/catalog/calls.py,
catalog/http_side.py, catalog/ingress_copy.py)
with the real Catalog deployment class and its real SQLite store in a temporary folder, in this process; the
Detector and Classifier are tests/ingress_fakes.py's stand-ins (a crop's embedding is its mean colour), so
what is checked is the routes, the admin key, the limits, the store's answers and the replica's copy, not the
models (tests/test_catalog_service.py sends real photos through the real graph)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from grpc import StatusCode
from grpc.aio import AioRpcError, Metadata
from PIL import Image, ImageDraw

from deployments.catalog.deployment import Catalog
from deployments.catalog.http_side import ADMIN_KEY_ENV, MAX_PHOTOS
from tests.ingress_fakes import (
    DEPLOYMENT_GONE,
    RED_LABEL,
    SHIPPED_MODEL_DIR,
    WHITE,
    FakeHandle,
    Service,
    assert_error,
    colour_embedding,
    encode,
    in_process_service,
    shelf_photo,
    use_policy,
)

ADMIN_KEY = "catalog-test-key"
ADMIN = {"X-Admin-Key": ADMIN_KEY}


class InProcessHandle:
    """A DeploymentHandle of a replica object in this process: `handle.method.remote(*args)` awaits the method.
    `down`: every call fails as a gone deployment's does, those in flight too (the replicas' long-polls).
    `answers_lost`: a call (but the ping) runs, and then fails as a gRPC call does when the replica under it is
    killed before it answers."""

    def __init__(self, replica: object) -> None:
        self.replica, self.down, self.answers_lost = replica, False, False

    def __getattr__(self, name: str):
        method = getattr(self.replica, name)
        handle = self

        class Remote:
            @staticmethod
            def remote(*args):
                if handle.down:
                    async def gone():
                        raise DEPLOYMENT_GONE
                    return gone()
                if handle.answers_lost and name != "ready":
                    async def lost():
                        await method(*args)
                        raise AioRpcError(StatusCode.UNAVAILABLE, Metadata(), Metadata(), "Socket closed")
                    return lost()

                async def answered():
                    call = asyncio.ensure_future(method(*args))
                    while not call.done():
                        if handle.down:
                            call.cancel()
                            raise DEPLOYMENT_GONE
                        await asyncio.sleep(0.01)
                    return call.result()
                return answered()

        return Remote


@pytest.fixture
def service(monkeypatch, tmp_path) -> Iterator[Service]:
    yield from catalog_service(monkeypatch, tmp_path)


def catalog_service(monkeypatch, tmp_path) -> Iterator[Service]:
    """An ingress replica with the real Catalog deployment (a store in `tmp_path`), writes open with ADMIN_KEY."""
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN_KEY)

    def catalog(detector: FakeHandle, classifier: FakeHandle) -> InProcessHandle:
        replica = Catalog.func_or_class(detector, classifier, str(SHIPPED_MODEL_DIR), str(tmp_path / "catalog"))
        return InProcessHandle(replica)

    yield from in_process_service(monkeypatch, catalog)


def red_photo(size: int = 900, shade: int = 0) -> bytes:
    """A product photo the fake detector finds (a red rectangle on white), varied a little by `size` and `shade`."""
    image = Image.new("RGB", (size, size), WHITE)
    ImageDraw.Draw(image).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(220 - shade, 30, 30))
    return encode(image, quality=95)


def enroll(service: Service, sku: str, label: str, photos: list[bytes], headers: dict | None = ADMIN,
           **fields: str) -> httpx.Response:
    files = [("photo", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    return service.client.post("/v1/catalog/products", data={"sku": sku, "label": label} | fields, files=files, headers=headers)


def answer_when(service: Service, condition, photo: bytes, timeout_s: float = 3.0) -> dict:
    """The /v1/recognize answer once `condition(answer)` holds (the replica's copy follows the catalog)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = service.recognize(photo).json()
        if condition(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_writes_are_closed_without_an_admin_key_on_the_server(service, monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV)
    assert_error(enroll(service, "cola-1", "Cola", [red_photo()], headers=ADMIN), 403, "writes_closed")
    assert_error(service.client.delete("/v1/catalog/products/cola-1", headers=ADMIN), 403, "writes_closed")
    assert service.client.get("/v1/catalog").status_code == 200  # reads stay open


@pytest.mark.parametrize("headers", [None, {"X-Admin-Key": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_a_write_without_the_right_key_is_forbidden_and_changes_nothing(service, headers):
    assert_error(enroll(service, "cola-1", "Cola", [red_photo()], headers=headers), 403, "forbidden")
    assert service.client.get("/v1/catalog").json()["version"] == 0
    assert service.detector.detect.calls == []  # refused before any photo reached the models


@pytest.mark.parametrize("policy", ["crop", "whole_photo"])
def test_an_enrolled_product_is_answered_by_the_catalog_with_its_sku(service, policy):
    """Under either /hello policy: with a product enrolled, /hello asks the detector again, since the catalog
    matches the largest product's crop."""
    use_policy(service.replica, policy)
    photo = red_photo()
    before = service.recognize(photo).json()
    assert before["products"][0]["label_source"] == "model" and before["models"]["catalog"] == 0
    assert before["products"][0]["label"] == RED_LABEL

    response = enroll(service, "cola-1", "Cola Zero_can_330ml", [red_photo(800), red_photo(1000, shade=10)],
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["catalog_version"] == 1 and [p["index"] for p in body["accepted"]] == [0, 1] and body["rejected"] == []

    after = answer_when(service, lambda a: a["models"]["catalog"] == 1, photo)
    product = after["products"][0]
    assert product["label_source"] == "catalog" and product["sku"] == "cola-1" and product["label"] == "Cola Zero_can_330ml"
    assert product["known"] and product["similarity"] > 0.9  # the crop against its own crop's and whole photo's mean
    assert product["fields"] == {"name": "Cola Zero", "container": "can", "size": "330ml"}
    assert product["candidates"][0]["label"] == RED_LABEL  # the classifier's own candidates stay
    detector_calls = len(service.detector.detect.calls)
    hello = service.hello(photo).json()["item"]
    assert base64.b64decode(hello).decode() == "Cola Zero_can_330ml"
    assert len(service.detector.detect.calls) == detector_calls + 1


def test_a_photo_is_enrolled_cut_as_the_ingress_cuts_queries_under_its_live_settings(service):
    """The crop margin retuned live (reconfigure): the Catalog cuts the enrolled photo's product with the ingress's
    margin, pixel for pixel as a query's, and stores the unit mean of that crop's embedding and the whole photo's
    (Recognized.enrolled_vector). Cut with another margin, the crop would hold another share of the white shelf."""
    settings = dataclasses.asdict(service.replica.photo_to_answer.settings)
    service.replica.reconfigure(settings | {"crop_margin": 0.0})
    photo = red_photo()
    before = len(service.classifier.classify.calls)
    assert enroll(service, "cola-1", "Cola", [photo]).status_code == 201
    (enrolled_crop, whole), = service.classifier.classify.calls[before]  # the largest product, then the whole photo
    product = answer_when(service, lambda a: a["models"]["catalog"] == 1, photo)["products"][0]
    (query_crop,), = service.classifier.classify.calls[-1]
    assert np.array_equal(query_crop, enrolled_crop) and whole.shape == query_crop.shape
    mean = colour_embedding(enrolled_crop) + colour_embedding(whole)
    assert product["sku"] == "cola-1"
    assert product["similarity"] == pytest.approx(float(colour_embedding(query_crop) @ mean / np.linalg.norm(mean)), abs=1e-4)
    assert product["similarity"] < 0.999  # the whole photo's white shelf is in the enrolled vector


def test_the_catalog_is_listed_read_and_its_photos_served(service):
    enroll(service, "b-2", "Beta", [red_photo()])
    enroll(service, "a-1", "Alpha", [shelf_photo(red=None)])  # a blue product
    info = service.client.get("/v1/catalog").json()
    assert info["version"] == 2 and info["products"] == 2 and info["photos"] == 2 and info["matchable_photos"] == 2
    page = service.client.get("/v1/catalog/products", params={"limit": 1}).json()
    assert page["total"] == 2 and [p["sku"] for p in page["products"]] == ["a-1"]
    assert service.client.get("/v1/catalog/products", params={"offset": 1}).json()["products"][0]["sku"] == "b-2"
    product = service.client.get("/v1/catalog/products/b-2").json()
    assert product["label"] == "Beta" and product["photos"] == 1 and len(product["photo_ids"]) == 1
    photo = service.client.get(f"/v1/catalog/products/b-2/photos/{product['photo_ids'][0]}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["x-content-type-options"] == "nosniff" and photo.content == red_photo()
    assert_error(service.client.get(f"/v1/catalog/products/a-1/photos/{product['photo_ids'][0]}"), 404, "unknown_photo")
    assert_error(service.client.get("/v1/catalog/products/nope"), 404, "unknown_product")
    assert_error(service.client.get("/v1/catalog/products", params={"limit": 1000}), 422, "invalid_request")


def test_each_photo_is_accepted_or_rejected_with_its_reason(service):
    blank = encode(Image.new("RGB", (600, 600), WHITE))
    response = enroll(service, "cola-1", "Cola", [b"not an image", red_photo(), blank])
    assert response.status_code == 201, response.text
    body = response.json()
    assert [p["index"] for p in body["accepted"]] == [1]
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(0, "unreadable"), (2, "no_product")]


def test_no_photo_accepted_is_a_422_that_lists_every_rejection_and_writes_nothing(service):
    response = enroll(service, "cola-1", "Cola", [b"junk", encode(Image.new("RGB", (600, 600), WHITE))])
    assert_error(response, 422, "no_photo_accepted")
    assert [r["reason"] for r in response.json()["rejected"]] == ["unreadable", "no_product"]
    assert service.client.get("/v1/catalog").json()["version"] == 0


def test_a_near_duplicate_of_another_skus_photo_is_rejected_naming_it(service):
    assert enroll(service, "cola-1", "Cola", [red_photo()]).status_code == 201
    response = enroll(service, "cola-2", "Cola again", [red_photo()])
    assert_error(response, 422, "no_photo_accepted")
    rejected = response.json()["rejected"][0]
    assert rejected["reason"] == "duplicate_of_other_sku" and rejected["similar_sku"] == "cola-1" and rejected["similarity"] > 0.97
    # the same sku may be enrolled again with the same photo, replacing it when the form says so
    again = enroll(service, "cola-1", "Cola renamed", [red_photo()], replace="true")
    assert again.status_code == 201 and again.json()["catalog_version"] == 2
    assert service.client.get("/v1/catalog/products/cola-1").json()["label"] == "Cola renamed"


def test_limits_are_refused_with_clear_codes(service):
    assert_error(enroll(service, "cola-1", "Cola", [red_photo(300)] * (MAX_PHOTOS + 1)), 413, "too_many_photos")
    huge = b"\xff\xd8\xff" + b"0" * (10 * 1024 * 1024 + 1)
    response = enroll(service, "cola-1", "Cola", [huge, red_photo()])
    assert response.status_code == 201, response.text
    assert [(r["index"], r["reason"]) for r in response.json()["rejected"]] == [(0, "too_large")]
    assert [p["index"] for p in response.json()["accepted"]] == [1]  # indexes count every photo part, sent or not
    assert_error(enroll(service, "bad sku!", "Cola", [red_photo()]), 422, "invalid_product")
    assert_error(service.client.post("/v1/catalog/products", data={"sku": "x"}, files=[("photo", ("a.jpg", red_photo(), "image/jpeg"))],
                                     headers=ADMIN), 400, "missing_field")
    assert_error(service.client.post("/v1/catalog/products", content=red_photo(), headers=ADMIN | {"content-type": "image/jpeg"}),
                 415, "unsupported_media_type")


def test_delete_add_photos_and_rollback_make_new_versions_the_replicas_follow(service):
    photo = red_photo()
    enroll(service, "cola-1", "Cola", [photo])
    added = service.client.post("/v1/catalog/products/cola-1/photos", files=[("photo", ("b.jpg", red_photo(1200, 20), "image/jpeg"))],
                                headers=ADMIN)
    assert added.status_code == 200 and added.json()["catalog_version"] == 2
    assert service.client.get("/v1/catalog/products/cola-1").json()["photos"] == 2
    deleted = service.client.delete("/v1/catalog/products/cola-1", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json() == {"catalog_version": 3, "sku": "cola-1", "restored": None,
                                                           "removed_photo": None}
    assert_error(service.client.delete("/v1/catalog/products/cola-1", headers=ADMIN), 404, "unknown_product")
    gone = answer_when(service, lambda a: a["models"]["catalog"] == 3, photo)
    assert gone["products"][0]["label_source"] == "model"
    rolled = service.client.post("/v1/catalog/rollback", json={"version": 2}, headers=ADMIN)
    assert rolled.status_code == 200 and rolled.json()["catalog_version"] == 4 and rolled.json()["restored"] == 2
    back = answer_when(service, lambda a: a["models"]["catalog"] == 4, photo)
    assert back["products"][0]["sku"] == "cola-1"
    assert_error(service.client.post("/v1/catalog/rollback", json={"version": 99}, headers=ADMIN), 422, "unknown_version")


def test_with_the_catalog_down_writes_answer_503_and_recognition_goes_on_from_the_copy(service):
    photo = red_photo()
    enroll(service, "cola-1", "Cola", [photo])
    assert answer_when(service, lambda a: a["models"]["catalog"] == 1, photo)["products"][0]["sku"] == "cola-1"
    service.replica.catalog.down = True
    time.sleep(0.1)  # the replica's long-poll, in flight, fails (0.01 s) and is asked again after RETRY_S[0], 0.2 s
    response = enroll(service, "cola-2", "Cola 2", [shelf_photo(red=None)])
    assert_error(response, 503, "catalog_unavailable")
    assert response.headers["retry-after"] == "1" and response.json()["applied"] is False
    assert_error(service.client.get("/v1/catalog"), 503, "catalog_unavailable")
    still = service.recognize(photo)
    assert still.status_code == 200 and still.json()["products"][0]["sku"] == "cola-1"
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["detail"]["catalog"].startswith("unavailable")
    service.replica.catalog.down = False
    assert enroll(service, "cola-2", "Cola 2", [shelf_photo(red=None)]).status_code == 201
    # and the replica's copy, whose long-poll failed while the Catalog was down, follows it again
    assert answer_when(service, lambda a: a["models"]["catalog"] == 2, photo)["models"]["catalog"] == 2
    assert service.client.get("/readyz").json()["detail"]["catalog"] == "catalog version 2; this replica matches with version 2"


def test_the_replicas_copy_ignores_a_snapshot_of_another_model(service):
    """A good copy (a product enrolled, matched) is kept when a snapshot of another classifier arrives."""
    from pipeline.core.catalog.match import CatalogSnapshot

    photo = red_photo()
    enroll(service, "cola-1", "Cola", [photo])
    assert answer_when(service, lambda a: a["models"]["catalog"] == 1, photo)["products"][0]["sku"] == "cola-1"
    copy = service.replica.catalog_copy
    good = copy.index
    assert good is not None and not good.empty
    foreign = CatalogSnapshot(7, "another-classifier", np.eye(3, dtype=np.float32), ["a", "b", "c"], ["A", "B", "C"])
    copy.use(foreign)
    assert copy.index is good and copy.version == 7
    assert service.recognize(photo).json()["products"][0]["sku"] == "cola-1"


def test_hello_asks_no_detector_while_no_product_is_enrolled_with_the_catalog_deployed(service):
    """/hello's whole-photo shortcut (the whole photo alone, no detector) holds whenever the catalog names nothing:
    before the replica's copy has a first snapshot (the Catalog down from the start), at version 0, and once a
    delete has emptied the catalog again; with a product enrolled, the detector is asked."""
    use_policy(service.replica, "whole_photo")
    photo = red_photo()

    def detector_calls_for_hello() -> int:
        calls = len(service.detector.detect.calls)
        assert service.hello(photo).status_code == 200
        return len(service.detector.detect.calls) - calls

    service.replica.catalog.down = True
    assert detector_calls_for_hello() == 0 and service.replica.catalog_copy.index is None  # no snapshot yet
    service.replica.catalog.down = False
    assert answer_when(service, lambda a: a["models"]["catalog"] == 0, photo)["models"]["catalog"] == 0
    assert detector_calls_for_hello() == 0  # version 0: nothing enrolled
    enroll(service, "cola-1", "Cola", [photo])
    assert answer_when(service, lambda a: a["models"]["catalog"] == 1, photo)["products"][0]["sku"] == "cola-1"
    assert detector_calls_for_hello() == 1
    assert service.client.delete("/v1/catalog/products/cola-1", headers=ADMIN).status_code == 200
    assert answer_when(service, lambda a: a["models"]["catalog"] == 2, photo)["products"][0]["label_source"] == "model"
    assert detector_calls_for_hello() == 0  # emptied by the delete


def test_the_openapi_schema_documents_the_catalog(service):
    paths = service.client.get("/openapi.json").json()["paths"]
    assert {"/v1/catalog", "/v1/catalog/products", "/v1/catalog/products/{sku}", "/v1/catalog/products/{sku}/photos",
            "/v1/catalog/products/{sku}/photos/{photo_id}", "/v1/catalog/rollback"} <= set(paths)
    enroll_body = paths["/v1/catalog/products"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert enroll_body["required"] == ["sku", "label", "photo"] and enroll_body["properties"]["photo"]["maxItems"] == MAX_PHOTOS
    assert "403" in paths["/v1/catalog/products"]["post"]["responses"]



def test_a_catalog_of_another_classifier_is_re_embedded_by_the_serving_one(monkeypatch, tmp_path):
    """Photos enrolled under an older classifier are embedded again, in the background after start, by the one
    that serves; until then they are not matched (never two models' embeddings in one search)."""
    from pipeline.core.catalog.match import StoredPhoto
    from pipeline.core.catalog.store import CatalogStore

    old = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    with CatalogStore(tmp_path / "catalog") as store:
        store.enroll("old-1", "Old cola", [StoredPhoto(red_photo(), "image/jpeg", old / np.linalg.norm(old))], "classifier-old", "test")
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN_KEY)

    def catalog(detector: FakeHandle, classifier: FakeHandle) -> InProcessHandle:
        return InProcessHandle(Catalog.func_or_class(detector, classifier, str(SHIPPED_MODEL_DIR), str(tmp_path / "catalog")))

    services = in_process_service(monkeypatch, catalog)
    service = next(services)
    try:
        answer = answer_when(service, lambda a: a["products"][0]["sku"] == "old-1", red_photo(), timeout_s=10)
        assert answer["products"][0]["label_source"] == "catalog" and answer["products"][0]["label"] == "Old cola"
        info = service.client.get("/v1/catalog").json()
        assert info["photos_needing_embedding"] == 0 and info["matchable_photos"] == 1
        assert info["version"] == 2  # the enrollment, then the switch to the serving classifier
    finally:
        services.close()


def test_with_the_api_key_on_too_a_write_carries_both_keys(service, monkeypatch):
    from deployments.auth import API_KEY_ENV

    monkeypatch.setenv(API_KEY_ENV, "api-key")
    assert_error(enroll(service, "cola-1", "Cola", [red_photo()]), 401, "unauthorized")  # the admin key alone
    both = enroll(service, "cola-1", "Cola", [red_photo()], headers={"X-API-Key": "api-key", "Authorization": f"Bearer {ADMIN_KEY}"})
    assert both.status_code == 201, both.text
    assert_error(enroll(service, "cola-2", "Cola", [red_photo(700)], headers={"X-API-Key": "api-key"}), 403, "forbidden")


def test_a_write_whose_answer_is_lost_answers_503_applied_unknown_and_the_client_can_read_which(service):
    """The Catalog commits the write and is killed before it answers: the ingress cannot know the outcome, so it
    says so ("applied": "unknown", not a 503 that would read as "not written"), and a read tells the client which."""
    service.replica.catalog.answers_lost = True
    response = enroll(service, "cola-1", "Cola", [red_photo()])
    assert_error(response, 503, "catalog_unavailable")
    assert response.json()["applied"] == "unknown" and "GET /v1/catalog/products/" in response.json()["error"]["message"]
    deleted = service.client.delete("/v1/catalog/products/nothing-1", headers=ADMIN)
    assert_error(deleted, 503, "catalog_unavailable")  # the Catalog's own 404 lost with its answer, too
    service.replica.catalog.answers_lost = False
    stored = service.client.get("/v1/catalog/products/cola-1")
    assert stored.status_code == 200 and stored.json()["photos"] == 1  # it was applied: whole
    assert service.client.get("/v1/catalog").json()["version"] == 1  # the delete was refused: no version
