"""The catalog's routes, mixed into the Recognizer (the ingress): /v1/catalog/* and the operator page /ui.

Reads go to the Catalog deployment; writes need the admin key (deployments/catalog_http.py) and are checked
before their body is read. A Catalog that does not answer makes writes 503 `catalog_unavailable` with
Retry-After, at once: recognition does not need it (each ingress replica matches against its own copy).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.catalog_http import MAX_PHOTOS, admin_actor, answered, read_enrollment
from deployments.errors import ServiceError
from deployments.schemas import CatalogInfo, CatalogProduct, CatalogProducts, CatalogWrite, Enrollment, ErrorBody, Rollback
from deployments.uploads import MAX_IMAGE_BYTES

logger = logging.getLogger("ray.serve")

router = APIRouter()

READ_TIMEOUT_S = 5.0
"""A read the Catalog does not answer in this long answers 503: it is down or restarting."""

REACHABLE_TIMEOUT_S = 2.0
"""Before a write, the Catalog must answer a ping this fast; a write is never started on a Catalog that is gone."""

WRITE_TIMEOUT_S = 120.0
"""An enrollment embeds up to 20 photos with the models: under load that takes seconds, never minutes."""

UI_PAGE = Path(__file__).with_name("ui.html")

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 403, 404, 409, 413, 415, 422, 503)}
READ_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (404, 422, 503)}

_PHOTO = {"type": "string", "format": "binary", "minLength": 1, "maxLength": MAX_IMAGE_BYTES}
_PHOTOS = {"type": "array", "items": _PHOTO, "minItems": 1, "maxItems": MAX_PHOTOS,
           "description": f"1-{MAX_PHOTOS} photos of the product, each its own 'photo' part"}
ENROLL_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["sku", "label", "photo"],
    "properties": {"sku": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                   "label": {"type": "string", "minLength": 1, "maxLength": 200}, "photo": _PHOTOS}}}}}}
ADD_PHOTOS_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["photo"], "properties": {"photo": _PHOTOS}}}}}}


class CatalogRoutes:
    """Routes of the ingress that need only `self.catalog`, the Catalog deployment's handle (None: no catalog)."""

    catalog: DeploymentHandle | None

    @router.post("/v1/catalog/products", status_code=201, response_model=Enrollment, responses=WRITE_ERRORS,
                 openapi_extra=ENROLL_BODY, tags=["catalog"])
    async def enroll_product(self, request: Request) -> Enrollment:
        """Enroll a product from 1-20 photos (admin): recognised by every replica within a second. Re-enrolling a
        sku replaces its photos. Each photo is accepted or rejected with the reason."""
        actor = admin_actor(request)
        enrollment = await read_enrollment(request, with_product=True)
        catalog = await self._reachable_catalog()
        result = await self._write(catalog.enroll.remote(enrollment.sku, enrollment.label, enrollment.photos, actor),
                                   enrollment.too_large)
        return Enrollment(**result)

    @router.post("/v1/catalog/products/{sku}/photos", response_model=Enrollment, responses=WRITE_ERRORS,
                 openapi_extra=ADD_PHOTOS_BODY, tags=["catalog"])
    async def add_product_photos(self, sku: str, request: Request) -> Enrollment:
        """Add photos to an enrolled product (admin), as a new catalog version."""
        actor = admin_actor(request)
        enrollment = await read_enrollment(request, with_product=False)
        catalog = await self._reachable_catalog()
        return Enrollment(**await self._write(catalog.add_photos.remote(sku, enrollment.photos, actor), enrollment.too_large))

    @router.delete("/v1/catalog/products/{sku}", response_model=CatalogWrite, responses=WRITE_ERRORS,
                   tags=["catalog"])
    async def delete_product(self, sku: str, request: Request) -> CatalogWrite:
        """Remove a product from the catalog (admin); its history stays, for rollback and the audit log."""
        actor = admin_actor(request)
        catalog = await self._reachable_catalog()
        return CatalogWrite(**await self._write(catalog.delete.remote(sku, actor)))

    @router.post("/v1/catalog/rollback", response_model=CatalogWrite, responses=WRITE_ERRORS,
                 tags=["catalog"])
    async def rollback_catalog(self, body: Rollback, request: Request) -> CatalogWrite:
        """Make the products of an earlier catalog version current again (admin), as a new version."""
        actor = admin_actor(request)
        catalog = await self._reachable_catalog()
        return CatalogWrite(**await self._write(catalog.rollback.remote(body.version, actor)))

    @router.get("/v1/catalog", response_model=CatalogInfo, responses=READ_ERRORS, tags=["catalog"])
    async def catalog_info(self) -> CatalogInfo:
        """The catalog's version, its counts and the classifier whose embeddings it matches with."""
        return CatalogInfo(**await self._read("info"))

    @router.get("/v1/catalog/products", response_model=CatalogProducts, responses=READ_ERRORS, tags=["catalog"])
    async def list_products(self, offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=200)) -> CatalogProducts:
        """The enrolled products, by sku, a page at a time."""
        return CatalogProducts(**await self._read("products", offset, limit))

    @router.get("/v1/catalog/products/{sku}", response_model=CatalogProduct, responses=READ_ERRORS, tags=["catalog"])
    async def get_product(self, sku: str) -> CatalogProduct:
        """One enrolled product, with the ids of its photos."""
        return CatalogProduct(**await self._read("product", sku))

    @router.get("/v1/catalog/products/{sku}/photos/{photo_id}", responses=READ_ERRORS | {200: {"content": {"image/*": {}}}},
                response_class=Response, tags=["catalog"])
    async def get_product_photo(self, sku: str, photo_id: int) -> Response:
        """A stored photo of an enrolled product, as it was uploaded."""
        data, media_type = await self._read("photo", sku, photo_id)
        return Response(data, media_type=media_type, headers={"X-Content-Type-Options": "nosniff",
                                                              "Cache-Control": "private, max-age=3600"})

    @router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    async def operator_page(self) -> HTMLResponse:
        """The operator page: enroll, list and delete products, try a photo."""
        return HTMLResponse(UI_PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
                                       "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    # ------------------------------------------------------------ calls to the Catalog

    def _catalog(self) -> DeploymentHandle:
        if self.catalog is None:
            raise ServiceError(503, "catalog_unavailable", "this service runs without a catalog")
        return self.catalog

    async def _reachable_catalog(self) -> DeploymentHandle:
        catalog = self._catalog()
        try:
            await asyncio.wait_for(catalog.ready.remote(), REACHABLE_TIMEOUT_S)
        except Exception as error:
            raise self._unavailable(error) from None
        return catalog

    async def _read(self, method: str, *args: Any) -> Any:
        try:
            result = await asyncio.wait_for(getattr(self._catalog(), method).remote(*args), READ_TIMEOUT_S)
        except ServiceError:
            raise
        except Exception as error:
            raise self._unavailable(error) from None
        return answered(result)

    async def _write(self, call: Any, too_large: list[dict] | None = None) -> dict:
        try:
            result = await asyncio.wait_for(call, WRITE_TIMEOUT_S)
        except Exception as error:
            raise self._unavailable(error) from None
        if too_large and hasattr(result, "detail") and result.code == "no_photo_accepted":
            result.detail["rejected"] = sorted(result.detail["rejected"] + too_large, key=lambda r: r["index"])
        result = answered(result)
        if too_large:
            result["rejected"] = sorted(result["rejected"] + too_large, key=lambda r: r["index"])
        return result

    @staticmethod
    def _unavailable(error: Exception) -> ServiceError:
        if not isinstance(error, (TimeoutError, BackPressureError, DeploymentUnavailableError, RayActorError,
                                  ReplicaUnavailableError)):
            logger.error("catalog call failed: %r", error)
            raise error
        logger.warning("catalog unavailable: %s", type(error).__name__)
        return ServiceError(503, "catalog_unavailable", "the catalog is unavailable; recognition goes on, retry the write shortly")
