"""The ingress's calls to the Catalog deployment, mixed into the Recognizer, whose /v1/catalog/* routes use them,
and those routes' OpenAPI bodies.

Reads go to the Catalog deployment; writes need the admin key (deployments/catalog/http_side.py) and are checked
before their body is read. A Catalog that does not answer makes writes 503 `catalog_unavailable` with
Retry-After, at once (deployments/calls.py says which failures mean that; any other is a bug, a 500): recognition
does not need it (each ingress replica matches against its own copy). The 503
says whether the write was applied: `"applied": false` when the Catalog was gone before it was sent, `"unknown"`
when it went away under the write (the store commits each write whole or not at all, but the answer can be lost
after the commit): the client reads the catalog to see which before it retries.

The routes themselves are declared on the Recognizer class: Serve's class-based view rewrites each route
function's signature in the process that imports the ingress module, and a replica unpickles the ingress class by
value, so a route inherited from another importable module would reach the replica without that rewrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve.handle import DeploymentHandle

from deployments.calls import call
from deployments.catalog.http_side import MAX_PHOTOS, answered
from deployments.errors import ServiceError
from deployments.schemas import ErrorBody
from deployments.uploads import MAX_IMAGE_BYTES

READ_TIMEOUT_S = 5.0
"""A read the Catalog does not answer in this long answers 503: it is down or restarting."""

REACHABLE_TIMEOUT_S = 2.0
"""Before a write, the Catalog must answer a ping this fast; a write is never started on a Catalog that is gone."""

WRITE_TIMEOUT_S = 120.0
"""An enrollment embeds up to 20 photos with the models: under load that takes seconds, never minutes."""

UI_PAGE = Path(__file__).with_name("ui.html")
UI_SCRIPTS = {"page.js": Path(__file__).with_name("ui.js"), "changes.js": Path(__file__).with_name("ui_changes.js")}
"""The page's scripts, by the name the page loads them under (/ui/<name>): the page's own origin, as its CSP wants."""

READ = ServiceError(503, "catalog_unavailable", "the catalog is unavailable; recognition goes on, retry shortly")
NOT_SENT = ServiceError(503, "catalog_unavailable", "the catalog is unavailable, so the write was not sent; recognition "
                        "goes on, retry the write shortly", {"applied": False})
IN_FLIGHT = ServiceError(503, "catalog_unavailable", "the catalog went away during the write, which is applied whole or "
                         "not at all: read the catalog (GET /v1/catalog/products/{sku}, /v1/catalog) to see which "
                         "before you retry", {"applied": "unknown"})
"""The 503s of a read, of a write never sent (the Catalog did not answer its ping) and of a write in flight."""

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 403, 404, 409, 413, 415, 422, 503)}
READ_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (404, 422, 503)}

_PHOTO = {"type": "string", "format": "binary", "minLength": 1, "maxLength": MAX_IMAGE_BYTES}
_PHOTOS = {"type": "array", "items": _PHOTO, "minItems": 1, "maxItems": MAX_PHOTOS,
           "description": f"1-{MAX_PHOTOS} photos of the product, each its own 'photo' part"}
ENROLL_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["sku", "label", "photo"],
    "properties": {"sku": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                   "label": {"type": "string", "minLength": 1, "maxLength": 200}, "photo": _PHOTOS,
                   "replace": {"type": "string", "enum": ["true", "false"], "default": "false",
                               "description": "true: an enrolled sku's label and photos are replaced; without it, "
                                              "enrolling an enrolled sku answers 409 sku_exists"}}}}}}}
PRECEDENCE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["over"], "additionalProperties": False,
    "properties": {"over": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200},
                            "description": "the serving classifier's trained class labels (GET /v1/labels) the product "
                                           "takes precedence over in this store, in place of those it had; [] for none"}}}}}}}
ADD_PHOTOS_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["photo"], "properties": {"photo": _PHOTOS}}}}}}


class CatalogCalls:
    """The Catalog deployment's handle (None: no catalog) and how the routes call it."""

    catalog: DeploymentHandle | None

    # ------------------------------------------------------------ calls to the Catalog

    def _catalog(self) -> DeploymentHandle:
        if self.catalog is None:
            raise ServiceError(503, "catalog_unavailable", "this service runs without a catalog")
        return self.catalog

    async def _reachable_catalog(self) -> DeploymentHandle:
        catalog = self._catalog()
        await self._answer(catalog, "ready", (), REACHABLE_TIMEOUT_S, NOT_SENT)
        return catalog

    async def _read(self, method: str, *args: Any) -> Any:
        return answered(await self._answer(self._catalog(), method, args, READ_TIMEOUT_S, READ))

    async def _write(self, method: str, *args: Any) -> dict:
        """A write, sent only to a Catalog that has just answered its ping."""
        catalog = await self._reachable_catalog()
        return answered(await self._answer(catalog, method, args, WRITE_TIMEOUT_S, IN_FLIGHT))

    @staticmethod
    async def _answer(catalog: DeploymentHandle, method: str, args: tuple, timeout_s: float, lost: ServiceError) -> Any:
        """A Catalog call's answer within `timeout_s` (deployments/calls.py), never retried: a write lost with its
        replica may have been applied. The Catalog gone, restarting or overloaded is `lost`, a 503."""

        def failed(error: BaseException) -> ServiceError:
            return ServiceError(lost.status, lost.code, lost.message, lost.detail)

        return await call(f"Catalog.{method}", getattr(catalog, method), *args, timeout_s=timeout_s, failed=failed,
                          retry_lost=False)
