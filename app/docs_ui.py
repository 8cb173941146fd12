"""``/docs``: the interactive OpenAPI page (Swagger UI), served offline.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so it is blank without internet (a cluster node, a
laptop on a plane). Here the page, its script and its stylesheet all come from this server: the
Swagger UI 5 assets the ``fastapi-offline`` package ships (MIT; Swagger UI itself is Apache-2.0; 4.x
cannot read FastAPI's OpenAPI 3.1) under ``/docs/static``, and a small start script of our own under
``/docs/init.js``; we use the package's files only, not its app factory. Like the dashboard (``app/dashboard/pages.py``), the
page sends a Content-Security-Policy that allows nothing from another site; Swagger UI needs inline
styles and ``data:`` images, nothing else.
"""
from __future__ import annotations

import html
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = resources.files("fastapi_offline") / "static"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; "
       "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} — API</title>
<meta name="openapi-url" content="{openapi_url}">
<link rel="icon" href="{root}/docs/static/favicon.png">
<link rel="stylesheet" href="{root}/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{root}/docs/static/swagger-ui-bundle.js"></script>
<script src="{root}/docs/init.js"></script>
</body>
</html>
"""

# A file, not an inline script, so that the CSP needs no 'unsafe-inline' for scripts.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: document.querySelector('meta[name="openapi-url"]').content,
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
"""


def add_docs_ui(app: FastAPI) -> None:
    """Serve ``/docs`` from local assets. Create ``app`` with ``docs_url=None`` (FastAPI's CDN page)."""
    app.mount("/docs/static", StaticFiles(directory=str(ASSETS)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy prefix, as the dashboard
        page = PAGE.format(title=html.escape(app.title), root=html.escape(root),
                           openapi_url=html.escape(root + app.openapi_url))
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(INIT_JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"})
