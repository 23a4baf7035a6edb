"""deployments/api.py and docs.py: the OpenAPI contract and the offline /docs page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jsonschema import Draft202012Validator

from deployments.uploads import MAX_IMAGE_BYTES
from tests.ingress_fakes import Service, assert_error, in_process_service, jpeg, multipart

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


def test_openapi_lists_the_endpoints_their_bodies_and_the_error_schema(service):
    schema = service.client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Product recognition"
    paths = schema["paths"]
    assert set(paths) == {"/hello", "/v1/recognize", "/v1/labels", "/healthz", "/readyz", "/v1/catalog", "/v1/catalog/products",
                          "/v1/catalog/products/{sku}", "/v1/catalog/products/{sku}/photos",
                          "/v1/catalog/products/{sku}/photos/{photo_id}", "/v1/catalog/products/{sku}/precedence",
                          "/v1/catalog/rollback", "/v1/catalog/history"}
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


PHOTO = jpeg(64, 48)
BODIES = {  # a request body a client could send: (path, its media type, the multipart parts or the raw body)
    "hello img": ("/hello", "multipart/form-data", {"img": PHOTO}),
    "hello img and another part": ("/hello", "multipart/form-data", {"img": PHOTO, "note": b"shelf 3"}),
    "hello no part": ("/hello", "multipart/form-data", {}),
    "hello image part": ("/hello", "multipart/form-data", {"image": PHOTO}),
    "hello empty img": ("/hello", "multipart/form-data", {"img": b""}),
    "recognize image": ("/v1/recognize", "multipart/form-data", {"image": PHOTO}),
    "recognize img": ("/v1/recognize", "multipart/form-data", {"img": PHOTO}),
    "recognize no part": ("/v1/recognize", "multipart/form-data", {}),
    "recognize another part": ("/v1/recognize", "multipart/form-data", {"photo": PHOTO}),
    "recognize empty image": ("/v1/recognize", "multipart/form-data", {"image": b""}),
    "recognize raw": ("/v1/recognize", "image/jpeg", PHOTO),
    "recognize raw octets": ("/v1/recognize", "application/octet-stream", PHOTO),
    "recognize empty raw": ("/v1/recognize", "image/jpeg", b""),
    "recognize empty raw octets": ("/v1/recognize", "application/octet-stream", b""),
    "recognize oversized raw": ("/v1/recognize", "image/jpeg", b"\xff" * (MAX_IMAGE_BYTES + 1)),
}


@pytest.mark.parametrize("case", list(BODIES), ids=list(BODIES))
def test_the_openapi_request_bodies_accept_exactly_what_the_service_answers(service, case):
    """A schema-driven client or fuzzer builds its requests from /openapi.json: the body is required, a body the
    schema calls valid is answered, and one the service refuses (no image part, an empty or oversized image) is
    invalid by the schema too. Multipart parts are checked as the object of strings OpenAPI models them as."""
    path, media_type, body = BODIES[case]
    request_body = service.client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]
    assert request_body["required"] is True
    if isinstance(body, dict):
        schema = request_body["content"]["multipart/form-data"]["schema"]
        instance: object = {name: data.decode("latin-1") for name, data in body.items()}  # one character a byte
        response = service.client.post(path, content=multipart(body), headers={"content-type": "multipart/form-data; boundary=xyz"})
    else:
        schema = request_body["content"]["image/*" if media_type.startswith("image/") else media_type]["schema"]
        instance = body.decode("latin-1")
        response = service.client.post(path, content=body, headers={"content-type": media_type})
    assert Draft202012Validator(schema).is_valid(instance) == (response.status_code == 200), response.text


def test_docs_list_the_endpoints_without_the_internet(service):
    docs = service.client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for endpoint in ("POST /hello", "POST /v1/recognize", "GET /v1/labels", "GET /healthz", "GET /readyz"):
        assert endpoint in docs.text  # in the HTML itself, not in a script fetched from a CDN
    assert 'href="/openapi.json"' in docs.text
    assert_error(service.client.get("/redoc"), 404, "not_found")
