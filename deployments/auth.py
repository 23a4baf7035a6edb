"""The optional API key, checked as ASGI middleware in front of every route."""

from __future__ import annotations

import hmac
import os

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.errors import error_response

API_KEY_ENV = "PRODUCT_API_KEY"
"""Optional shared secret. Set (non-empty) in the replicas' environment, every request but the health checks
must carry it, as `X-API-Key: <key>` or `Authorization: Bearer <key>`; unset (the default), nothing is asked,
as the original client sends no key."""

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered without the API key: load balancers and orchestrators probe them with none."""


class ApiKeyCheck:
    """ASGI middleware: without the configured key, 401 JSON `unauthorized` before any route runs, so unknown
    paths, /docs and /openapi.json are covered too. Off while API_KEY_ENV is unset or empty; read per request,
    so the environment is the one switch."""

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
        offered = [headers.get("x-api-key", ""), authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""]
        # Either header may carry it: a catalog write sends the API key as X-API-Key and the admin key as Bearer.
        return any(hmac.compare_digest(value.encode(), key.encode()) for value in offered if value)
