"""The dashboard: browser pages under ``/ui`` served by the API itself, and the ``/v1`` routes they read.

* :mod:`elfscreen.app.dashboard.pages` — the HTML pages and static files (vanilla JS, SVG plots, a canvas 3D view);
* :mod:`elfscreen.app.dashboard.routes` — batches, flat result rows (JSON/CSV), and per job the crystal, an ELF
  slice and an isosurface;
* :mod:`elfscreen.app.dashboard.views` — those three views as JSON, from :mod:`elfscreen.model.isosurface` and :mod:`elfscreen.model.sampling`;
* :mod:`elfscreen.app.dashboard.grids` — the ELF grid of a job: kept, or predicted again on demand, cached in memory;
* :mod:`elfscreen.app.dashboard.queries`, :mod:`elfscreen.app.dashboard.rows` — store reads and the flat row / CSV.
"""
from __future__ import annotations

from fastapi import FastAPI

from elfscreen.app.config import Settings
from elfscreen.app.dashboard.grids import GridCache
from elfscreen.app.dashboard.pages import mount_pages
from elfscreen.app.dashboard.routes import data_router


def add_dashboard(app: FastAPI, settings: Settings) -> None:
    """Mount the pages and add the routes they read; ``app.state.grids`` caches the grids they show."""
    app.state.grids = GridCache()
    app.include_router(data_router(settings))
    mount_pages(app)
