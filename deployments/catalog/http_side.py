"""The catalog's HTTP side in the ingress: who may write, how an enrollment request is read, and the Catalog
deployment's refusals as the service's JSON errors. The routes themselves are the Recognizer's."""

from __future__ import annotations

import hmac
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from deployments.errors import ServiceError
from deployments.payloads import Refusal
from deployments.uploads import MAX_IMAGE_BYTES, InMemoryMultiPartParser, UploadError, capped_body

ADMIN_KEY_ENV = "PRODUCT_ADMIN_KEY"
"""The catalog's write key. Unset (the default), every write is refused: writes are closed by default. Set
(non-empty) in the replicas' environment, a write must carry it as `X-Admin-Key: <key>` or
`Authorization: Bearer <key>`. Reads need none (but the optional API key, deployments/auth.py)."""

MAX_PHOTOS = 20
"""Photo parts per enrollment request."""

MAX_ENROLL_BODY_BYTES = 64 * 1024 * 1024
"""One enrollment request's body: bounds what a request holds in the ingress's memory (20 phone photos of
3 MB fit; a photo over MAX_IMAGE_BYTES inside it is rejected on its own)."""

MAX_PRECEDENCE_BODY_BYTES = 64 * 1024
"""A precedence request's JSON body: every trained class's label fits many times over."""

ACTOR_HEADER = "x-operator"
"""An optional name for the audit log (the page sends the one its operator typed); the client's address is recorded
either way, as `name@address`."""

OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._'-]{0,63}")
"""An operator's name: 1-64 ASCII letters, digits, spaces and `._'-` (headers are ASCII; no `@`, which separates
the address in the audit)."""


@dataclass(frozen=True)
class EnrollmentRequest:
    sku: str | None
    label: str | None
    replace: bool  # the `replace` field: true replaces an enrolled sku's label and photos
    photos: list[tuple[int, str, str, bytes]]  # (part index, filename, media type, bytes) of each photo within limits
    too_large: list[dict]  # the photo parts over MAX_IMAGE_BYTES, as rejections


def admin_actor(request: Request) -> str:
    """Who is writing (for the audit log), once the admin key is checked; 403 otherwise, before the body is read."""
    key = os.environ.get(ADMIN_KEY_ENV, "")
    if not key:
        raise ServiceError(403, "writes_closed", f"catalog writes are closed: the server has no admin key ({ADMIN_KEY_ENV} unset)")
    authorization = request.headers.get("authorization", "")
    offered = [request.headers.get("x-admin-key", "")]
    if authorization[:7].lower() == "bearer ":
        offered.append(authorization[7:].strip())
    if not any(hmac.compare_digest(value.encode(), key.encode()) for value in offered if value):
        raise ServiceError(403, "forbidden", "catalog writes need the admin key: 'X-Admin-Key: <key>' or 'Authorization: Bearer <key>'")
    name = request.headers.get(ACTOR_HEADER, "").strip() or "admin"
    if not OPERATOR.fullmatch(name):
        raise ServiceError(400, "invalid_operator", "X-Operator: 1 to 64 ASCII letters, digits, spaces and ._'- "
                                                    "starting with a letter or digit")
    return f"{name}@{request.client.host if request.client else 'unknown'}"


def image_media_type(data: bytes) -> str:
    """The stored photo's media type from its first bytes (never the client's word: the photo is served back)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


async def read_enrollment(request: Request, with_product: bool) -> EnrollmentRequest:
    """The `photo` parts (and, `with_product`, the `sku` and `label` fields) of a multipart enrollment."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UploadError(415, "unsupported_media_type", "send multipart/form-data with 'photo' parts")
    parser = InMemoryMultiPartParser(request.headers, capped_body(request, MAX_ENROLL_BODY_BYTES),
                                     max_files=MAX_PHOTOS, max_fields=8)
    parser.spool_max_size = MAX_ENROLL_BODY_BYTES
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if "files" in error.message.lower():
            raise UploadError(413, "too_many_photos", f"at most {MAX_PHOTOS} photo parts per request") from None
        raise UploadError(400, "bad_multipart", f"the multipart body cannot be parsed: {error.message}") from None
    try:
        if not parser.ended:
            raise UploadError(400, "bad_multipart", "the multipart body ends before its closing boundary")
        fields = {name: form.get(name) for name in ("sku", "label")}
        replace = form.get("replace", "false")
        if not isinstance(replace, str) or replace.strip().lower() not in ("true", "false"):
            raise UploadError(400, "invalid_field", "the 'replace' field is 'true' or 'false'")
        if with_product:
            for name, value in fields.items():
                if not isinstance(value, str) or not value.strip():
                    raise UploadError(400, "missing_field", f"the multipart body needs a non-empty '{name}' field")
        photos, too_large = [], []
        for index, part in enumerate(form.getlist("photo")):
            if not isinstance(part, UploadFile):
                raise UploadError(400, "bad_multipart", "'photo' parts must be files (with a filename)")
            data, filename = await part.read(), (part.filename or f"photo-{index}")[:200]
            if len(data) > MAX_IMAGE_BYTES:
                too_large.append({"index": index, "filename": filename, "reason": "too_large",
                                  "detail": f"{len(data):,} bytes; the limit is {MAX_IMAGE_BYTES:,}"})
            else:
                photos.append((index, filename, image_media_type(data), data))
        if not photos and not too_large:
            raise UploadError(400, "missing_image_part", "the multipart body has no 'photo' part")
    finally:
        await form.close()
    sku, label = fields["sku"], fields["label"]
    return EnrollmentRequest(sku.strip() if isinstance(sku, str) else None, label.strip() if isinstance(label, str) else None,
                             replace.strip().lower() == "true", photos, too_large)


async def read_precedence(request: Request) -> list[str]:
    """The `over` list of a precedence request's JSON body, `{"over": ["<trained class label>", ...]}`: 400
    `invalid_body` for anything else (not JSON, another shape), 413 past MAX_PRECEDENCE_BODY_BYTES."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UploadError(415, "unsupported_media_type", f"content type {media_type!r} is not accepted; send application/json")
    data = b"".join([chunk async for chunk in capped_body(request, MAX_PRECEDENCE_BODY_BYTES)])
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    over = body.get("over") if isinstance(body, dict) and body.keys() == {"over"} else None
    if not isinstance(over, list) or not all(isinstance(label, str) for label in over):
        raise UploadError(400, "invalid_body", 'the body is JSON: {"over": ["<trained class label>", ...]} ([] for none)')
    return over


def answered(result: Any) -> Any:
    """The Catalog's answer, or its refusal raised as the service's JSON error."""
    if isinstance(result, Refusal):
        raise ServiceError(result.status, result.code, result.message, result.detail)
    return result
