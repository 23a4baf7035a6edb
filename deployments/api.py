"""The ingress's FastAPI app and its OpenAPI contract: what the routes in recognizer.py are mounted on.

The photo endpoints read their upload themselves (uploads.read_image: capped, streamed, one of several part
names or a raw body), which FastAPI cannot describe from a signature, so their request bodies are declared here
by hand, as strictly as the code enforces them: the body is required, the image part is required, and an image
is 1 byte to MAX_IMAGE_BYTES long. A schema-driven client or fuzzer then builds the requests the service takes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from deployments.auth import ApiKeyCheck
from deployments.docs import add_docs
from deployments.errors import install_error_handlers
from deployments.schemas import ErrorBody
from deployments.uploads import MAX_IMAGE_BYTES

ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 408, 413, 415, 422, 500, 503)}
"""The error statuses of the photo endpoints, each answered with ErrorBody (deployments/errors.py)."""

IMAGE: dict[str, Any] = {"type": "string", "format": "binary", "minLength": 1, "maxLength": MAX_IMAGE_BYTES}
"""One image, as a multipart part or the whole body. `format: binary` (octets, not text) is what Swagger UI turns
into a file picker and schema fuzzers into bytes; OpenAPI 3.1 keeps it for 3.0 compatibility. The lengths count
octets: an empty image is refused (400 `empty_image`), one over the limit too (413). FastAPI writes the same
`minLength` for its own `File(min_length=1)`."""


def image_request_body(parts: tuple[str, ...], raw_body: bool) -> dict[str, Any]:
    """OpenAPI requestBody (for `openapi_extra`) of an endpoint that reads its upload with uploads.read_image: a
    multipart body carrying one of `parts`, or, with `raw_body`, the image as the whole body."""
    schema: dict[str, Any] = {"type": "object", "properties": {part: {**IMAGE, "description": "the photo"} for part in parts}}
    if len(parts) == 1:
        schema["required"] = list(parts)
    else:  # any one of them will do (read_image takes the first it finds)
        schema["anyOf"] = [{"required": [part]} for part in parts]
    content: dict[str, Any] = {"multipart/form-data": {"schema": schema}}
    if raw_body:
        content |= {"image/*": {"schema": IMAGE}, "application/octet-stream": {"schema": IMAGE}}
    return {"requestBody": {"required": True, "content": content}}


MULTIPART_BODY = image_request_body(("img",), raw_body=False)
RECOGNIZE_BODY = image_request_body(("image", "img"), raw_body=True)


def make_api() -> FastAPI:
    """The app with the offline /docs, the JSON error handlers and the API-key check. The routes come from the
    Recognizer's decorators; @serve.ingress then freezes a copy of the app, so all of this is added before it."""
    app = FastAPI(
        title="Product recognition",
        version="1.0",
        description="Finds the products in a phone photo (YOLO) and names each one "
        "(an ImageNet-pretrained EfficientNet-Lite0 with a head trained on shop photos). "
        f"Photos up to {MAX_IMAGE_BYTES // (1024 * 1024)} MB: JPEG, PNG, WebP and what else Pillow reads.",
        docs_url=None,  # add_docs: the same page, readable offline
        redoc_url=None,  # ReDoc's page loads from a CDN too, blank offline
    )
    add_docs(app)
    install_error_handlers(app)
    app.add_middleware(ApiKeyCheck)
    return app
