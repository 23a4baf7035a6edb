"""Reading the photo out of an HTTP request: size-capped, in memory only, with errors that say what was wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from deployments.errors import ServiceError

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""The original client sends full-size phone JPEGs of up to 10 MB."""

MAX_BODY_BYTES = MAX_IMAGE_BYTES + 256 * 1024
"""The image plus room for multipart headers and small extra fields."""

BODY_GRACE_S = 2.0
"""Seconds every body gets before the rate floor below applies (a slow first chunk, a busy client)."""

BODY_MIN_BYTES_PER_S = 1024 * 1024
"""Slowest upload accepted after the grace: by any moment, grace + received / this rate is all the time a body
may have taken, so a 10 MB photo must be in within 2 + 10 s and a 300 KB one within 2.3 s. A client trickling
a byte every few seconds then holds an ingress slot for the grace, not the proxy's 60 s request timeout, and
gets a 408 `request_timeout`. A buffering reverse proxy in front is still what stops slow senders for good."""


class UploadError(ServiceError):
    """A request whose body holds no usable image; becomes a 4xx JSON error."""


class InMemoryMultiPartParser(MultiPartParser):
    """Starlette's parser, with files kept in memory up to the body cap: uploads never touch disk."""

    spool_max_size = MAX_BODY_BYTES
    ended = False

    def on_end(self) -> None:
        """The closing boundary was read. Without it the body was cut short: malformed, not a form missing a part."""
        self.ended = True


async def capped_body(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, "body_too_large", f"the request body is {int(declared):,} bytes; the limit is {limit:,}")
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    chunks = request.stream()
    while True:
        try:
            async with asyncio.timeout_at(started + BODY_GRACE_S + received / BODY_MIN_BYTES_PER_S):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadError(
                408, "request_timeout",
                f"the request body arrived too slowly ({received:,} bytes in {loop.time() - started:.1f} s); "
                f"send it at {BODY_MIN_BYTES_PER_S:,} bytes/s or faster",
            ) from None
        received += len(chunk)
        if received > limit:
            raise UploadError(413, "body_too_large", f"the request body exceeds the limit of {limit:,} bytes")
        yield chunk


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_image(request: Request, part_names: tuple[str, ...], allow_raw_body: bool) -> bytes:
    """The image bytes of a multipart part named one of `part_names`, or of a raw image body."""
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        parser = InMemoryMultiPartParser(request.headers, capped_body(request, MAX_BODY_BYTES), max_files=4, max_fields=16)
        try:
            form = await parser.parse()
        except MultiPartException as error:
            raise UploadError(400, "bad_multipart", f"the multipart body cannot be parsed: {error.message}") from None
        if not parser.ended:
            await form.close()
            raise UploadError(400, "bad_multipart", "the multipart body ends before its closing boundary")
        try:
            part = next((form[name] for name in part_names if name in form), None)
            if part is None:
                found = ", ".join(repr(key) for key in form.keys()) or "none"
                wanted = " or ".join(repr(name) for name in part_names)
                raise UploadError(400, "missing_image_part", f"the multipart body has no part named {wanted} (parts found: {found})")
            data = await part.read() if isinstance(part, UploadFile) else part.encode("latin-1", "replace")
        finally:
            await form.close()
    elif allow_raw_body and (media_type.startswith("image/") or media_type == "application/octet-stream"):
        data = b"".join([chunk async for chunk in capped_body(request, MAX_IMAGE_BYTES)])
    else:
        accepted = "multipart/form-data" + (", image/* or application/octet-stream" if allow_raw_body else "")
        raise UploadError(415, "unsupported_media_type", f"content type {media_type or '(none)'!r} is not accepted; send {accepted}")
    if not data:
        raise UploadError(400, "empty_image", "the image is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise UploadError(413, "image_too_large", f"the image is {len(data):,} bytes; the limit is {MAX_IMAGE_BYTES:,}")
    return data
