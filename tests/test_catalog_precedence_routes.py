"""PUT /v1/catalog/products/{sku}/precedence in the ingress, in this process as tests/test_catalog_routes.py runs it
(the real Catalog deployment class and SQLite store, stand-in models): closed without the admin key, only the
serving classifier's trained classes (422 `unknown_class`), a malformed body 400, the operator in the history, the
product's precedence shown, and the replicas' copies given it with the next snapshot."""

from __future__ import annotations

import pytest

from deployments.catalog.http_side import ADMIN_KEY_ENV, MAX_PRECEDENCE_BODY_BYTES
from tests.ingress_fakes import BLUE_LABEL, OTHER_LABEL, RED_LABEL, assert_error
from tests.test_catalog_routes import ADMIN, answer_when, catalog_service, enroll, red_photo

ANN = ADMIN | {"X-Operator": "Ann Lee"}


@pytest.fixture
def service(monkeypatch, tmp_path):
    yield from catalog_service(monkeypatch, tmp_path)


def put(service, sku: str, body, headers: dict | None = ANN, **options):
    options = {"json": body} if not options else options
    return service.client.put(f"/v1/catalog/products/{sku}/precedence", headers=headers, **options)


def version(service) -> int:
    return service.client.get("/v1/catalog").json()["version"]


def test_a_precedence_is_set_shown_told_in_the_history_and_cleared(service):
    assert enroll(service, "cola-1", "Cola", [red_photo()]).status_code == 201
    assert service.client.get("/v1/catalog/products/cola-1").json()["precedence"] == []
    response = put(service, "cola-1", {"over": [RED_LABEL, BLUE_LABEL]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["catalog_version"] == 2
    assert body["product"]["sku"] == "cola-1" and body["product"]["precedence"] == sorted([RED_LABEL, BLUE_LABEL])
    assert service.client.get("/v1/catalog/products/cola-1").json()["precedence"] == sorted([RED_LABEL, BLUE_LABEL])
    assert service.client.get("/v1/catalog/products").json()["products"][0]["precedence"] == sorted([RED_LABEL, BLUE_LABEL])
    entry = service.client.get("/v1/catalog/history").json()["versions"][0]
    assert (entry["version"], entry["action"], entry["sku"], entry["operator"], entry["address"]) == (
        2, "precedence", "cola-1", "Ann Lee", "testclient")
    assert entry["change"] == "cola-1 now takes precedence over " + ", ".join(f"'{x}'" for x in sorted([RED_LABEL, BLUE_LABEL]))

    published = service.replica.catalog.replica.snapshot
    again = put(service, "cola-1", {"over": [BLUE_LABEL, RED_LABEL]})  # the same, in another order: nothing written
    assert again.status_code == 200 and again.json()["catalog_version"] == 2 and version(service) == 2
    assert service.replica.catalog.replica.snapshot is published  # nor a snapshot sent to the replicas again

    cleared = put(service, "cola-1", {"over": []}, headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["catalog_version"] == 3 and cleared.json()["product"]["precedence"] == []
    entry = service.client.get("/v1/catalog/history").json()["versions"][0]
    assert entry["operator"] == "admin" and entry["change"].startswith("cola-1 no longer takes precedence over ")


def test_the_replicas_copy_gets_the_precedence_with_the_next_snapshot(service):
    photo = red_photo()
    enroll(service, "cola-1", "Cola", [photo])
    assert put(service, "cola-1", {"over": [RED_LABEL]}).status_code == 200
    answer_when(service, lambda a: a["models"]["catalog"] == 2, photo)
    assert service.replica.catalog_copy.index.snapshot.precedence == {"cola-1": (RED_LABEL,)}
    rolled = service.client.post("/v1/catalog/rollback", json={"version": 1}, headers=ADMIN)
    assert rolled.status_code == 200 and rolled.json()["catalog_version"] == 3
    answer_when(service, lambda a: a["models"]["catalog"] == 3, photo)
    assert service.replica.catalog_copy.index.snapshot.precedence == {}
    assert service.client.get("/v1/catalog/products/cola-1").json()["precedence"] == []


def test_precedence_is_closed_without_the_admin_key_and_forbidden_without_it(service, monkeypatch):
    enroll(service, "cola-1", "Cola", [red_photo()])
    assert_error(put(service, "cola-1", {"over": [RED_LABEL]}, headers=None), 403, "forbidden")
    assert_error(put(service, "cola-1", {"over": [RED_LABEL]}, headers={"X-Admin-Key": "wrong"}), 403, "forbidden")
    monkeypatch.delenv(ADMIN_KEY_ENV)
    assert_error(put(service, "cola-1", {"over": [RED_LABEL]}), 403, "writes_closed")
    assert version(service) == 1


def test_only_the_serving_classifiers_trained_classes_are_taken(service):
    enroll(service, "cola-1", "Cola", [red_photo()])
    response = put(service, "cola-1", {"over": [RED_LABEL, "Cola Zero_can_330ml", RED_LABEL.strip() + "x"]})
    assert_error(response, 422, "unknown_class")
    assert response.json()["unknown"] == sorted(["Cola Zero_can_330ml", RED_LABEL.strip() + "x"])
    assert "GET /v1/labels" in response.json()["error"]["message"]
    assert_error(put(service, "nope-1", {"over": [RED_LABEL]}), 404, "unknown_product")
    assert_error(put(service, "bad sku!", {"over": [RED_LABEL]}), 422, "invalid_product")
    assert version(service) == 1 and service.client.get("/v1/catalog/products/cola-1").json()["precedence"] == []


@pytest.mark.parametrize("options", [
    {"content": b"{not json"}, {"content": b"\xff\xfe"}, {"json": [RED_LABEL]}, {"json": {"over": RED_LABEL}},
    {"json": {"over": [RED_LABEL, 3]}}, {"json": {"over": [RED_LABEL], "also": 1}}, {"json": {}}, {"content": b""}])
def test_a_malformed_body_is_a_400_that_writes_nothing(service, options):
    enroll(service, "cola-1", "Cola", [red_photo()])
    response = put(service, "cola-1", None, **options)
    assert_error(response, 400, "invalid_body")
    assert '{"over": [' in response.json()["error"]["message"] and version(service) == 1


def test_a_body_too_large_or_not_json_is_refused(service):
    enroll(service, "cola-1", "Cola", [red_photo()])
    huge = {"over": [OTHER_LABEL] * (MAX_PRECEDENCE_BODY_BYTES // len(OTHER_LABEL) + 1)}
    assert_error(put(service, "cola-1", huge), 413, "body_too_large")
    assert_error(put(service, "cola-1", None, content=b"over=x", headers=ANN | {"Content-Type": "text/plain"}),
                 415, "unsupported_media_type")
    assert version(service) == 1


def test_the_openapi_schema_documents_the_precedence_route(service):
    route = service.client.get("/openapi.json").json()["paths"]["/v1/catalog/products/{sku}/precedence"]["put"]
    body = route["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["over"] and body["properties"]["over"]["type"] == "array"
    assert {"400", "403", "404", "413", "422", "503"} <= set(route["responses"])
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PrecedenceWrite")
