"""The catalog operator's routes in the ingress, in this process as tests/test_catalog_routes.py runs them (the real
Catalog deployment class and SQLite store, stand-in models): the history (GET /v1/catalog/history), the removal
of one photo, re-enrollment that asks before replacing, and the operator's name in the audit. Every write closed
without the admin key, atomic (a refused one makes no version) and audited."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deployments.auth import API_KEY_ENV
from deployments.catalog.http_side import ADMIN_KEY_ENV
from tests.ingress_fakes import assert_error, shelf_photo
from tests.test_catalog_routes import ADMIN, catalog_service, enroll, red_photo


@pytest.fixture
def service(monkeypatch, tmp_path):
    yield from catalog_service(monkeypatch, tmp_path)


def photo_ids(service, sku: str) -> list[int]:
    return service.client.get(f"/v1/catalog/products/{sku}").json()["photo_ids"]


def version(service) -> int:
    return service.client.get("/v1/catalog").json()["version"]


def test_the_history_tells_each_write_newest_first_a_page_at_a_time(service):
    ann = ADMIN | {"X-Operator": "Ann Lee"}
    assert enroll(service, "cola-1", "Cola", [red_photo(800), red_photo(1000, shade=10)], headers=ann).status_code == 201
    first, second = photo_ids(service, "cola-1")
    added = service.client.post("/v1/catalog/products/cola-1/photos", headers=ADMIN,
                                files=[("photo", ("c.jpg", red_photo(1200, 20), "image/jpeg"))])
    assert added.status_code == 200
    assert service.client.delete(f"/v1/catalog/products/cola-1/photos/{first}", headers=ann).status_code == 200
    assert enroll(service, "cola-1", "Cola light", [red_photo(700, 5)], replace="true", headers=ann).status_code == 201
    assert service.client.delete("/v1/catalog/products/cola-1", headers=ann).status_code == 200
    assert service.client.post("/v1/catalog/rollback", json={"version": 3}, headers=ann).status_code == 200

    page = service.client.get("/v1/catalog/history", params={"limit": 4}).json()
    assert (page["total"], page["offset"], page["limit"]) == (6, 0, 4)
    assert [(v["version"], v["action"], v["sku"]) for v in page["versions"]] == [
        (6, "rollback", None), (5, "delete", "cola-1"), (4, "replace", "cola-1"), (3, "remove_photo", "cola-1")]
    rest = service.client.get("/v1/catalog/history", params={"offset": 4, "limit": 4}).json()
    assert [(v["version"], v["action"]) for v in rest["versions"]] == [(2, "add_photos"), (1, "enroll")]
    rollback, delete, replace, removal = page["versions"]
    enrolled, adding = rest["versions"][1], rest["versions"][0]
    assert rollback["to_version"] == 3 and rollback["change"] == "rolled back to version 3: cola-1 back"
    assert delete["change"] == "deleted cola-1 (1 photo)" and delete["removed_photo_ids"] == replace["added_photo_ids"]
    assert photo_ids(service, "cola-1") == [second, *adding["added_photo_ids"]]  # as of version 3, current again
    assert replace["change"] == "replaced cola-1's 2 photos with 1 (Cola light)" and replace["label"] == "Cola light"
    assert removal["change"] == f"removed photo {first} of cola-1" and removal["removed_photo_ids"] == [first]
    assert adding["change"] == "added 1 photo to cola-1" and adding["operator"] == "admin"  # no X-Operator sent
    assert enrolled["change"] == "enrolled cola-1 (Cola) with 2 photos" and enrolled["added_photo_ids"] == [first, second]
    for entry in page["versions"] + [enrolled]:
        assert (entry["operator"], entry["address"]) == ("Ann Lee", "testclient")  # TestClient's client address
        assert datetime.fromisoformat(entry["time"]).utcoffset() == UTC.utcoffset(None)
        assert abs((datetime.now(UTC) - datetime.fromisoformat(entry["time"])).total_seconds()) < 60
    assert_error(service.client.get("/v1/catalog/history", params={"limit": 500}), 422, "invalid_request")


def test_the_history_is_read_as_other_reads_are(service, monkeypatch):
    """No admin key (reads are open); the API key when the service asks for one, as GET /v1/catalog."""
    assert service.client.get("/v1/catalog/history").json() == {"total": 0, "offset": 0, "limit": 50, "versions": []}
    monkeypatch.setenv(API_KEY_ENV, "api-key")
    assert_error(service.client.get("/v1/catalog/history"), 401, "unauthorized")
    assert service.client.get("/v1/catalog/history", headers={"X-API-Key": "api-key"}).status_code == 200


def test_one_photo_is_removed_but_never_the_last(service, monkeypatch):
    enroll(service, "cola-1", "Cola", [red_photo(800), red_photo(1000, shade=10)])
    first, second = photo_ids(service, "cola-1")
    assert_error(service.client.delete(f"/v1/catalog/products/cola-1/photos/{first}"), 403, "forbidden")
    with monkeypatch.context() as closed:
        closed.delenv(ADMIN_KEY_ENV)
        assert_error(service.client.delete(f"/v1/catalog/products/cola-1/photos/{first}", headers=ADMIN), 403, "writes_closed")
    removed = service.client.delete(f"/v1/catalog/products/cola-1/photos/{first}", headers=ADMIN)
    assert removed.status_code == 200 and removed.json() == {"catalog_version": 2, "sku": "cola-1", "restored": None,
                                                             "removed_photo": first}
    assert photo_ids(service, "cola-1") == [second]
    assert_error(service.client.get(f"/v1/catalog/products/cola-1/photos/{first}"), 404, "unknown_photo")
    last = service.client.delete(f"/v1/catalog/products/cola-1/photos/{second}", headers=ADMIN)
    assert_error(last, 409, "last_photo")
    assert "delete the product instead" in last.json()["error"]["message"]
    assert_error(service.client.delete(f"/v1/catalog/products/cola-1/photos/{first}", headers=ADMIN), 404, "unknown_photo")
    assert_error(service.client.delete("/v1/catalog/products/nope/photos/1", headers=ADMIN), 404, "unknown_product")
    assert photo_ids(service, "cola-1") == [second] and version(service) == 2  # refused writes make no version


def test_re_enrolling_a_sku_asks_for_replace_before_any_photo_is_embedded(service):
    assert enroll(service, "cola-1", "Cola", [red_photo()]).status_code == 201
    kept, calls = photo_ids(service, "cola-1"), len(service.detector.detect.calls)
    again = enroll(service, "cola-1", "Cola renamed", [red_photo(700, 5)])
    assert_error(again, 409, "sku_exists")
    assert "replace=true" in again.json()["error"]["message"]
    assert len(service.detector.detect.calls) == calls  # refused before the models were asked
    assert_error(enroll(service, "cola-1", "Cola renamed", [red_photo(700, 5)], replace="maybe"), 400, "invalid_field")
    assert_error(enroll(service, "cola-1", "Cola renamed", [red_photo(700, 5)], replace="true", headers=None), 403, "forbidden")
    assert photo_ids(service, "cola-1") == kept and version(service) == 1
    replaced = enroll(service, "cola-1", "Cola renamed", [red_photo(700, 5)], replace="true")
    assert replaced.status_code == 201 and replaced.json()["catalog_version"] == 2
    product = service.client.get("/v1/catalog/products/cola-1").json()
    assert product["label"] == "Cola renamed" and product["photo_ids"] != kept
    assert enroll(service, "blue-1", "Blue", [shelf_photo(red=None)], replace="true").status_code == 201  # a new sku: enrolled


@pytest.mark.parametrize("name", ["a" * 65, "ann@evil", "<script>", " ", "ann\tlee"])
def test_an_operator_name_out_of_bounds_is_refused_and_writes_nothing(service, name):
    response = enroll(service, "cola-1", "Cola", [red_photo()], headers=ADMIN | {"X-Operator": name})
    if name.strip():
        assert_error(response, 400, "invalid_operator")
        assert version(service) == 0
    else:  # blank: as if not sent
        assert response.status_code == 201
        assert service.client.get("/v1/catalog/history").json()["versions"][0]["operator"] == "admin"


def test_the_operator_lands_in_the_stores_audit_with_the_address(service):
    assert enroll(service, "cola-1", "Cola", [red_photo()], headers=ADMIN | {"X-Operator": "O'Brien-2.night shift"}).status_code == 201
    store = service.replica.catalog.replica.store
    total, (entry,) = store.history(0, 1)
    assert total == 1 and entry.actor == "O'Brien-2.night shift@testclient" and entry.action == "enroll"


def test_the_openapi_schema_documents_the_operators_routes(service):
    paths = service.client.get("/openapi.json").json()["paths"]
    history = paths["/v1/catalog/history"]["get"]
    assert {p["name"] for p in history["parameters"]} == {"offset", "limit"}
    assert history["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/CatalogHistory")
    removal = paths["/v1/catalog/products/{sku}/photos/{photo_id}"]["delete"]
    assert {"403", "404", "409"} <= set(removal["responses"])
    enroll_body = paths["/v1/catalog/products"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert enroll_body["properties"]["replace"]["enum"] == ["true", "false"]
    assert "409" in paths["/v1/catalog/products"]["post"]["responses"]


def test_the_page_and_its_scripts_are_served_from_the_service(service):
    page = service.client.get("/ui")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("page.js", "changes.js"):
        assert f'<script src="ui/{name}"></script>' in page.text
        script = service.client.get(f"/ui/{name}")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert script.headers["x-content-type-options"] == "nosniff" and '"use strict";' in script.text
    assert_error(service.client.get("/ui/other.js"), 404, "not_found")


def test_a_rollbacks_change_names_the_skus_it_brought_back_as_they_were_and_took_out():
    from pipeline.core.catalog.history import change

    assert (change("rollback", None, {"to_version": 2, "restored": ["a", "b"], "removed": ["a", "c"]})
            == "rolled back to version 2: a as then; b back; c taken out")
    many = {"to_version": 1, "restored": [f"s{i}" for i in range(7)], "removed": []}
    assert change("rollback", None, many) == "rolled back to version 1: s0, s1, s2, s3, s4 and 2 more back"
