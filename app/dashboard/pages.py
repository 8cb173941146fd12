"""The dashboard's pages under ``/ui`` and its static files under ``/ui/static``.

Pages are plain HTML (``pages/``) with ES-module scripts and one stylesheet (``static/``), no build step
and nothing from another site: a Content-Security-Policy of ``'self'`` makes the browser refuse
anything else. A page learns where the API is from its ``<meta name="api-root">`` (the ASGI root path,
so the dashboard works behind a proxy prefix) and resolves its static files against ``<base>``.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).parent
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")


def mount_pages(app: FastAPI) -> None:
    """Add ``/ui`` (results of every batch), ``/ui/batches/{id}`` (one batch), ``/ui/screenings/{id}`` (one
    structure; the permalinks of :mod:`elfscreen.app.links`) and ``/ui/parity`` (the DFT-verified structures:
    the model against DFT)."""
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.get("/ui", include_in_schema=False)
    def overview(request: Request) -> HTMLResponse:
        return _page(request, "overview.html")

    @app.get("/ui/batches/{batch_id}", include_in_schema=False)
    def batch(request: Request, batch_id: str) -> HTMLResponse:
        return _page(request, "overview.html")

    @app.get("/ui/screenings/{job_id}", include_in_schema=False)
    def structure(request: Request, job_id: str) -> HTMLResponse:
        return _page(request, "structure.html")

    @app.get("/ui/parity", include_in_schema=False)
    def parity(request: Request) -> HTMLResponse:
        return _page(request, "parity.html")


def _page(request: Request, name: str) -> HTMLResponse:
    html = (HERE / "pages" / name).read_text(encoding="utf-8").replace("{{root}}", request.scope.get("root_path", ""))
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})
