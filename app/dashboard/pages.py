"""The dashboard's pages under ``/ui`` and its static files under ``/ui/static``.

Pages are plain HTML (``pages/``: each page's ``<main>`` inside the shared ``layout.html``, which holds the
head, the navigation bar and the API-key form) with ES-module scripts and one stylesheet (``static/``), no
build step and nothing from another site: a Content-Security-Policy of ``'self'`` makes the browser refuse
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
        return _page(request, "overview")

    @app.get("/ui/batches/{batch_id}", include_in_schema=False)
    def batch(request: Request, batch_id: str) -> HTMLResponse:
        return _page(request, "overview")

    @app.get("/ui/screenings/{job_id}", include_in_schema=False)
    def structure(request: Request, job_id: str) -> HTMLResponse:
        return _page(request, "structure")

    @app.get("/ui/parity", include_in_schema=False)
    def parity(request: Request) -> HTMLResponse:
        return _page(request, "parity")


# page → (title, script, extra navigation links after "All results")
PAGES = {
    "overview": ("results", "overview.js", ""),
    "structure": ("structure", "structure.js", '<a id="batch-nav" href="{{root}}/ui">Batch</a> '),
    "parity": ("ML vs DFT", "parity.js", ""),
}


def _page(request: Request, name: str) -> HTMLResponse:
    title, script, nav = PAGES[name]
    html = ((HERE / "pages" / "layout.html").read_text(encoding="utf-8")
            .replace("{{title}}", title).replace("{{script}}", script).replace("{{nav}}", nav)
            .replace("{{content}}", (HERE / "pages" / f"{name}.html").read_text(encoding="utf-8").rstrip("\n"))
            .replace("{{root}}", request.scope.get("root_path", "")))
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})
