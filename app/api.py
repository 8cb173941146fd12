"""The HTTP API (FastAPI; OpenAPI at ``/docs`` and ``/openapi.json``).

``POST /v1/screenings`` validates every structure, stores the batch and its jobs, then queues them and
answers 202; jobs run in the embedded pool or on Celery workers (``app.dispatch``). ``POST
/v1/screenings/{id}/verify`` queues the DFT verification of a done job (the embedded DFT pool or the
Celery ``dft`` queue), ``DELETE`` cancels it, ``dft.cube`` is its DFT ELF. Every error body is
``{"error": {"code", "message", "input"}}``: 401 no/unknown API key, 404 unknown id, 413 too large,
409 not ready (a verification of an unfinished job, a grid not there yet), 415 not JSON or multipart,
422 an unusable input (the message names it), 429 rate limit, 503 no model or store, or no Quantum
ESPRESSO for a verification; never a traceback.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from elfscreen.app import metrics
from elfscreen.app.access import ApiError, BodyLimit, BodyTooLarge, RateLimiter, owner_of, too_large
from elfscreen.app.config import Settings
from elfscreen.app.dashboard import add_dashboard
from elfscreen.app.docs_ui import add_docs_ui
from elfscreen.app.downloads import content_disposition
from elfscreen.app.dispatch import Sweeper, make_dispatcher, sweep
from elfscreen.app.sandbox import Sandbox
from elfscreen.app.submission import prepare
from elfscreen.app.webhook import check_callback_url, notify_batch
from elfscreen.app.links import base_url, batch_links, job_links
from elfscreen.app.schemas import (Batch, ErrorResponse, Job, JobPage, JobRef, Options, Status, SubmitRequest, SubmitResponse,
                         VerifyRequest, job_out, keep_grid, timestamp)
from elfscreen.app.store import UNFINISHED, Store
from elfscreen.app.verification import missing_qe
from elfscreen.model import __version__
from elfscreen.model.errors import InputError
from elfscreen.model.limits import LimitError
from elfscreen.model.pipeline import NoModelError, get_model
from elfscreen.model.structures import structure_from_dict
from elfscreen.model.volumetric import ElfGrid, write_grid

log = logging.getLogger("elfscreen.api")
ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 415, 422, 429, 503)}
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type"}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API with its store, dispatcher (embedded pool or Celery) and lost-job sweep."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = Store(settings.db_url)
        dispatcher = make_dispatcher(store, settings)
        sandbox = Sandbox(settings.parse_workers, settings.parse_memory_mb, settings.parse_timeout_s)
        app.state.store, app.state.dispatcher, app.state.sandbox = store, dispatcher, sandbox
        if dispatcher.mode == "embedded":  # its job processes load the model and kernels first
            await run_in_threadpool(dispatcher.wait_started)
        # After a restart of the embedded server nothing of the old pool is alive: re-send at once.
        lease = 0.0 if dispatcher.mode == "embedded" else settings.lease_s
        threading.Thread(target=_safe_sweep, args=(store, dispatcher, lease), daemon=True).start()
        sweeper = Sweeper(store, dispatcher, settings).start()
        yield
        sweeper.stop()
        sandbox.close()
        dispatcher.close()
        store.engine.dispose()

    app = FastAPI(title="elfscreen", version=__version__, lifespan=lifespan, docs_url=None,  # /docs: app.docs_ui
                  description="Screen hydrogen-rich crystals for superconductivity from the topology of their "
                              "predicted ELF. Results are the object `elfscreen screen` prints.")
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.rate_limit_per_min)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(CatchAll)
    app.middleware("http")(metrics.count_requests)
    _add_error_handlers(app, settings)
    _add_routes(app, settings)
    add_dashboard(app, settings)
    add_docs_ui(app)
    app.openapi = lambda: _openapi(app)
    return app


def _safe_sweep(store, dispatcher, lease) -> None:
    try:
        sweep(store, dispatcher, lease)
    except Exception as exc:  # broker down at start: the periodic sweep retries
        log.warning("start-up sweep failed: %s", exc)


def _add_routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/v1/screenings", status_code=202, response_model=SubmitResponse, responses=ERRORS,
              summary="Submit one or many structures (JSON or multipart files)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}},
                  "multipart/form-data": {"schema": {"$ref": "#/components/schemas/SubmitForm"}}}}})
    async def submit(request: Request) -> SubmitResponse:
        owner = owner_of(request, settings)
        app.state.limiter.check(owner if settings.api_keys else _client(request))
        items, options, callback, verify = await _read_submission(request, settings)
        if verify.verify or verify.verify_top:
            _check_qe(settings)
        store, dispatcher = app.state.store, app.state.dispatcher
        batch, rows = await run_in_threadpool(prepare, items, options, settings, store, owner, app.state.sandbox,
                                              callback)
        batch.update(verify=verify.verify, verify_top=verify.verify_top, verify_by=verify.verify_by,
                     verify_state="pending" if verify.verify_top else None)
        await run_in_threadpool(store.create_batch, batch, rows)
        queued = [r["id"] for r in rows if r["status"] == "queued"]
        await run_in_threadpool(dispatcher.send, queued)
        if verify.verify or verify.verify_top:  # jobs answered from the cache are done already
            await run_in_threadpool(dispatcher.send_verifications, store.after_screening(batch["id"]))
        metrics.submitted(len(rows), len(rows) - len(queued))
        if callback and not queued:
            threading.Thread(target=notify_batch, args=(store, batch["id"], settings), daemon=True).start()
        base = base_url(request, settings)
        return SubmitResponse(batch_id=batch["id"], jobs=[JobRef(id=r["id"], name=r["name"], status=r["status"],
                                                                 cached=r["cached"],
                                                                 links=job_links(base, r["id"], batch["id"], keep_grid(r)))
                                                          for r in rows])

    @app.get("/v1/screenings/{job_id}", response_model=Job, responses=ERRORS, summary="One job: status, result or error")
    def get_job(job_id: str, request: Request) -> Job:
        return job_out(_job_or_404(request, job_id), base=base_url(request, settings))

    @app.get("/v1/screenings", response_model=JobPage, responses=ERRORS, summary="List jobs, filtered and paged")
    def list_jobs(request: Request, status: Optional[Status] = None, batch_id: Optional[str] = None,
                  name: Optional[str] = None, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**62),
                  with_results: bool = False) -> JobPage:
        rows, total = app.state.store.list_jobs(owner_of(request, settings), status=status, batch_id=batch_id,
                                                name=name, limit=limit, offset=offset)
        base = base_url(request, settings)
        return JobPage(items=[job_out(r, with_results, base) for r in rows], total=total, limit=limit, offset=offset)

    @app.get("/v1/batches/{batch_id}", response_model=Batch, responses=ERRORS, summary="A batch: progress and results")
    def get_batch(batch_id: str, request: Request, limit: int = Query(1000, ge=1, le=1000),
                  offset: int = Query(0, ge=0, le=2**62)) -> Batch:
        owner = owner_of(request, settings)
        found = app.state.store.batch(batch_id, owner)
        if found is None:
            raise ApiError(404, "not_found", f"no batch {batch_id}", batch_id)
        row, counts = found
        rows, _ = app.state.store.list_jobs(owner, batch_id=batch_id, limit=limit, offset=offset)
        unfinished = sum(counts[s] for s in UNFINISHED)
        base = base_url(request, settings)
        return Batch(id=row["id"], created_at=timestamp(row["created_at"]), total=row["total"], counts=counts,
                     progress=(row["total"] - unfinished) / row["total"], finished=unfinished == 0,
                     callback_state=row["callback_state"], jobs=[job_out(r, base=base) for r in rows], limit=limit,
                     offset=offset, links=batch_links(base, batch_id))

    @app.get("/v1/screenings/{job_id}/elf.cube", responses={**ERRORS, 200: {"content": {"chemical/x-cube": {}}}},
             response_class=Response, summary="The predicted ELF grid (Gaussian cube) of a job that kept it, "
                                              "or with `recompute=true` of any done job (predicted again)")
    def get_cube(job_id: str, request: Request, recompute: bool = False) -> Response:
        row = _job_or_404(request, job_id)
        if row["status"] in UNFINISHED:
            raise ApiError(409, "not_ready", f"job {job_id} is {row['status']}; the grid exists once it is done", row["name"])
        data = _kept_cube_gz(app.state.store, row, owner_of(request, settings)) if keep_grid(row) else None
        if data is None and recompute and row["status"] == "done":
            data = _cube_gz(app.state.grids.get(app.state.store, row, settings))
        if data is None:
            raise ApiError(404, "no_grid", "the grid of this job was not kept (submit with options.keep_grid = true, "
                           "or ask for it with ?recompute=true)", row["name"])
        return _cube_response(data, f"{row['name']}.elf.cube", request)

    @app.post("/v1/screenings/{job_id}/verify", status_code=202, response_model=Job, responses=ERRORS,
              summary="Verify a done job by DFT (Quantum ESPRESSO at the dataset settings); the job with its "
                      "`verification`, whose result gains `dft` and `delta_phi` once it is done")
    def verify_job(job_id: str, request: Request) -> Job:
        _check_qe(settings)
        row = _job_or_404(request, job_id)
        if row["status"] != "done":
            raise ApiError(409, "not_ready", f"job {job_id} is {row['status']}; only a done job can be verified",
                           row["name"])
        row, queued = app.state.store.request_verification(job_id, owner_of(request, settings))
        if queued:
            app.state.dispatcher.send_verifications([job_id])
        return job_out(row, base=base_url(request, settings))

    @app.delete("/v1/screenings/{job_id}/verify", response_model=Job, responses=ERRORS,
                summary="Cancel a queued or running DFT verification (a running DFT run is stopped)")
    def cancel_verification(job_id: str, request: Request) -> Job:
        row = _job_or_404(request, job_id)
        v = row["verification"]
        if v is None or v["status"] not in UNFINISHED:
            state = "never requested" if v is None else v["status"]
            raise ApiError(409, "not_cancellable", f"the verification of job {job_id} is {state}", row["name"])
        row = app.state.store.cancel_verification(job_id, owner_of(request, settings))
        return job_out(row, base=base_url(request, settings))

    @app.get("/v1/screenings/{job_id}/dft.cube", responses={**ERRORS, 200: {"content": {"chemical/x-cube": {}}}},
             response_class=Response, summary="The DFT ELF grid (Gaussian cube) of a done verification")
    def get_dft_cube(job_id: str, request: Request) -> Response:
        row = _job_or_404(request, job_id)
        v = row["verification"]
        grid = app.state.store.dft_grid(job_id) if v is not None and v["status"] == "done" else None
        if grid is None:
            state = "never requested" if v is None else v["status"]
            raise ApiError(404 if v is None else 409, "no_grid",
                           f"the verification of job {job_id} is {state}; its DFT grid exists once it is done", row["name"])
        return _cube_response(_cube_gz(grid, digits=10), f"{row['name']}.dft.cube", request)

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", summary="The store, the queue and the model are usable", responses={503: {"model": ErrorResponse}})
    def readyz() -> JSONResponse:
        checks = {}
        try:
            app.state.store.ping()
            checks["store"] = "ok"
            checks["dispatcher"] = {"mode": app.state.dispatcher.mode, **app.state.dispatcher.ready()}
            checks["model"] = get_model(settings.device)[1]
        except Exception as exc:
            raise ApiError(503, "not_ready", f"{type(exc).__name__}: {exc}", extra={"checks": checks})
        return JSONResponse({"status": "ready", "checks": checks})

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    def get_metrics() -> Response:
        return metrics.render(app.state.store)


def _kept_cube_gz(store: Store, row: dict, owner: str) -> bytes | None:
    """The kept grid of a job (or of the job of the same owner it was answered from) as a gzipped cube."""
    source = store.job(row["cached_from"], owner) if row["cached_from"] else row
    values = None if source is None or source["structure"] is None else store.grid(source["id"])
    if values is None:
        return None
    return _cube_gz(ElfGrid(structure_from_dict(source["structure"]), values.astype("float64"), row["name"]))


def _cube_response(data: bytes, filename: str, request: Request) -> Response:
    """A gzipped cube as the answer: sent compressed when the client accepts gzip."""
    headers = {"Content-Disposition": content_disposition(filename)}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(data, media_type="chemical/x-cube", headers={**headers, "Content-Encoding": "gzip"})
    return Response(gzip.decompress(data), media_type="chemical/x-cube", headers=headers)


def _check_qe(settings: Settings) -> None:
    """503 naming the missing programs when Quantum ESPRESSO cannot run a verification here. Embedded
    mode only: with a broker the DFT runs on the ``dft`` queue's workers, often other machines than the
    API's (a worker without QE fails the verification with that error)."""
    if settings.broker_url is not None:
        return
    missing = missing_qe()
    if missing:
        raise ApiError(503, "dft_unavailable", f"DFT verification needs Quantum ESPRESSO: {', '.join(missing)} not "
                       "found on PATH (apt-get install quantum-espresso); screening is unaffected", "verify")


def _cube_gz(grid, digits: int | None = None) -> bytes:
    """A grid as a gzipped cube file (``digits`` significant digits; default the cube's 5)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_grid(grid, Path(tmp) / "elf.cube.gz", digits=digits).read_bytes()


def _job_or_404(request: Request, job_id: str) -> dict:
    settings = request.app.state.settings
    row = request.app.state.store.job(job_id, owner_of(request, settings))
    if row is None:
        raise ApiError(404, "not_found", f"no screening job {job_id}", job_id)
    return row


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _read_submission(request: Request, settings: Settings) -> tuple[list[dict], dict, str | None, VerifyRequest]:
    """The structures, options, callback URL and verification request of a JSON or multipart submission."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _read_form(request, settings)
    if ctype not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", f"send application/json or multipart/form-data, not {ctype}")
    raw = await request.body()
    try:
        req = SubmitRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc, "body") from None
    if len(req.structures) > settings.max_structures:
        raise LimitError("request", f"holds {len(req.structures)} structures; the limit is {settings.max_structures}")
    items = [s.model_dump() for s in req.structures]
    callback = None if req.callback_url is None else await run_in_threadpool(check_callback_url, str(req.callback_url),
                                                                             settings)
    return items, req.options.model_dump(), callback, VerifyRequest(verify=req.verify, verify_top=req.verify_top,
                                                                    verify_by=req.verify_by)


async def _read_form(request: Request, settings: Settings) -> tuple[list[dict], dict, str | None, VerifyRequest]:
    try:
        form = await request.form(max_files=settings.max_structures + 1, max_fields=20,
                                  max_part_size=settings.max_upload_bytes)
    except StarletteHTTPException as exc:
        raise ApiError(400, "bad_request", f"the multipart body cannot be read ({exc.detail})", "request") from None
    files = [(key, v) for key, v in form.multi_items() if hasattr(v, "filename")]
    if not files:
        raise ApiError(422, "invalid_request", "the multipart body holds no structure file (send them as `files`)", "files")
    if len(files) > settings.max_structures:
        raise LimitError("request", f"holds {len(files)} structures; the limit is {settings.max_structures}")
    try:
        options = Options.model_validate_json(form.get("options") or "{}")
    except ValidationError as exc:
        raise _invalid(exc, "options") from None
    fmt = form.get("format") or None
    items = []
    for _, upload in files:
        name = upload.filename or "upload"
        items.append({"name": name, "format": fmt, "content": _text(await upload.read(), name, settings), "hdos": None})
    callback = form.get("callback_url") or None
    if callback is not None:
        callback = await run_in_threadpool(check_callback_url, str(callback), settings)
    try:
        verify = VerifyRequest.model_validate({k: form[k] for k in ("verify", "verify_top", "verify_by") if form.get(k)})
    except ValidationError as exc:
        raise _invalid(exc, "form") from None
    return items, options.model_dump(), callback, verify


def _text(data: bytes, name: str, settings: Settings) -> str:
    """An uploaded file as text; gzip is unpacked (up to the body limit)."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(settings.max_upload_bytes + 1)
        except (OSError, EOFError) as exc:
            raise ApiError(422, "invalid_structure", f"{name}: is not a readable gzip file ({exc})", name) from None
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"{name}: unpacks to more than {settings.max_upload_bytes:,} bytes", name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_structure", f"{name}: is not a text file (UTF-8)", name) from None


def _invalid(exc: ValidationError, where: str) -> ApiError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in (where, *first["loc"]))
    return ApiError(422, "invalid_request", f"{loc}: {first['msg']}", loc,
                    extra={"errors": [{"code": "invalid_request", "input": ".".join(str(p) for p in (where, *e["loc"])),
                                       "message": e["msg"]} for e in errors[:50]]})


def _add_error_handlers(app: FastAPI, settings: Settings) -> None:
    def reply(err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(ApiError)
    async def api_error(_, err: ApiError):
        return reply(err)

    @app.exception_handler(InputError)
    async def input_error(_, err: InputError):
        status = 413 if isinstance(err, LimitError) else 503 if isinstance(err, NoModelError) else 422
        extra = {"errors": err.others} if len(getattr(err, "others", [])) > 1 else None
        return reply(ApiError(status, err.code, str(err), err.input_name, extra=extra))

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_, err):
        return reply(too_large(settings.max_upload_bytes))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return reply(ApiError(422, "invalid_request", f"{loc}: {first['msg']}", loc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        return reply(ApiError(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail),
                              headers=getattr(exc, "headers", None)))



class CatchAll:
    """ASGI middleware: an unexpected exception becomes a logged (with traceback) 500 JSON answer on a
    connection that stays open. (Starlette's catch-all handler answers too, but then re-raises, and the
    server drops the keep-alive connection.) Inside it, every expected error has its handler already."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # half an answer is out: nothing sensible can follow it on this connection
                raise
            err = ApiError(500, "internal_error", f"internal error ({type(exc).__name__}); it was logged")
            await JSONResponse(err.body(), status_code=500)(scope, receive, send)


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema plus the two submission bodies (the route reads the body itself)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = SubmitRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["SubmitRequest"] = body
    components["SubmitForm"] = {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "structure files (CIF, POSCAR, extxyz, .res; .gz accepted); the file name is the result's name"},
        "format": {"type": "string", "description": "format of every file (default: from each file name)"},
        "options": {"type": "string", "description": "JSON of the Options object", "example": json.dumps({"spacing_a": 0.1})},
        "callback_url": {"type": "string", "format": "uri"},
        "verify": {"type": "boolean", "description": "verify every structure by DFT once it is screened"},
        "verify_top": {"type": "integer", "minimum": 1, "maximum": 1000,
                       "description": "verify the best k structures by DFT once the batch is screened"},
        "verify_by": {"type": "string", "enum": ["tc", "phi"], "description": "what verify_top ranks by"}}}
    app.openapi_schema = schema
    return schema
