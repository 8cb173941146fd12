"""A job's life outside the HTTP layer: validate and store a submission, run a job, report a batch.

:func:`prepare` runs in the API (bad input → :class:`~model.errors.InputError` → HTTP 4xx before anything
is stored); :func:`run_job` runs wherever the job executes (the embedded pool or a Celery worker) and calls
``model.pipeline.screen_structure``, exactly what ``elfscreen screen`` calls.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import httpx

from app.cache import cache_key, same_crystal
from app.config import Settings
from app.store import Claim, Store, new_id
from model.errors import InputError
from model.network import ElfModel, file_sha256
from model.pipeline import DEFAULT_MODEL, WEIGHTS_DIR, load_model, screen_prediction
from model.predict import grid_shape, predict_grid
from model.structures import StructureLimits, guess_format, parse_structure
from model.volumetric import write_grid

PIPELINE_OPTIONS = ("spacing_a", "tc_model", "h_dos", "refine", "min_persistence")


class LimitError(InputError):
    """An input is larger than this service accepts (HTTP 413)."""

    code = "too_large"


# --- the model, once per process ----------------------------------------------------------------
_model_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load(device: str | None) -> tuple[ElfModel, str]:
    path = Path(os.environ.get("ELFSCREEN_MODEL") or WEIGHTS_DIR / DEFAULT_MODEL)
    model = load_model(None, device)
    return model, f"{model.model_version}:{file_sha256(path)[:16]}"


def get_model(device: str | None = None) -> tuple[ElfModel, str]:
    """The ELF model of this process and its identity (version and checkpoint hash), loaded on first use.
    Raises :class:`~model.pipeline.NoModelError` when none is installed."""
    with _model_lock:
        return _load(device)


# --- the API side -------------------------------------------------------------------------------
def prepare(items: list[dict], options: dict, settings: Settings, store: Store, owner: str,
            callback_url: str | None = None) -> tuple[dict, list[dict]]:
    """Validate every structure and build the batch and job rows; structures already screened with the
    same model and options are answered from the cache (rows born ``done``, ``cached``).

    ``items`` hold ``name``, ``format`` (or None), ``content``, ``hdos`` (or None). Raises
    :class:`LimitError` or :class:`~model.errors.InputError` naming the first bad input; ``.others``
    on the error lists the error objects of every bad input.
    """
    if len(items) > settings.max_structures:
        raise LimitError("request", f"holds {len(items)} structures; the limit is {settings.max_structures} per request")
    _, model_id = get_model(settings.device)
    limits = StructureLimits(max_atoms=settings.max_atoms)
    now, batch_id = time.time(), new_id()
    parsed, errors = [], []
    for seq, item in enumerate(items):
        try:
            parsed.append(_job_row(item, options, limits, settings, model_id, owner, batch_id, seq, now))
        except InputError as err:
            errors.append(err)
    if errors:
        first = errors[0]
        first.others = [e.to_dict()["error"] for e in errors]
        raise first
    candidates = store.cache_candidates([row["cache_key"] for row, _ in parsed])
    for row, structure in parsed:
        hit = _cached(candidates.get(row["cache_key"], []), structure)
        if hit is not None:
            row.update(status="done", cached=True, cached_from=hit["id"], result={**hit["result"], "name": row["name"]},
                       finished_at=now)
    rows = [row for row, _ in parsed]
    batch = {"id": batch_id, "owner": owner, "created_at": now, "total": len(rows), "callback_url": callback_url,
             "callback_state": "pending" if callback_url else None}
    return batch, rows


def _job_row(item, options, limits, settings, model_id, owner, batch_id, seq, now) -> tuple[dict, object]:
    """A validated job row (not yet looked up in the cache) and its parsed structure."""
    name = item["name"]
    fmt = item.get("format") or guess_format(name)
    structure = parse_structure(item["content"], fmt, name, limits)
    points = 1
    for n in grid_shape(structure, options["spacing_a"]):
        points *= n
    if points > settings.max_grid_points:
        raise LimitError(name, f"needs a {points:,}-point grid at {options['spacing_a']} Å spacing; the limit is "
                               f"{settings.max_grid_points:,} (use a coarser spacing)")
    job_options = {**options, "h_dos": item.get("hdos") or options.get("h_dos")}
    row = {"id": new_id(), "batch_id": batch_id, "seq": seq, "owner": owner, "name": name, "format": fmt,
           "content": item["content"], "options": job_options, "cache_key": cache_key(structure, model_id, job_options),
           "status": "queued", "cached": False, "cached_from": None, "result": None, "error": None,
           "has_grid": False, "attempts": 0, "created_at": now}
    return row, structure


def _cached(candidates: list[dict], structure) -> dict | None:
    """The first candidate that is the same crystal as ``structure`` (keep_grid is part of the key)."""
    for cand in candidates:
        try:
            if same_crystal(structure, parse_structure(cand["content"], cand["format"], cand["name"])):
                return cand
        except InputError:  # validation rules changed since: not a usable candidate
            continue
    return None


# --- the worker side ----------------------------------------------------------------------------
class _Heartbeat:
    """Refreshes a claimed job's heartbeat every ``every_s`` seconds while the pipeline runs."""

    def __init__(self, store: Store, claim: Claim, every_s: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, claim, every_s), daemon=True)

    def _beat(self, store, claim, every_s):
        while not self._stop.wait(every_s):
            try:
                store.heartbeat(claim)
            except Exception:  # a store hiccup must not kill the job; the next beat retries
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def run_job(store: Store, job_id: str, settings: Settings, worker: str) -> str | None:
    """Claim and run one job; returns its final status, or None when it was not ours to run
    (finished already, or running alive elsewhere: a duplicate message)."""
    claim = store.claim(job_id, worker, settings.lease_s)
    if claim is None:
        return None
    try:
        model, _ = get_model(settings.device)
        with _Heartbeat(store, claim, max(settings.lease_s / 4, 0.5)):
            result, cube_gz, pipeline_s = _screen(claim, model, settings)
        outcome = {"result": result, "cube_gz": cube_gz, "pipeline_s": pipeline_s}
    except InputError as err:  # the structure or the model: the job fails with the message
        outcome = {"error": err.to_dict()}
    except Exception as exc:  # a bug or a resource failure: report without a traceback
        outcome = {"error": {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                                       "input": claim.name}}}
    done = store.finish(claim, worker=worker, **outcome)
    if done:
        notify_batch(store, claim.batch_id, settings)
        return "failed" if "error" in outcome else "done"
    return None


def _screen(claim: Claim, model: ElfModel, settings: Settings) -> tuple[dict, bytes | None, float]:
    opts = claim.options
    start = time.perf_counter()
    structure = parse_structure(claim.content, claim.format, claim.name, StructureLimits(max_atoms=settings.max_atoms))
    kwargs = {k: opts[k] for k in PIPELINE_OPTIONS}
    parsed = time.perf_counter()
    pred = predict_grid(structure, model, spacing_a=kwargs.pop("spacing_a"), device=settings.device, name=claim.name)
    result = screen_prediction(pred, model, timings_s={"parse": parsed - start}, **kwargs)
    pipeline_s = time.perf_counter() - parsed  # the pipeline alone: the rest of a job's time is overhead
    cube_gz = None
    if opts.get("keep_grid"):
        with tempfile.TemporaryDirectory() as tmp:
            cube_gz = write_grid(pred.grid, Path(tmp) / "elf.cube.gz").read_bytes()
    return result.model_dump(mode="json"), cube_gz, pipeline_s


def notify_batch(store: Store, batch_id: str, settings: Settings) -> None:
    """POST the batch summary to its callback URL once every job has finished (one sender wins)."""
    batch = store.take_callback(batch_id)
    if not batch:
        return
    rows, _ = store.list_jobs(batch["owner"], batch_id=batch_id, limit=batch["total"])
    body = {"batch_id": batch_id, "total": batch["total"],
            "jobs": [{"id": r["id"], "name": r["name"], "status": r["status"]} for r in rows]}
    ok = False
    for attempt in range(3):
        try:
            ok = httpx.post(batch["callback_url"], json=body, timeout=settings.callback_timeout_s).is_success
        except httpx.HTTPError:
            ok = False
        if ok:
            break
        time.sleep(2 ** attempt)
    store.callback_done(batch_id, ok)

