"""/docs that still says something offline.

FastAPI's Swagger UI page is blank without the internet: its JavaScript and CSS come from a CDN, and no package
in the environment ships them. This page lists every endpoint from the app's own OpenAPI schema as plain HTML,
then turns into Swagger UI when the browser can fetch it; /openapi.json stays the machine-readable contract.
"""

from __future__ import annotations

import html
import json

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

SWAGGER_CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
"""Where Swagger UI comes from when the browser reaches it (FastAPI's own default)."""

METHODS = ("get", "post", "put", "patch", "delete")


def endpoint_list(schema: dict) -> str:
    """The schema's operations as HTML: method, path, summary, request media types and answer statuses."""
    items = []
    for path, operations in schema.get("paths", {}).items():
        for method in METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            media = ", ".join(operation.get("requestBody", {}).get("content", {})) or "-"
            statuses = ", ".join(f"{code} {answer.get('description', '')}" for code, answer in operation.get("responses", {}).items())
            items.append(
                f"<li><b>{method.upper()} {html.escape(path)}</b>: {html.escape(operation.get('summary', ''))}"
                f"<br>{html.escape(operation.get('description', ''))}"
                f"<br><small>body: {html.escape(media)}; answers: {html.escape(statuses)}</small></li>"
            )
    return "<ul>" + "\n".join(items) + "</ul>"


def add_docs(app: FastAPI, path: str = "/docs") -> None:
    """Serve the offline-safe docs page at `path` (build the app with docs_url=None)."""

    @app.get(path, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        schema = request.app.openapi()
        openapi_url = request.scope.get("root_path", "") + (request.app.openapi_url or "/openapi.json")
        title = html.escape(schema["info"]["title"])
        return HTMLResponse(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{SWAGGER_CDN}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<main id="offline"><h1>{title} {html.escape(schema["info"]["version"])}</h1>
<p>{html.escape(schema["info"].get("description", ""))}</p>
<p>The OpenAPI schema: <a href="{html.escape(openapi_url)}">{html.escape(openapi_url)}</a>.
This list is what the schema says; the interactive Swagger UI appears here when the browser can reach {SWAGGER_CDN}.</p>
{endpoint_list(schema)}</main>
<script src="{SWAGGER_CDN}/swagger-ui-bundle.js"></script>
<script>
if (window.SwaggerUIBundle) {{
  document.getElementById("offline").remove();
  SwaggerUIBundle({{url: {json.dumps(openapi_url)}, dom_id: "#swagger-ui"}});
}}
</script></body></html>""")
