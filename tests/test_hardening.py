"""Hostile clients and inputs (issue 9), in process: the ingress's FastAPI app with stand-in model handles.

The requests go through the real app (routes, middleware, error handlers, upload reading and decoding) over
httpx's ASGI transport; only the Detector and Classifier deployments are replaced, so each case runs in well
under a second. Decode memory is measured in a subprocess of its own, where peak RSS means something.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image
from ray import serve

import deployments.recognizer as recognizer_module
import deployments.uploads as uploads
from deployments.recognizer import API_KEY_ENV, DECODE_SLOTS, api
from pipeline.preprocessing import DECODE_PEAK_BYTES_PER_PIXEL, decode_photo
from tests.test_preprocessing import png_header_only
from tests.tiny_models import SHIPPED_MODEL_DIR


class StandIn:
    """A DeploymentHandle method: `.remote(*args)` answers `answer(*args)`, and the calls are kept."""

    def __init__(self, deployment: str, method: str, answer) -> None:
        self.deployment_name, self.handle_options = deployment, SimpleNamespace(method_name=method)
        self.answer, self.calls = answer, []

    def remote(self, *args):
        self.calls.append(args)

        async def call():
            return self.answer(*args)

        return call()


@pytest.fixture
def ingress(monkeypatch):
    """A Recognizer with stand-in handles, served by `api` as Serve would (the replica's servable object)."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    cls = recognizer_module.Recognizer.func_or_class.__mro__[1]  # the class under Serve's ASGI wrapper
    label = "신라면_컵_114"
    detector = SimpleNamespace(
        detect=StandIn("Detector", "detect", lambda image: {"boxes": np.zeros((0, 5), np.float32), "version": "d1"}),
        ready=StandIn("Detector", "ready", lambda: "d1"),
    )
    classifier = SimpleNamespace(
        classify=StandIn("Classifier", "classify", lambda crops: {
            "results": [{"candidates": [(label, 0.9)], "known": True} for _ in crops], "version": "c1"}),
        ready=StandIn("Classifier", "ready", lambda: "c1"),
    )
    recognizer = cls(detector, classifier, str(SHIPPED_MODEL_DIR))
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(servable_object=recognizer))
    return recognizer


async def _send(method: str, url: str, **request) -> httpx.Response:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        return await client.request(method, url, **request)


def send(method: str, url: str, **request) -> httpx.Response:
    return asyncio.run(_send(method, url, **request))


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


# Item 4: very elongated JPEGs -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(4032, 4), (1, 1001), (4, 4032), (1001, 1), (8000, 2)])
def test_elongated_jpegs_decode_and_are_answered(ingress, size):
    data = jpeg(*size)
    photo = decode_photo(data)  # the draft size used to round a side to 0: ZeroDivisionError, a 500
    assert photo.original_size == size and min(photo.image.size) >= 1

    response = send("POST", "/v1/recognize", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert (response.json()["photo"]["width"], response.json()["photo"]["height"]) == size
    detector_image = ingress.detector.detect.calls[-1][0]
    assert max(detector_image.shape[:2]) <= 640 and min(detector_image.shape[:2]) >= 1

    hello = send("POST", "/hello", files={"img": ("long.jpg", data, "image/jpeg")})
    assert hello.status_code == 200 and list(hello.json()) == ["item"]


# Item 3: memory amplification -------------------------------------------------------------------------------

MEASURE = """
import sys
from pipeline.preprocessing import decode_photo
def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))
data = open(sys.argv[1], "rb").read()
before = kib("VmRSS:")
photo = decode_photo(data)
print(photo.image.width, photo.image.height, (kib("VmHWM:") - before) * 1024)
"""


def peak_decode_bytes(path) -> tuple[tuple[int, int], int]:
    """Decoded size and peak RSS over the process's RSS just before the decode (an upper bound of its cost)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120, check=True)
    width, height, peak = map(int, out.stdout.split())
    return (width, height), peak


def test_16_bit_png_decodes_within_a_stated_memory_budget(tmp_path):
    """The issue's photo: 7000x7000 16-bit grayscale, ~100 KB. It cost 1,218 MiB through float64 copies; now the
    decode holds the 98 MB full-size image and a band at a time, and keeps 1000x1000."""
    pixels = np.zeros((7000, 7000), np.uint16)
    pixels[::7, ::3] = 40000
    path = tmp_path / "gray16.png"
    Image.fromarray(pixels).save(path, "PNG")
    del pixels
    assert path.stat().st_size < 200_000

    size, peak = peak_decode_bytes(path)
    assert size == (1000, 1000)
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"  # the budget: under 200 MiB (measured ~135)
    assert peak < DECODE_PEAK_BYTES_PER_PIXEL * 7000 * 7000


def test_the_costliest_format_fits_the_per_pixel_bound_the_ingress_is_sized_with(tmp_path):
    """WebP at the 50 MP limit: Pillow's decoder holds about four full copies. DECODE_PEAK_BYTES_PER_PIXEL, and so
    the ingress's DECODE_SLOTS, must cover it."""
    side = 7071  # 50 MP
    pixels = np.zeros((side, side), np.uint8)
    pixels[::5, ::3] = 200
    path = tmp_path / "big.webp"
    Image.fromarray(pixels).convert("RGBA").save(path, "WEBP", lossless=True, method=0)
    del pixels

    size, peak = peak_decode_bytes(path)
    assert size == (1011, 1011)
    assert peak < DECODE_PEAK_BYTES_PER_PIXEL * side * side, f"{peak / (side * side):.1f} bytes a pixel"


def test_concurrent_decodes_are_bounded_per_replica(ingress, monkeypatch):
    active, most = 0, 0
    prepare = ingress._recognize.__globals__["prepare_photo"]

    def counting_prepare(data, config):
        nonlocal active, most
        active += 1  # in worker threads: a race would only make `most` larger, never hide an excess
        most = max(most, active)
        time.sleep(0.1)
        try:
            return prepare(data, config)
        finally:
            active -= 1

    # Serve keeps a by-value copy of the class, whose methods have their own globals: patch the decode there.
    monkeypatch.setitem(ingress._recognize.__globals__, "prepare_photo", counting_prepare)
    data = jpeg(64, 48)

    async def burst():
        return await asyncio.gather(*(
            _send("POST", "/v1/recognize", content=data, headers={"content-type": "image/jpeg"}) for _ in range(3 * DECODE_SLOTS)
        ))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert most == DECODE_SLOTS


# Item 2: slow bodies --------------------------------------------------------------------------------------------


async def trickle(data: bytes, chunk: int, every_s: float, limit_s: float = 10.0) -> AsyncIterator[bytes]:
    """`data` in `chunk`-byte pieces, one every `every_s` seconds (bounded: the test never hangs)."""
    started = time.monotonic()
    for start in range(0, len(data), chunk):
        if time.monotonic() - started > limit_s:
            return
        await asyncio.sleep(every_s)
        yield data[start:start + chunk]


@pytest.fixture
def short_body_deadline(monkeypatch):
    """0.3 s of grace, then 20 KB/s at least."""
    monkeypatch.setattr(uploads, "BODY_GRACE_S", 0.3)
    monkeypatch.setattr(uploads, "BODY_MIN_BYTES_PER_S", 20_000)


def multipart(data: bytes, part: str = "img", boundary: str = "xyz", closed: bool = True) -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    return head.encode() + data + (f"\r\n--{boundary}--\r\n".encode() if closed else b"")


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_slow_body_gets_408_within_the_deadline_while_others_are_answered(ingress, short_body_deadline, kind):
    data = jpeg(64, 48)
    body, content_type = (data, "image/jpeg") if kind == "raw" else (multipart(data), "multipart/form-data; boundary=xyz")
    url = "/v1/recognize" if kind == "raw" else "/hello"

    async def scene():
        slow = [
            _send("POST", url, content=trickle(body, 1, 0.2), headers={"content-type": content_type}) for _ in range(5)
        ]
        fast = _send("POST", url, content=body, headers={"content-type": content_type})
        started = time.monotonic()
        fast_done = asyncio.ensure_future(fast)
        slow_done = asyncio.gather(*slow)
        answered = await fast_done
        fast_s = time.monotonic() - started
        return answered, fast_s, await slow_done, time.monotonic() - started

    answered, fast_s, slow, slow_s = asyncio.run(scene())
    assert answered.status_code == 200 and fast_s < 1.0
    for response in slow:  # a byte every 0.2 s: out after the 0.3 s grace, not after the whole body
        assert_error(response, 408, "request_timeout")
        assert response.headers["connection"] == "close"
    assert slow_s < 2.0


def test_a_body_sent_above_the_rate_floor_is_read_whole(ingress, short_body_deadline):
    data = jpeg(640, 480)
    assert len(data) > 3_000
    response = send("POST", "/v1/recognize", content=trickle(data, 1_000, 0.02), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text  # 50 KB/s over a floor of 20 KB/s: takes its time, passes


# Every error status the app controls answers JSON with a stable code ---------------------------------------------

def noisy_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


ERROR_CASES = {
    "empty body": (dict(content=b"", headers={"content-type": "image/jpeg"}), 400, "empty_image"),
    "missing part": (dict(files={"photo": ("a.jpg", b"x", "image/jpeg")}), 400, "missing_image_part"),
    "broken multipart": (dict(content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"}), 400, "bad_multipart"),
    "oversized body": (dict(content=b"\0" * (11 * 1024 * 1024), headers={"content-type": "image/jpeg"}), 413, "body_too_large"),
    "too many pixels": (dict(content=png_header_only(60_000, 60_000), headers={"content-type": "image/png"}), 413, "too_many_pixels"),
    "not an image": (dict(content=b"<html>", headers={"content-type": "image/jpeg"}), 415, "not_an_image"),
    "wrong content type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
    "truncated": (dict(content=noisy_jpeg()[:20_000], headers={"content-type": "image/jpeg"}), 422, "truncated_image"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_error_statuses_answer_json_with_a_stable_code(ingress, case):
    request, status, code = ERROR_CASES[case]
    assert_error(send("POST", "/v1/recognize", **request), status, code)


def test_a_failing_model_is_a_json_503_with_retry_after(ingress):
    def fail(image):
        raise RuntimeError("the detector fell over")

    ingress.detector.detect.answer = fail
    response = send("POST", "/v1/recognize", content=jpeg(64, 48), headers={"content-type": "image/jpeg"})
    assert_error(response, 503, "model_unavailable")
    assert response.headers["retry-after"] == "1"
    assert_error(send("GET", "/v2/nothing"), 404, "not_found")


# Item 6: small ones ---------------------------------------------------------------------------------------------


def test_405_carries_allow(ingress):
    response = send("GET", "/v1/recognize")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert_error(send("DELETE", "/hello"), 405, "method_not_allowed")


def test_a_multipart_body_that_never_closes_is_bad_multipart(ingress):
    data = jpeg(64, 48)
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    assert_error(send("POST", "/hello", content=multipart(data, closed=False), headers=headers), 400, "bad_multipart")
    assert_error(send("POST", "/v1/recognize", content=multipart(data, closed=False)[:40], headers=headers), 400, "bad_multipart")
    assert send("POST", "/hello", content=multipart(data), headers=headers).status_code == 200
    assert_error(send("POST", "/hello", content=multipart(data, part="photo"), headers=headers), 400, "missing_image_part")


def test_docs_list_the_endpoints_without_the_internet(ingress):
    docs = send("GET", "/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for endpoint in ("POST /hello", "POST /v1/recognize", "GET /v1/labels", "GET /healthz", "GET /readyz"):
        assert endpoint in docs.text  # in the HTML itself, not in a script fetched from a CDN
    assert 'href="/openapi.json"' in docs.text
    assert send("GET", "/openapi.json").json()["info"]["title"] == "Product recognition"
    assert_error(send("GET", "/redoc"), 404, "not_found")


# Item 7: the optional API key -----------------------------------------------------------------------------------


def test_no_api_key_is_asked_by_default(ingress):
    data = jpeg(64, 48)
    assert send("POST", "/hello", files={"img": ("a.jpg", data, "image/jpeg")}).status_code == 200
    assert send("GET", "/v1/labels").status_code == 200


def test_api_key_when_set(ingress, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "s3cret-key")
    files = {"img": ("a.jpg", jpeg(64, 48), "image/jpeg")}
    for method, url in [("POST", "/hello"), ("POST", "/v1/recognize"), ("GET", "/v1/labels"), ("GET", "/docs"),
                        ("GET", "/openapi.json"), ("GET", "/nowhere")]:
        response = send(method, url, files=files) if method == "POST" else send(method, url)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(send("GET", "/v1/labels", headers={"x-api-key": "wrong"}), 401, "unauthorized")
    assert_error(send("GET", "/v1/labels", headers={"authorization": "Bearer s3cret"}), 401, "unauthorized")

    assert send("POST", "/hello", files=files, headers={"x-api-key": "s3cret-key"}).status_code == 200
    assert send("POST", "/v1/recognize", files=files, headers={"authorization": "Bearer s3cret-key"}).status_code == 200
    assert send("GET", "/docs", headers={"x-api-key": "s3cret-key"}).status_code == 200
    assert send("GET", "/healthz").json()["status"] == "ok"  # probes need no key
    assert send("GET", "/readyz").json()["status"] == "ok"
