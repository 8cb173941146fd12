"""The API routes the dashboard reads (plain JSON/CSV under ``/v1``, usable by any client): batches with
progress, flat result rows, the DFT-verified jobs against the model (parity), and per job the result as a file,
the crystal, an ELF slice (ML, or ML and DFT on the same plane) and an isosurface. Access rules are the API's:
a caller sees only its own jobs (``app.access``)."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from elfscreen.app.access import ApiError, owner_of
from elfscreen.app.config import Settings
from elfscreen.app.dashboard import queries, views
from elfscreen.app.dashboard.parity import parity_point, parity_summary
from elfscreen.app.dashboard.rows import result_row, to_csv
from elfscreen.app.downloads import content_disposition
from elfscreen.app.links import base_url, batch_links
from elfscreen.app.schemas import (
    BatchPage,
    BatchSummary,
    ErrorResponse,
    ResultPage,
    Status,
    timestamp,
)
from elfscreen.app.store import UNFINISHED, merged_result
from elfscreen.model.structures import StructureLimits, parse_structure

ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 409, 422, 503)}
JSON_BODY = {200: {"content": {"application/json": {}}, "description": "JSON (see the summary)"}}
CSV_BODY = {200: {"content": {"text/csv": {}}, "description": "CSV, one row per job, the columns of ResultRow"}}


def data_router(settings: Settings) -> APIRouter:
    """The routes, reading the store and grid cache the app holds in ``app.state``."""
    router = APIRouter(tags=["dashboard"])

    @router.get("/v1/batches", response_model=BatchPage, responses=ERRORS, summary="List batches, newest first, with progress")
    def list_batches(request: Request, limit: int = Query(50, ge=1, le=1000),
                     offset: int = Query(0, ge=0, le=2**62)) -> BatchPage:
        rows, total = queries.batch_page(request.app.state.store, owner_of(request, settings), limit, offset)
        base = base_url(request, settings)
        items = []
        for row in rows:
            done = row["total"] - sum(row["counts"][s] for s in UNFINISHED)
            items.append(BatchSummary(id=row["id"], created_at=timestamp(row["created_at"]), total=row["total"],
                                      counts=row["counts"], progress=done / row["total"], finished=done == row["total"],
                                      links=batch_links(base, row["id"])))
        return BatchPage(items=items, total=total, limit=limit, offset=offset)

    def rows(request: Request, batch_id, status, limit, offset):
        """One page of the caller's jobs as result rows (:class:`~elfscreen.app.schemas.ResultRow`), and how many match."""
        found, total = queries.result_rows(request.app.state.store, owner_of(request, settings), batch_id=batch_id,
                                           status=status, limit=limit, offset=offset)
        base = base_url(request, settings)
        return [result_row(r, base) for r in found], total

    @router.get("/v1/results", response_model=ResultPage, responses=ERRORS,
                summary="Jobs as flat result rows (φ, φ*, Tc, uncertainty, warnings, …), filtered and paged")
    def list_results(request: Request, batch_id: str | None = None, status: Status | None = None,
                     limit: int = Query(1000, ge=1, le=5000), offset: int = Query(0, ge=0, le=2**62)) -> ResultPage:
        items, total = rows(request, batch_id, status, limit, offset)
        return ResultPage(items=items, total=total, limit=limit, offset=offset)

    @router.get("/v1/results.csv", response_class=Response, responses={**ERRORS, **CSV_BODY},
                summary="The same rows as CSV")
    def results_csv(request: Request, batch_id: str | None = None, status: Status | None = None,
                    limit: int = Query(100_000, ge=1, le=100_000), offset: int = Query(0, ge=0, le=2**62)) -> Response:
        items, _ = rows(request, batch_id, status, limit, offset)
        return _file(to_csv(items), "text/csv", f"elfscreen-{batch_id or 'results'}.csv")

    @router.get("/v1/screenings/{job_id}/result.json", response_class=Response, responses={**ERRORS, **JSON_BODY},
                summary="A finished job's result (the object `elfscreen screen` prints, with `dft` and `delta_phi` "
                        "once verified) as a file")
    def result_json(job_id: str, request: Request) -> Response:
        row = _finished(request, job_id, settings)
        return JSONResponse(merged_result(row), headers=_attachment(f"{row['name']}.json"))

    @router.get("/v1/screenings/{job_id}/result.csv", response_class=Response, responses={**ERRORS, **CSV_BODY},
                summary="A job's result row as CSV")
    def result_csv(job_id: str, request: Request) -> Response:
        row = _job(request, job_id, settings)
        return _file(to_csv([result_row(row, base_url(request, settings))]), "text/csv", f"{row['name']}.csv")

    @router.get("/v1/screenings/{job_id}/scene", responses={**ERRORS, **JSON_BODY},
                summary="The crystal of a finished job: cell, atoms, ELF critical points, bottlenecks (Å)")
    def scene(job_id: str, request: Request) -> JSONResponse:
        row = _finished(request, job_id, settings)
        job = queries.computed_job(request.app.state.store, row)
        structure = parse_structure(job["content"], job["format"], job["name"], StructureLimits(max_atoms=settings.max_atoms))
        return JSONResponse(views.scene(structure, row["result"]))

    @router.get("/v1/screenings/{job_id}/slice", responses={**ERRORS, **JSON_BODY},
                summary="The ELF on a square through the bottleneck at φ, in the plane that shows it as a saddle")
    def elf_slice(job_id: str, request: Request, n: int = Query(121, ge=16, le=401),
                  half_width_a: float = Query(2.0, ge=0.25, le=10.0)) -> JSONResponse:
        row = _finished(request, job_id, settings)
        grid = request.app.state.grids.get(request.app.state.store, row, settings)
        return JSONResponse(views.slice_view(grid, row["result"], half_width_a, n))

    @router.get("/v1/screenings/{job_id}/slice-pair", responses={**ERRORS, **JSON_BODY},
                summary="The ML and the DFT ELF of a verified job on the same square through the ML bottleneck at φ")
    def elf_slice_pair(job_id: str, request: Request, n: int = Query(121, ge=16, le=401),
                       half_width_a: float = Query(2.0, ge=0.25, le=10.0)) -> JSONResponse:
        row = _finished(request, job_id, settings)
        result = merged_result(row)
        if "dft" not in result:
            raise ApiError(409, "not_verified", f"job {job_id} has no finished DFT verification "
                           f"(POST /v1/screenings/{job_id}/verify)", row["name"])
        grids = request.app.state.grids
        ml, dft = grids.get(request.app.state.store, row, settings), grids.get_dft(request.app.state.store, row, settings)
        return JSONResponse(views.slice_pair(ml, dft, result, half_width_a, n))

    @router.get("/v1/verified", responses={**ERRORS, **JSON_BODY},
                summary="Every DFT-verified job: ML φ vs DFT φ with the model's σφ, and the model's error on them")
    def verified(request: Request, limit: int = Query(5000, ge=1, le=20000)) -> JSONResponse:
        found, total = queries.verified_rows(request.app.state.store, owner_of(request, settings), limit)
        base = base_url(request, settings)
        points = [parity_point(r, base) for r in found]
        return JSONResponse({"items": points, "total": total, "summary": parity_summary(points)})

    @router.get("/v1/screenings/{job_id}/isosurface", responses={**ERRORS, **JSON_BODY},
                summary="The ELF isosurface at `level` (default φ) in one cell, as a triangle mesh (Å)")
    def elf_isosurface(job_id: str, request: Request, level: float | None = Query(None, ge=0.0, le=1.0),
                       resolution: int = Query(48, ge=8, le=64)) -> JSONResponse:
        row = _finished(request, job_id, settings)
        grid = request.app.state.grids.get(request.app.state.store, row, settings)
        if level is None:
            level = row["result"]["phi"] if row["result"]["phi"] is not None else 0.5
        return JSONResponse(views.isosurface_view(grid, level, resolution))

    return router


def _job(request: Request, job_id: str, settings: Settings) -> dict:
    row = request.app.state.store.job(job_id, owner_of(request, settings))
    if row is None:
        raise ApiError(404, "not_found", f"no screening job {job_id}", job_id)
    return row


def _finished(request: Request, job_id: str, settings: Settings) -> dict:
    """The job if it is done; 409 while it is queued or running, or when it failed."""
    row = _job(request, job_id, settings)
    if row["status"] in UNFINISHED:
        raise ApiError(409, "not_ready", f"job {job_id} is {row['status']}; its result exists once it is done", row["name"])
    if row["status"] == "failed":
        raise ApiError(409, "failed", f"job {job_id} failed: {row['error']['error']['message']}", row["name"])
    return row


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": content_disposition(filename)}


def _file(text: str, media_type: str, filename: str) -> Response:
    return Response(text, media_type=media_type, headers=_attachment(filename))
