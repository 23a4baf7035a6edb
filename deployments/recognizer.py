"""Recognizer: the HTTP ingress. Reads the upload, decodes it once, asks the Detector for boxes, crops every
product from the decoded photo, asks the Classifier to name the crops, and answers JSON.

Decoding and cropping are CPU work done in a thread, so the event loop keeps taking requests; only small
arrays travel to the model deployments: the photo letterboxed to the detector's input (~150 KB), crops at the
classifier's input size.

The routes and that orchestration are here; the app they are mounted on (offline /docs, JSON errors, the API
key, the OpenAPI request bodies) is built in deployments/api.py.
"""

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.api import ERRORS, MULTIPART_BODY, RECOGNIZE_BODY, make_api
from deployments.auth import API_KEY_ENV
from deployments.calls import MODEL_CALL_TIMEOUT_S, call
from deployments.catalog.calls import (
    ADD_PHOTOS_BODY,
    ENROLL_BODY,
    PRECEDENCE_BODY,
    READ_ERRORS,
    UI_PAGE,
    UI_SCRIPTS,
    WRITE_ERRORS,
    CatalogCalls,
)
from deployments.catalog.http_side import admin_actor, read_enrollment, read_precedence
from deployments.catalog.ingress_copy import CatalogCopy
from deployments.errors import ServiceError, error_outcome
from deployments.metrics import RecognizerMetrics
from deployments.payloads import Classification, Detection, row_slices
from deployments.schemas import (
    Box,
    Candidate,
    CatalogHistory,
    CatalogInfo,
    CatalogProduct,
    CatalogProducts,
    CatalogWrite,
    Enrollment,
    Health,
    HelloAnswer,
    LabelFields,
    Labels,
    ModelVersions,
    PhotoInfo,
    PrecedenceWrite,
    Product,
    Recognition,
    Rollback,
    Timings,
)
from deployments.uploads import read_image
from pipeline.core.catalog.match import CatalogIndex, CatalogMatch, embedding_space, gallery_index
from pipeline.core.catalog.rule import GALLERY_CLASSES
from pipeline.core.loop_modes import EVERY_PRODUCT, HELLO, LoopMode
from pipeline.core.model_label import load_model_label, parse_label
from pipeline.core.photo_to_answer import Classified, ModelFacts, PhotoToAnswer
from pipeline.core.preprocessing import DECODE_PEAK_BYTES, Photo
from pipeline.core.settings import RecognizerSettings

logger = logging.getLogger("ray.serve")

DECODE_MEMORY_BUDGET_BYTES = 2 * 1024**3
"""What one ingress replica may spend on decoding photos at once, on top of its own footprint."""

DECODE_SLOTS = max(1, DECODE_MEMORY_BUDGET_BYTES // DECODE_PEAK_BYTES)
"""Concurrent decodes per replica: the budget over one decode's worst case (a 50 MP photo of the costliest
format), so a burst of hostile photos cannot take a replica past it; other requests wait their turn."""

GATHERED_CALLS = 16
"""Gathered calls one replica keeps in flight to each model deployment: as many as it holds requests
(max_ongoing_requests), so gathering never caps how many calls are in flight. With one at a time (serve.batch's
default) the Classifier's queue, which its autoscaling reads in calls, never reached its target under a peak and
the elastic run never grew it onto a worker node; with 4, /hello ran at 0.60x a call per request."""


def model_unavailable(error: BaseException) -> ServiceError:
    """What the ingress answers when a model deployment did not answer: 503 with Retry-After (errors.py),
    `overloaded` when its queue was full, else `model_unavailable` (gone, or past MODEL_CALL_TIMEOUT_S)."""
    if isinstance(error, BackPressureError):
        return ServiceError(503, "overloaded", "the service is at capacity; retry shortly")
    if isinstance(error, TimeoutError):
        return ServiceError(503, "model_unavailable", f"a model deployment did not answer within {MODEL_CALL_TIMEOUT_S:.0f} s")
    return ServiceError(503, "model_unavailable", f"a model deployment is unavailable: {type(error).__name__}")


api = make_api()  # the routes below are added to it before @serve.ingress freezes it


@serve.deployment
@serve.ingress(api)
class Recognizer(CatalogCalls):
    def __init__(self, detector: DeploymentHandle, classifier: DeploymentHandle, model_dir: str | None = None,
                 classifier_runtime: str = "savedmodel", catalog: DeploymentHandle | None = None) -> None:
        self.detector = detector
        self.classifier = classifier
        self.catalog = catalog
        # Checksums are verified by the model deployments; here only labels, sizes and thresholds are needed.
        self.bundle = load_model_label(model_dir, verify_checksums=False)
        self.classifier_runtime = classifier_runtime  # whose calibrated unknown threshold applies
        self.photo_to_answer = PhotoToAnswer(ModelFacts.of(self.bundle, classifier_runtime), RecognizerSettings())
        gather = serve.batch(max_batch_size=RecognizerSettings.gather_max_photos,
                             batch_wait_timeout_s=RecognizerSettings.gather_wait_s, max_concurrent_batches=GATHERED_CALLS)
        self._detect_gathered = gather(self._detect_all)  # each call of `gather` makes its own queue
        self._classify_gathered = gather(self._classify_all)
        space = embedding_space(self.bundle.versions["classifier"], self.bundle.whole_photo_share)
        self.catalog_copy = CatalogCopy(catalog, space)  # what crops are matched with
        gallery = self.bundle.gallery_path  # the classifier's training photos, for the rules that compare with them
        wanted = catalog is not None and self.bundle.catalog_rule.needs_gallery
        self.gallery = gallery_index(gallery, self.bundle.versions["classifier"], self.bundle.labels) if gallery and wanted else None
        self.decode_slots = asyncio.Semaphore(DECODE_SLOTS)  # bounds this replica's decode memory
        self.metrics = RecognizerMetrics(error_outcome)
        logger.info("Recognizer: %d concurrent decodes; API key %s", DECODE_SLOTS,
                    "required" if os.environ.get(API_KEY_ENV) else f"off ({API_KEY_ENV} unset)")

    def reconfigure(self, user_config: dict) -> None:
        """Apply new photo, crop, answer and gathering settings without a restart (serve_config.yaml user_config)."""
        settings = RecognizerSettings.from_config(user_config)
        self.photo_to_answer = PhotoToAnswer(ModelFacts.of(self.bundle, self.classifier_runtime), settings)
        for gathered in (self._detect_gathered, self._classify_gathered):
            batching: Any = gathered  # @serve.batch's wrapper has these setters; Ray annotates it as a plain callable
            batching.set_max_batch_size(settings.gather_max_photos)
            batching.set_batch_wait_timeout_s(settings.gather_wait_s)
        logger.info("Recognizer settings: %s", self.photo_to_answer.settings)

    @api.post("/hello", response_model=HelloAnswer, responses=ERRORS, openapi_extra=MULTIPART_BODY)
    async def hello(self, request: Request) -> HelloAnswer:
        """The original client's call: multipart part `img`; answers the most prominent product's label, base64.

        Only what the answer reads is computed: the largest product (and the whole photo, when the policy looks at
        it), and under the whole-photo policy with no product enrolled the whole photo alone, without asking the
        detector: its boxes would change no answer, so they would be CPU spent on nothing."""
        async with self.metrics.photo("/hello") as record:
            data = await read_image(request, ("img",), allow_raw_body=False)
            recognition = record(*await self._recognize(data, started=time.perf_counter(), mode=HELLO))
        prominent = recognition.products[0]  # largest first; never empty (whole photo when nothing detected)
        label = prominent.label or prominent.candidates[0].label  # the original always named something
        return HelloAnswer(item=base64.b64encode(label.encode("utf-8")).decode("ascii"))

    @api.post("/v1/recognize", response_model=Recognition, responses=ERRORS, openapi_extra=RECOGNIZE_BODY)
    async def recognize(self, request: Request) -> Recognition:
        """Every product in the photo: box in original pixels, label, confidences, top-k, model versions, timings."""
        started = time.perf_counter()
        async with self.metrics.photo("/v1/recognize") as record:
            data = await read_image(request, ("image", "img"), allow_raw_body=True)
            return record(*await self._recognize(data, started, mode=EVERY_PRODUCT))

    @api.get("/v1/labels", response_model=Labels)
    async def labels(self) -> Labels:
        """The labels the classifier can answer, in its output order."""
        labels = self.bundle.labels
        return Labels(count=len(labels), labels=labels, classifier=self.bundle.versions["classifier"])

    async def check_health(self) -> None:
        """Serve's periodic health check; also starts following the catalog, so an idle replica is current too, and
        keeps its in-flight gauges exported while idle."""
        self.catalog_copy.follow()
        self.metrics.refresh()

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
        if self.catalog is not None:  # told, not required: recognition goes on from this replica's copy without it
            copy = f"this replica matches with version {self.catalog_copy.version}"
            try:
                detail["catalog"] = f"{await asyncio.wait_for(self.catalog.ready.remote(), timeout=2)}; {copy}"
            except Exception as error:
                detail["catalog"] = f"unavailable: {type(error).__name__}; {copy}"
        health = Health(status="ok" if ready else "unavailable", detail=detail)
        return JSONResponse(health.model_dump(), status_code=200 if ready else 503)

    # ------------------------------------------------------------ the catalog (deployments/catalog/calls.py)

    @api.post("/v1/catalog/products", status_code=201, response_model=Enrollment, responses=WRITE_ERRORS,
                 openapi_extra=ENROLL_BODY, tags=["catalog"])
    async def enroll_product(self, request: Request) -> Enrollment:
        """Enroll a product from 1-20 photos (admin): recognised by every replica within a second. An enrolled sku
        answers 409 `sku_exists` unless the form says `replace=true`: then its label and photos are replaced. Each
        photo is accepted or rejected with the reason."""
        actor = admin_actor(request)
        enrollment = await read_enrollment(request, with_product=True)
        result = await self._write("enroll", enrollment.sku, enrollment.label, enrollment.photos, actor,
                                   enrollment.too_large, self.photo_to_answer.settings, enrollment.replace)
        return Enrollment(**result)

    @api.post("/v1/catalog/products/{sku}/photos", response_model=Enrollment, responses=WRITE_ERRORS,
                 openapi_extra=ADD_PHOTOS_BODY, tags=["catalog"])
    async def add_product_photos(self, sku: str, request: Request) -> Enrollment:
        """Add photos to an enrolled product (admin), as a new catalog version."""
        actor = admin_actor(request)
        enrollment = await read_enrollment(request, with_product=False)
        return Enrollment(**await self._write("add_photos", sku, enrollment.photos, actor, enrollment.too_large,
                                              self.photo_to_answer.settings))

    @api.delete("/v1/catalog/products/{sku}/photos/{photo_id}", response_model=CatalogWrite, responses=WRITE_ERRORS,
                   tags=["catalog"])
    async def remove_product_photo(self, sku: str, photo_id: int, request: Request) -> CatalogWrite:
        """Remove one photo of a product (admin), as a new version; its only photo answers 409 `last_photo`
        (delete the product instead)."""
        actor = admin_actor(request)
        return CatalogWrite(**await self._write("remove_photo", sku, photo_id, actor))

    @api.delete("/v1/catalog/products/{sku}", response_model=CatalogWrite, responses=WRITE_ERRORS,
                   tags=["catalog"])
    async def delete_product(self, sku: str, request: Request) -> CatalogWrite:
        """Remove a product from the catalog (admin); its history stays, for rollback and the audit log."""
        actor = admin_actor(request)
        return CatalogWrite(**await self._write("delete", sku, actor))

    @api.put("/v1/catalog/products/{sku}/precedence", response_model=PrecedenceWrite, responses=WRITE_ERRORS,
                openapi_extra=PRECEDENCE_BODY, tags=["catalog"])
    async def set_product_precedence(self, sku: str, request: Request) -> PrecedenceWrite:
        """Say which trained classes the product takes precedence over in this store (admin), in place of those it
        had (`[]`: none), as a new version: for a crop whose nearest enrolled product is this one, the classifier's
        answers of those classes are set aside. 422 `unknown_class` names the labels the classifier was not trained on."""
        actor = admin_actor(request)
        return PrecedenceWrite(**await self._write("set_precedence", sku, await read_precedence(request), actor))

    @api.post("/v1/catalog/rollback", response_model=CatalogWrite, responses=WRITE_ERRORS,
                 tags=["catalog"])
    async def rollback_catalog(self, body: Rollback, request: Request) -> CatalogWrite:
        """Make the products of an earlier catalog version current again (admin), as a new version."""
        actor = admin_actor(request)
        return CatalogWrite(**await self._write("rollback", body.version, actor))

    @api.get("/v1/catalog", response_model=CatalogInfo, responses=READ_ERRORS, tags=["catalog"])
    async def catalog_info(self) -> CatalogInfo:
        """The catalog's version, its counts and the classifier whose embeddings it matches with."""
        return CatalogInfo(**await self._read("info"))

    @api.get("/v1/catalog/history", response_model=CatalogHistory, responses=READ_ERRORS, tags=["catalog"])
    async def catalog_history(self, offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=200)) -> CatalogHistory:
        """The catalog's versions, newest first, a page at a time: what each write changed, who and when."""
        return CatalogHistory(**await self._read("history", offset, limit))

    @api.get("/v1/catalog/products", response_model=CatalogProducts, responses=READ_ERRORS, tags=["catalog"])
    async def list_products(self, offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=200)) -> CatalogProducts:
        """The enrolled products, by sku, a page at a time."""
        return CatalogProducts(**await self._read("products", offset, limit))

    @api.get("/v1/catalog/products/{sku}", response_model=CatalogProduct, responses=READ_ERRORS, tags=["catalog"])
    async def get_product(self, sku: str) -> CatalogProduct:
        """One enrolled product, with the ids of its photos."""
        return CatalogProduct(**await self._read("product", sku))

    @api.get("/v1/catalog/products/{sku}/photos/{photo_id}", responses=READ_ERRORS | {200: {"content": {"image/*": {}}}},
                response_class=Response, tags=["catalog"])
    async def get_product_photo(self, sku: str, photo_id: int) -> Response:
        """A stored photo of an enrolled product, as it was uploaded."""
        data, media_type = await self._read("photo", sku, photo_id)
        return Response(data, media_type=media_type, headers={"X-Content-Type-Options": "nosniff",
                                                              "Cache-Control": "private, max-age=3600"})

    @api.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    async def operator_page(self) -> HTMLResponse:
        """The operator page: enroll, list and change products, the catalog's history, try a photo."""
        return HTMLResponse(UI_PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
                                       "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    @api.get("/ui/{name}", include_in_schema=False)
    async def operator_page_script(self, name: str) -> Response:
        """The operator page's scripts (deployments/catalog/ui.js, ui_changes.js)."""
        if name not in UI_SCRIPTS:
            raise ServiceError(404, "not_found", f"no page script {name!r}")
        return Response(UI_SCRIPTS[name].read_text(encoding="utf-8"), media_type="text/javascript",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    def _gallery_neighbours(self, catalog: CatalogIndex) -> Callable[[np.ndarray], list[list[CatalogMatch]]]:
        """Each crop's nearest training photo per class, for the catalog rule: GALLERY_CLASSES classes when a product
        of `catalog` takes precedence over some (the nearest class not set aside must be among them), else the nearest
        alone, all the rule weighs (a fifth of the search's time: the recognition's hot path)."""
        gallery, classes = self.gallery, GALLERY_CLASSES if catalog.snapshot.precedence else 1
        assert gallery is not None
        return lambda embeddings: gallery.top(embeddings, classes)

    async def _recognize(self, data: bytes, started: float, mode: LoopMode) -> tuple[Recognition, dict[str, float]]:
        """The photo through the core's loop in `mode` (pipeline.core.loop_modes), with the model deployments as its
        model calls; and the seconds of each stage that ran, for the metrics (the answer's timings say 0 ms for a
        stage that did not run)."""
        read_done = time.perf_counter()
        versions = {"detector": self.bundle.versions["detector"]}  # the Detector's own, once it is asked

        async def detect(images: list[np.ndarray]) -> list[np.ndarray]:
            detections: list[Detection] = await asyncio.gather(*(self._detect_gathered(image) for image in images))
            versions["detector"] = detections[0].version
            return [detection.boxes for detection in detections]

        async def classify(photo_crops: list[np.ndarray]) -> Classified:
            classification: Classification = await self._classify_gathered(photo_crops)
            versions["classifier"] = classification.version
            return Classified(classification.probabilities, classification.embeddings)

        catalog = await self.catalog_copy.current()  # this replica's copy: never waits on the Catalog deployment
        matching = catalog if catalog is not None and not catalog.empty else None  # an empty one names nothing: no search
        (recognized,), times = await self.photo_to_answer(
            [data], detect, classify, mode, decode_slots=self.decode_slots,
            match=matching.best if matching else None,
            reference=self._gallery_neighbours(matching) if self.gallery and matching else None,
            precedence=matching.snapshot.precedence if matching else None)
        photo, whole_photo = recognized.photo, not recognized.detected
        products = []
        for index, result in enumerate(recognized.answers):
            if whole_photo:
                box, detector_confidence = Box(x1=0, y1=0, x2=photo.original_size[0], y2=photo.original_size[1]), None
            else:
                box, detector_confidence = self._original_box(recognized.boxes[index, :4], photo), float(recognized.boxes[index, 4])
            candidates = [Candidate(label=label, confidence=min(1.0, confidence)) for label, confidence in result.candidates]
            known = result.known or result.by_catalog
            products.append(Product(
                box=box,
                source="whole_photo" if whole_photo else "detector",
                detector_confidence=detector_confidence,
                known=known,
                label=result.label if known else None,
                fields=LabelFields(**parse_label(result.label)) if known else None,
                confidence=candidates[0].confidence,
                candidates=candidates,
                label_source="catalog" if result.by_catalog else "model",
                sku=result.match.sku if result.by_catalog and result.match else None,
                similarity=round(result.match.similarity, 4) if result.match else None,
            ))
        seconds = {"read": read_done - started, "decode": times.decode, "detect": times.detect, "crop": times.crop,
                   "classify": times.classify, "total": time.perf_counter() - started}
        milliseconds = {f"{stage}_ms": round(value * 1000, 2) for stage, value in seconds.items()}
        if not times.detector_asked:
            del seconds["detect"]
        return Recognition(
            photo=PhotoInfo(width=photo.original_size[0], height=photo.original_size[1], format=photo.format),
            whole_photo=whole_photo,
            products=products,
            models=ModelVersions(**versions, catalog=catalog.version if catalog else None),
            timings=Timings(**milliseconds),
        ), seconds

    @staticmethod
    def _original_box(box: np.ndarray, photo: Photo) -> Box:
        width, height = photo.original_size
        x1, y1, x2, y2 = (float(v) * photo.scale for v in box)
        return Box(x1=max(0.0, x1), y1=max(0.0, y1), x2=min(float(width), x2), y2=min(float(height), y2))

    # ------------------------------------------------------------ the model calls, gathered across requests
    # (self._detect_gathered and self._classify_gathered: these two under @serve.batch, made per replica in __init__,
    # so each replica object, in Serve as in the in-process tests, has its own queue on its own event loop)

    async def _detect_all(self, images: list[np.ndarray]) -> list[Detection]:
        """The detector images of the requests that arrived within gather_wait_s, in one Detector call: Ray's cost of
        a call between deployments (the ingress's largest) is paid once for them, not once a photo."""
        return await self._call("Detector.detect", self.detector.detect, images)

    async def _classify_all(self, crop_lists: list[list[np.ndarray]]) -> list[Classification]:
        """The crops of the requests that arrived within gather_wait_s, in one Classifier call; each request gets
        its own rows back, in its order. A failed call fails the requests it carried, each with the same 503."""
        combined: Classification = await self._call("Classifier.classify", self.classifier.classify,
                                                    [crop for crops in crop_lists for crop in crops])
        return [Classification(probabilities=combined.probabilities[rows], version=combined.version,
                               embeddings=None if combined.embeddings is None else combined.embeddings[rows])
                for rows in row_slices([len(crops) for crops in crop_lists])]

    @staticmethod
    async def _call(name: str, method: DeploymentHandle, *args: Any) -> Any:
        """A model deployment call (deployments/calls.py): a replica lost under it retried once (model calls are
        pure), bounded by MODEL_CALL_TIMEOUT_S; overload and unavailable models become 503s with a JSON body
        (model_unavailable), never a hang. `name` (deployment.method) names the call in the log."""
        return await call(name, method, *args, timeout_s=MODEL_CALL_TIMEOUT_S, failed=model_unavailable)
