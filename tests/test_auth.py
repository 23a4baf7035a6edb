"""deployments/auth.py: the optional API key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployments.auth import API_KEY_ENV
from tests.ingress_fakes import Service, assert_error, in_process_service, jpeg

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


def test_no_api_key_is_asked_by_default(service):
    assert service.hello(jpeg(64, 48)).status_code == 200
    assert service.client.get("/v1/labels").status_code == 200


def test_api_key_when_set(service, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "s3cret-key")
    client = service.client
    files = {"img": ("a.jpg", jpeg(64, 48), "image/jpeg")}
    for method, url in [("POST", "/hello"), ("POST", "/v1/recognize"), ("GET", "/v1/labels"), ("GET", "/docs"),
                        ("GET", "/openapi.json"), ("GET", "/nowhere")]:
        response = client.request(method, url, files=files) if method == "POST" else client.request(method, url)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/labels", headers={"x-api-key": "wrong"}), 401, "unauthorized")
    assert_error(client.get("/v1/labels", headers={"authorization": "Bearer s3cret"}), 401, "unauthorized")
    assert not service.detector.detect.calls  # refused before any route ran

    assert client.post("/hello", files=files, headers={"x-api-key": "s3cret-key"}).status_code == 200
    assert client.post("/v1/recognize", files=files, headers={"authorization": "Bearer s3cret-key"}).status_code == 200
    assert client.get("/docs", headers={"x-api-key": "s3cret-key"}).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"  # probes need no key
    assert client.get("/readyz").json()["status"] == "ok"
