"""Every error the ingress answers, as one JSON shape: `{"error": {"code", "message"}}` with a stable code.

One mapping, exception → (HTTP status, code), serves both the exception handlers and the metrics, so the answer
and the count never disagree. The app's own refusals raise ServiceError (or its subclass uploads.UploadError);
the decoder's ImageError stays a ValueError of pipeline.core, which knows nothing of HTTP, and gets its status
from IMAGE_ERROR_STATUS here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.core.preprocessing import ImageError

logger = logging.getLogger("ray.serve")

IMAGE_ERROR_STATUS = {"empty_image": 400, "not_an_image": 415, "truncated_image": 422, "too_many_pixels": 413}
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


class ServiceError(Exception):
    """A request the service refuses on purpose: answered with `status` and the stable error `code`."""

    def __init__(self, status: int, code: str, message: str, detail: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.detail = detail  # extra fields beside "error" in the body (an enrollment's rejected photos)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   detail: dict | None = None) -> JSONResponse:
    """The JSON error every status the app controls answers with; `headers` are kept (405's Allow, 401's
    WWW-Authenticate). A 408 closes the connection, whose unread body would otherwise pass for the next request."""
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", "1")
    if status == 408:
        headers["Connection"] = "close"
    return JSONResponse({"error": {"code": code, "message": message}} | (detail or {}), status_code=status, headers=headers or None)


def status_and_code(error: Exception) -> tuple[int, str]:
    """The HTTP status and error code the app answers `error` with. Anything unforeseen is a bug: 500 `internal_error`."""
    if isinstance(error, ImageError):
        return IMAGE_ERROR_STATUS.get(error.code, 400), error.code
    if isinstance(error, ServiceError):
        return error.status, error.code
    if isinstance(error, StarletteHTTPException):
        return error.status_code, HTTP_ERROR_CODES.get(error.status_code, "http_error")
    if isinstance(error, RequestValidationError):
        return 422, "invalid_request"
    return 500, "internal_error"


def error_outcome(error: Exception) -> tuple[int, str, bool]:
    """(HTTP status, error code, whether the decoder refused the photo) of a request that failed with `error`:
    what the handlers answer, for the metrics."""
    return (*status_and_code(error), isinstance(error, ImageError))


async def _known_error(request: Request, error: ServiceError | ImageError) -> JSONResponse:
    return error_response(*status_and_code(error), error.message, detail=getattr(error, "detail", None))


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return error_response(*status_and_code(error), str(error.detail), error.headers)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(*status_and_code(error), str(error.errors()))


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    """A bug, ours or a model deployment's (a bad crop shape): 500, logged with its traceback; never a 503
    `model_unavailable`, which would send the operator looking for an outage."""
    logger.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(*status_and_code(error), f"the service failed on this request ({type(error).__name__}); it is logged")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error `app` raises (404s, 405s and bugs included) answer the JSON error shape."""
    app.exception_handler(ServiceError)(_known_error)  # uploads.UploadError included
    app.exception_handler(ImageError)(_known_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(Exception)(_internal_error)
