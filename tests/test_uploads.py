"""deployments/uploads.py: where the photo may be in the request, multipart bodies cut short, and slow bodies
answered 408 within their deadline while other requests are served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

import deployments.uploads as uploads
from tests.ingress_fakes import Service, assert_error, in_process_service, jpeg, multipart, send_over_asgi, shelf_photo

pytestmark = pytest.mark.timeout(60)  # a hang fails in a minute, not at the suite's 900 s


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


def test_hello_takes_only_a_multipart_img_part(service):
    data = shelf_photo()
    assert_error(service.client.post("/hello", content=data, headers={"content-type": "image/jpeg"}), 415, "unsupported_media_type")
    assert_error(service.client.post("/hello", files={"image": ("a.jpg", data, "image/jpeg")}), 400, "missing_image_part")
    assert_error(service.client.post("/hello", files={"img": ("a.jpg", b"", "image/jpeg")}), 400, "empty_image")


def test_a_multipart_body_that_never_closes_is_bad_multipart(service):
    data = jpeg(64, 48)
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    post = service.client.post
    assert_error(post("/hello", content=multipart({"img": data}, closed=False), headers=headers), 400, "bad_multipart")
    assert_error(post("/v1/recognize", content=multipart({"img": data}, closed=False)[:40], headers=headers), 400, "bad_multipart")
    assert post("/hello", content=multipart({"img": data}), headers=headers).status_code == 200
    assert_error(post("/hello", content=multipart({"photo": data}), headers=headers), 400, "missing_image_part")


# Slow bodies: 408 ---------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_slow_body_gets_408_within_the_deadline_while_others_are_answered(service, short_body_deadline, kind):
    data = jpeg(64, 48)
    body, content_type = (data, "image/jpeg") if kind == "raw" else (multipart({"img": data}), "multipart/form-data; boundary=xyz")
    url = "/v1/recognize" if kind == "raw" else "/hello"
    app = service.replica

    async def timed(request) -> tuple:
        response = await request
        return response, time.monotonic()

    async def scene():
        slow = [timed(send_over_asgi(app, "POST", url, content=trickle(body, 1, 0.2), headers={"content-type": content_type}))
                for _ in range(5)]
        started = time.monotonic()
        fast_done = asyncio.ensure_future(timed(send_over_asgi(app, "POST", url, content=body, headers={"content-type": content_type})))
        slow_done = asyncio.gather(*slow)
        return await fast_done, await slow_done, started

    (answered, fast_at), slow, started = asyncio.run(scene())
    assert answered.status_code == 200
    assert fast_at < min(at for _, at in slow)  # answered while the slow bodies were still held, not after them
    for response, _ in slow:  # a byte every 0.2 s: out after the 0.3 s grace, not after the whole body
        assert_error(response, 408, "request_timeout")
        assert response.headers["connection"] == "close"
    # Uncut, a slow body would arrive whole only at trickle's 10 s bound: 5 s leaves a slow 2-core machine room.
    assert max(at for _, at in slow) - started < 5.0


def test_a_body_sent_above_the_rate_floor_is_read_whole(service, short_body_deadline):
    data = jpeg(640, 480)
    assert len(data) > 3_000
    response = asyncio.run(send_over_asgi(service.replica, "POST", "/v1/recognize", content=trickle(data, 1_000, 0.02),
                                 headers={"content-type": "image/jpeg"}))
    assert response.status_code == 200, response.text  # 50 KB/s over a floor of 20 KB/s: takes its time, passes
