"""Permanent links: the URLs of a job or batch, in the API and in the dashboard (``/ui``).

They are absolute, so a lab can paste one into its notes: built on ``ELFSCREEN_PUBLIC_URL`` when it is
set (the address users reach, e.g. behind a proxy: ``https://elf.example.org/screening``), else on the
address the request came to. A job's page and its data never move: ids are never reused.
"""
from __future__ import annotations

from fastapi import Request

from elfscreen.app.config import Settings


def base_url(request: Request, settings: Settings) -> str:
    """Where the service is reached, without a trailing slash."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def job_links(base: str, job_id: str, batch_id: str, keep_grid: bool) -> dict[str, str]:
    """``self`` (the job's JSON), ``ui`` (its structure page), ``batch``/``batch_ui``, and ``cube``: the ELF
    grid, kept (``keep_grid``, the job's option) or predicted again on demand with the job's model."""
    cube = f"{base}/v1/screenings/{job_id}/elf.cube" + ("" if keep_grid else "?recompute=true")
    return {"self": f"{base}/v1/screenings/{job_id}", "ui": f"{base}/ui/screenings/{job_id}",
            "batch": f"{base}/v1/batches/{batch_id}", "batch_ui": f"{base}/ui/batches/{batch_id}", "cube": cube}


def batch_links(base: str, batch_id: str) -> dict[str, str]:
    """``self`` (the batch's JSON), ``ui`` (its dashboard page) and ``csv`` (its results as a table)."""
    return {"self": f"{base}/v1/batches/{batch_id}", "ui": f"{base}/ui/batches/{batch_id}",
            "csv": f"{base}/v1/results.csv?batch_id={batch_id}"}
