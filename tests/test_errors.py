"""deployments/errors.py: every refusal and failure answers the one JSON error shape with its status and stable
code, and the metrics count the same status and code the client got."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.errors import ServiceError, error_outcome
from deployments.uploads import UploadError
from pipeline.core.preprocessing import ImageError
from tests.ingress_fakes import OVERLOADED, Service, assert_error, encode, failing, in_process_service, shelf_photo
from tests.test_preprocessing import png_header_only

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


# Bad input: a JSON 4xx with a stable code --------------------------------------------------------------------


def noisy_jpeg() -> bytes:
    return encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)))


OVERSIZED = b"\xff\xd8" + b"\0" * (11 * 1024 * 1024)
BAD_REQUESTS = {
    "empty body": (dict(content=b"", headers={"content-type": "image/jpeg"}), 400, "empty_image"),
    "empty part": (dict(files={"image": ("a.jpg", b"", "image/jpeg")}), 400, "empty_image"),
    "missing part": (dict(files={"photo": ("a.jpg", b"\xff\xd8", "image/jpeg")}), 400, "missing_image_part"),
    "broken multipart": (dict(content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"}), 400, "bad_multipart"),
    "oversized body": (dict(content=OVERSIZED, headers={"content-type": "image/jpeg"}), 413, "body_too_large"),
    "oversized part": (dict(files={"image": ("a.jpg", OVERSIZED, "image/jpeg")}), 413, "body_too_large"),
    "decompression bomb": (dict(files={"image": ("b.png", png_header_only(60_000, 60_000), "image/png")}), 413, "too_many_pixels"),
    "too many pixels raw": (dict(content=png_header_only(60_000, 60_000), headers={"content-type": "image/png"}), 413, "too_many_pixels"),
    "not an image": (dict(files={"image": ("a.jpg", b"<html>no photo here</html>", "image/jpeg")}), 415, "not_an_image"),
    "not an image raw": (dict(content=b"<html>", headers={"content-type": "image/jpeg"}), 415, "not_an_image"),
    "wrong content type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
    "truncated": (dict(content=noisy_jpeg()[:20_000], headers={"content-type": "image/jpeg"}), 422, "truncated_image"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx_with_a_stable_code_and_reaches_no_model(service, case):
    request, status, code = BAD_REQUESTS[case]
    assert_error(service.client.post("/v1/recognize", **request), status, code)
    assert not service.detector.detect.calls and not service.classifier.classify.calls
    assert service.recognize(shelf_photo()).status_code == 200


def test_unknown_paths_and_methods_answer_json(service):
    assert_error(service.client.get("/v2/nothing"), 404, "not_found")
    response = service.client.get("/v1/recognize")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert_error(service.client.delete("/hello"), 405, "method_not_allowed")


@pytest.mark.parametrize("error, outcome", [
    (UploadError(408, "request_timeout", "too slow"), (408, "request_timeout", False)),
    (ServiceError(503, "overloaded", "busy"), (503, "overloaded", False)),
    (ImageError("not_an_image", "html"), (415, "not_an_image", True)),
    (ImageError("a_code_not_mapped_yet", "?"), (400, "a_code_not_mapped_yet", True)),
    (StarletteHTTPException(404), (404, "not_found", False)),
    (StarletteHTTPException(418), (418, "http_error", False)),
    (KeyError("a bug"), (500, "internal_error", False)),
], ids=["upload", "service", "image", "image-unmapped", "not-found", "other-http", "bug"])
def test_one_mapping_gives_every_error_its_status_and_code(error, outcome):
    """UploadError is a ServiceError: one base with status and code; the decoder's ImageError maps by its code."""
    assert error_outcome(error) == outcome


def test_each_answer_is_counted_with_its_outcome(service):
    """The ingress's counters (deployments/metrics.py) get the endpoint, status and code of every answer."""
    counted = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def inc(self, value=1.0, tags=None):
            counted.append((self.name, value, tags))

    metrics = service.replica.metrics
    metrics.photos, metrics.decode_refusals = Recorder("photos"), Recorder("decode_refusals")
    assert service.recognize(shelf_photo()).status_code == 200
    assert service.recognize(b"<html>").status_code == 415
    assert service.client.post("/hello", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    service.detector.detect.answer = failing(OVERLOADED)
    assert service.recognize(shelf_photo()).status_code == 503
    assert counted == [
        ("photos", 1.0, {"endpoint": "/v1/recognize", "status": "200", "code": "ok"}),
        ("photos", 1.0, {"endpoint": "/v1/recognize", "status": "415", "code": "not_an_image"}),
        ("decode_refusals", 1.0, {"code": "not_an_image"}),
        ("photos", 1.0, {"endpoint": "/hello", "status": "415", "code": "unsupported_media_type"}),
        ("photos", 1.0, {"endpoint": "/v1/recognize", "status": "503", "code": "overloaded"}),
    ]
