"""deployments/api.py and docs.py: the OpenAPI contract and the offline /docs page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ingress_fakes import Service, assert_error, in_process_service

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


def test_openapi_lists_the_endpoints_their_bodies_and_the_error_schema(service):
    schema = service.client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Product recognition"
    paths = schema["paths"]
    assert set(paths) == {"/hello", "/v1/recognize", "/v1/labels", "/healthz", "/readyz"}
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path in ("/hello", "/v1/recognize"):
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "401", "408", "413", "415", "422", "500", "503"} <= set(responses), path
        for status in ("400", "413", "415", "422", "500", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == error_ref, (path, status)
    assert set(paths["/hello"]["post"]["requestBody"]["content"]) == {"multipart/form-data"}
    assert paths["/hello"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["img"]
    assert set(paths["/v1/recognize"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "image/*", "application/octet-stream"}
    recognize_200 = paths["/v1/recognize"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert recognize_200 == {"$ref": "#/components/schemas/Recognition"}
    assert {"ErrorBody", "ErrorDetail", "Recognition", "Product", "HelloAnswer", "Labels", "Health"} <= set(schema["components"]["schemas"])


def test_docs_list_the_endpoints_without_the_internet(service):
    docs = service.client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for endpoint in ("POST /hello", "POST /v1/recognize", "GET /v1/labels", "GET /healthz", "GET /readyz"):
        assert endpoint in docs.text  # in the HTML itself, not in a script fetched from a CDN
    assert 'href="/openapi.json"' in docs.text
    assert_error(service.client.get("/redoc"), 404, "not_found")
