"""Recognizer: the HTTP ingress. Reads the upload, decodes it once, asks the Detector for boxes, crops every
product from the decoded photo, asks the Classifier to name the crops, and answers JSON.

Decoding and cropping are CPU work done in a thread, so the event loop keeps taking requests; only small
arrays travel to the model deployments: the photo letterboxed to the detector's input (~150 KB), crops at the
classifier's input size.
"""


import asyncio
import base64
import hmac
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.docs import add_docs
from deployments.metrics import RecognizerMetrics
from deployments.payloads import Classification, Detection
from deployments.schemas import (
    Box,
    Candidate,
    ErrorBody,
    Health,
    HelloAnswer,
    LabelFields,
    Labels,
    ModelVersions,
    PhotoInfo,
    Product,
    Recognition,
    Timings,
)
from deployments.uploads import MAX_IMAGE_BYTES, UploadError, read_image
from pipeline.core.model_label import load_model_label, parse_label
from pipeline.core.photo_to_answer import PhotoToAnswer
from pipeline.core.preprocessing import DECODE_PEAK_BYTES, ImageError, Photo
from pipeline.core.settings import RecognizerSettings

logger = logging.getLogger("ray.serve")

REPLICA_LOST = (RayActorError, ReplicaUnavailableError)
"""A model replica died under a call (killed, crashed, its node lost): worth one retry."""

MODEL_CALL_TIMEOUT_S = 30.0
"""The longest a photo waits for one model deployment, queueing included. Queues are bounded, so a healthy
graph answers far sooner; past this the models are gone (a lost GPU node, replicas still starting) and the
client gets 503 `model_unavailable` with Retry-After, not the proxy's 408 after its 60 s request timeout."""

IMAGE_ERROR_STATUS = {"empty_image": 400, "not_an_image": 415, "truncated_image": 422, "too_many_pixels": 413}

ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 408, 413, 415, 422, 500, 503)}

DECODE_MEMORY_BUDGET_BYTES = 2 * 1024**3
"""What one ingress replica may spend on decoding photos at once, on top of its own footprint."""

DECODE_SLOTS = max(1, DECODE_MEMORY_BUDGET_BYTES // DECODE_PEAK_BYTES)
"""Concurrent decodes per replica: the budget over one decode's worst case (a 50 MP photo of the costliest
format), so a burst of hostile photos cannot take a replica past it; other requests wait their turn."""

API_KEY_ENV = "PRODUCT_API_KEY"
"""Optional shared secret. Set (non-empty) in the replicas' environment, every request but the health checks
must carry it, as `X-API-Key: <key>` or `Authorization: Bearer <key>`; unset (the default), nothing is asked,
as the original client sends no key."""

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered without the API key: load balancers and orchestrators probe them with none."""

BINARY = {"type": "string", "format": "binary"}


def image_request_body(part: str, description: str, raw_body: bool) -> dict[str, Any]:
    """OpenAPI requestBody for an endpoint that reads its upload itself (uploads.read_image), not via FastAPI."""
    schema: dict[str, Any] = {"type": "object", "properties": {part: {**BINARY, "description": description}}}
    if not raw_body:
        schema["required"] = [part]
    content: dict[str, Any] = {"multipart/form-data": {"schema": schema}}
    if raw_body:
        content |= {"image/*": {"schema": BINARY}, "application/octet-stream": {"schema": BINARY}}
    return {"requestBody": {"required": True, "content": content}}


MULTIPART_BODY = image_request_body("img", "the photo", raw_body=False)
RECOGNIZE_BODY = image_request_body("image", "the photo ('img' works too)", raw_body=True)

api = FastAPI(
    title="Product recognition",
    version="1.0",
    description="Finds the products in a phone photo (YOLO) and names each one "
    "(an ImageNet-pretrained EfficientNet-Lite0 with a head trained on shop photos). "
    f"Photos up to {MAX_IMAGE_BYTES // (1024 * 1024)} MB: JPEG, PNG, WebP and what else Pillow reads.",
    docs_url=None,  # add_docs below: the same page, readable offline
    redoc_url=None,  # ReDoc's page loads from a CDN too, blank offline
)
add_docs(api)


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON error every status the app controls answers with; `headers` are kept (405's Allow, 401's
    WWW-Authenticate). A 408 closes the connection, whose unread body would otherwise pass for the next request."""
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", "1")
    if status == 408:
        headers["Connection"] = "close"
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers or None)


HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def status_and_code(error: Exception) -> tuple[int, str]:
    """The HTTP status and error code the app answers `error` with: the one mapping the exception handlers below
    and the metrics (error_outcome) both use. Anything unforeseen is a bug: 500 `internal_error`."""
    if isinstance(error, ImageError):
        return IMAGE_ERROR_STATUS.get(error.code, 400), error.code
    if isinstance(error, (UploadError, ServiceError)):
        return error.status, error.code
    if isinstance(error, StarletteHTTPException):
        return error.status_code, HTTP_ERROR_CODES.get(error.status_code, "http_error")
    if isinstance(error, RequestValidationError):
        return 422, "invalid_request"
    return 500, "internal_error"


@api.exception_handler(UploadError)
@api.exception_handler(ServiceError)
@api.exception_handler(ImageError)
async def _known_error(request: Request, error: UploadError | ServiceError | ImageError) -> JSONResponse:
    return error_response(*status_and_code(error), error.message)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return error_response(*status_and_code(error), str(error.detail), error.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(*status_and_code(error), str(error.errors()))


@api.exception_handler(Exception)
async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    """A bug, ours or a model deployment's (a bad crop shape): 500, logged with its traceback; never a 503
    `model_unavailable`, which would send the operator looking for an outage."""
    logger.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(*status_and_code(error), f"the service failed on this request ({type(error).__name__}); it is logged")


class ApiKeyCheck:
    """ASGI middleware: without the configured key, 401 JSON `unauthorized` before any route runs, so unknown
    paths, /docs and /openapi.json are covered too. Off while API_KEY_ENV is unset or empty."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = os.environ.get(API_KEY_ENV, "")
        if scope["type"] != "http" or not key or self._path(scope) in OPEN_PATHS or self._carries(scope, key):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, "unauthorized", "this service wants an API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _path(scope: Scope) -> str:
        path, root = scope["path"], scope.get("root_path", "")
        return path[len(root):] if root and path.startswith(root) else path

    @staticmethod
    def _carries(scope: Scope, key: str) -> bool:
        headers = Headers(scope=scope)
        authorization = headers.get("authorization", "")
        offered = authorization[7:].strip() if authorization[:7].lower() == "bearer " else headers.get("x-api-key", "")
        return hmac.compare_digest(offered.encode(), key.encode())


api.add_middleware(ApiKeyCheck)  # before @serve.ingress below, which freezes a copy of the app


def error_outcome(error: Exception) -> tuple[int, str, bool]:
    """(HTTP status, error code, whether the decoder refused the photo) of a request that failed with `error`:
    what the exception handlers above answer, for the metrics."""
    return (*status_and_code(error), isinstance(error, ImageError))


@serve.deployment
@serve.ingress(api)
class Recognizer:
    def __init__(self, detector: DeploymentHandle, classifier: DeploymentHandle, model_dir: str | None = None) -> None:
        self.detector = detector
        self.classifier = classifier
        # Checksums are verified by the model deployments; here only labels and sizes are needed.
        self.bundle = load_model_label(model_dir, verify_checksums=False)
        self.photo_to_answer = PhotoToAnswer(self.bundle, RecognizerSettings())
        self.decode_slots = asyncio.Semaphore(DECODE_SLOTS)  # bounds this replica's decode memory
        self.metrics = RecognizerMetrics(error_outcome)
        logger.info("Recognizer: %d concurrent decodes; API key %s", DECODE_SLOTS,
                    "required" if os.environ.get(API_KEY_ENV) else f"off ({API_KEY_ENV} unset)")

    def reconfigure(self, user_config: dict) -> None:
        """Apply new photo, crop and answer settings without a restart (serve_config.yaml user_config)."""
        self.photo_to_answer = PhotoToAnswer(self.bundle, RecognizerSettings.from_config(user_config))
        logger.info("Recognizer settings: %s", self.photo_to_answer.settings)

    @api.post("/hello", response_model=HelloAnswer, responses=ERRORS, openapi_extra=MULTIPART_BODY)
    async def hello(self, request: Request) -> HelloAnswer:
        """The original client's call: multipart part `img`; answers the most prominent product's label, base64."""
        async with self.metrics.photo("/hello") as record:
            data = await read_image(request, ("img",), allow_raw_body=False)
            recognition = record(await self._recognize(data, started=time.perf_counter()))
        prominent = recognition.products[0]  # largest first; never empty (whole photo when nothing detected)
        label = prominent.label or prominent.candidates[0].label  # the original always named something
        return HelloAnswer(item=base64.b64encode(label.encode("utf-8")).decode("ascii"))

    @api.post("/v1/recognize", response_model=Recognition, responses=ERRORS, openapi_extra=RECOGNIZE_BODY)
    async def recognize(self, request: Request) -> Recognition:
        """Every product in the photo: box in original pixels, label, confidences, top-k, model versions, timings."""
        started = time.perf_counter()
        async with self.metrics.photo("/v1/recognize") as record:
            data = await read_image(request, ("image", "img"), allow_raw_body=True)
            return record(await self._recognize(data, started))

    @api.get("/v1/labels", response_model=Labels)
    async def labels(self) -> Labels:
        """The labels the classifier can answer, in its output order."""
        labels = self.bundle.labels
        return Labels(count=len(labels), labels=labels, classifier=self.bundle.versions["classifier"])

    @api.get("/healthz", response_model=Health)
    async def liveness(self) -> Health:
        """The ingress is up and serving HTTP."""
        return Health(status="ok")

    @api.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readiness(self) -> JSONResponse:
        """Both model deployments answer: the service can recognize photos."""
        detail = {}
        for name, handle in (("detector", self.detector), ("classifier", self.classifier)):
            try:
                detail[name] = await asyncio.wait_for(handle.ready.remote(), timeout=5)
            except Exception as error:
                detail[name] = f"unavailable: {type(error).__name__}"
        ready = not any(value.startswith("unavailable") for value in detail.values())
        health = Health(status="ok" if ready else "unavailable", detail=detail)
        return JSONResponse(health.model_dump(), status_code=200 if ready else 503)

    async def _recognize(self, data: bytes, started: float) -> Recognition:
        """The photo through the core's loop, with the model deployments as its model calls."""
        read_done = time.perf_counter()
        versions: dict[str, str] = {}

        async def detect(images: list[np.ndarray]) -> list[np.ndarray]:
            detections: list[Detection] = [await self._call("Detector.detect", self.detector.detect, image) for image in images]
            versions["detector"] = detections[0].version
            return [detection.boxes for detection in detections]

        async def classify(photo_crops: list[np.ndarray]) -> np.ndarray:
            classification: Classification = await self._call("Classifier.classify", self.classifier.classify, photo_crops)
            versions["classifier"] = classification.version
            return classification.probabilities

        (recognized,), times = await self.photo_to_answer([data], detect, classify, decode_slots=self.decode_slots)
        photo, whole_photo = recognized.photo, not recognized.detected
        products = []
        for index, result in enumerate(recognized.answers):
            if whole_photo:
                box, detector_confidence = Box(x1=0, y1=0, x2=photo.original_size[0], y2=photo.original_size[1]), None
            else:
                box, detector_confidence = self._original_box(recognized.boxes[index, :4], photo), float(recognized.boxes[index, 4])
            candidates = [Candidate(label=label, confidence=min(1.0, confidence)) for label, confidence in result.candidates]
            known = result.known
            products.append(Product(
                box=box,
                source="whole_photo" if whole_photo else "detector",
                detector_confidence=detector_confidence,
                known=known,
                label=candidates[0].label if known else None,
                fields=LabelFields(**parse_label(candidates[0].label)) if known else None,
                confidence=candidates[0].confidence,
                candidates=candidates,
            ))
        milliseconds = lambda seconds: round(seconds * 1000, 2)  # noqa: E731
        return Recognition(
            photo=PhotoInfo(width=photo.original_size[0], height=photo.original_size[1], format=photo.format),
            whole_photo=whole_photo,
            products=products,
            models=ModelVersions(**versions),
            timings=Timings(
                read_ms=milliseconds(read_done - started),
                decode_ms=milliseconds(times.decode),
                detect_ms=milliseconds(times.detect),
                crop_ms=milliseconds(times.crop),
                classify_ms=milliseconds(times.classify),
                total_ms=milliseconds(time.perf_counter() - started),
            ),
        )

    @staticmethod
    def _original_box(box: np.ndarray, photo: Photo) -> Box:
        width, height = photo.original_size
        x1, y1, x2, y2 = (float(v) * photo.scale for v in box)
        return Box(x1=max(0.0, x1), y1=max(0.0, y1), x2=min(float(width), x2), y2=min(float(height), y2))

    @staticmethod
    async def _call(name: str, method, *args):
        """A model deployment call; overload and a lost replica become 503s with a JSON body, never a hang.

        A replica that dies under the call (RayActorError: killed, crashed, its node lost) is retried once:
        model calls are pure, and the router sends the retry to a live replica or holds it until Serve has
        started the replacement, so a replica loss costs the caller seconds, not its answer; the wait is bounded
        by MODEL_CALL_TIMEOUT_S. Any other exception is the deployment's code failing on these arguments (a
        bug): it propagates and answers 500.
        """
        async def answer() -> Any:
            try:
                return await method.remote(*args)
            except REPLICA_LOST as error:
                logger.warning("model call %s lost its replica (%s); retrying once", name, type(error).__name__)
                return await method.remote(*args)

        try:
            return await asyncio.wait_for(answer(), MODEL_CALL_TIMEOUT_S)  # on timeout the request is cancelled
        except TimeoutError:
            logger.error("model call %s got no answer in %.0f s", name, MODEL_CALL_TIMEOUT_S)
            raise ServiceError(503, "model_unavailable", f"a model deployment did not answer within {MODEL_CALL_TIMEOUT_S:.0f} s") from None
        except BackPressureError:
            raise ServiceError(503, "overloaded", "the service is at capacity; retry shortly") from None
        except (*REPLICA_LOST, DeploymentUnavailableError) as error:
            logger.error("model call %s failed twice: %s", name, type(error).__name__)
            raise ServiceError(503, "model_unavailable", f"a model deployment is unavailable: {type(error).__name__}") from None
