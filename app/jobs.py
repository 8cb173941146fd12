"""A job's life outside the HTTP layer: validate and store a submission, run a job, report a batch.

:func:`prepare` runs in the API (bad input → :class:`~elfscreen.model.errors.InputError` → HTTP 4xx before anything
is stored); :func:`run_job` runs wherever the job executes (the embedded pool or a Celery worker) and calls
``model.pipeline.screen_structure``, exactly what ``elfscreen screen`` calls.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import httpx
import torch

from elfscreen.app.cache import cache_key, same_crystal
from elfscreen.app.config import Settings
from elfscreen.app.store import Claim, Store, new_id
from elfscreen.model.descriptor import pick_device
from elfscreen.model.errors import InputError
from elfscreen.model.network import ElfModel, file_sha256
from elfscreen.model.pipeline import load_model, model_path, screen_prediction
from elfscreen.model.predict import grid_shape, predict_grid, predict_grids
from elfscreen.model.structures import StructureLimits, guess_format, parse_structure
from elfscreen.model.volumetric import write_grid

log = logging.getLogger("elfscreen.jobs")
PIPELINE_OPTIONS = ("spacing_a", "tc_model", "h_dos", "refine", "min_persistence")


class LimitError(InputError):
    """An input is larger than this service accepts (HTTP 413)."""

    code = "too_large"


# --- the model, once per process ----------------------------------------------------------------
_model_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load(device: str | None) -> tuple[ElfModel, str]:
    path = model_path()
    model = load_model(None, device)
    return model, f"{model.model_version}:{file_sha256(path)[:16]}"


def get_model(device: str | None = None) -> tuple[ElfModel, str]:
    """The ELF model of this process and its identity (version and checkpoint hash), loaded on first use.
    Raises :class:`~elfscreen.model.pipeline.NoModelError` when none is installed."""
    with _model_lock:
        return _load(device)


# --- the API side -------------------------------------------------------------------------------
def prepare(items: list[dict], options: dict, settings: Settings, store: Store, owner: str,
            callback_url: str | None = None, parsed_out: dict | None = None) -> tuple[dict, list[dict]]:
    """Validate every structure and build the batch and job rows; structures already screened with the
    same model and options are answered from the cache (rows born ``done``, ``cached``).

    ``items`` hold ``name``, ``format`` (or None), ``content``, ``hdos`` (or None). Raises
    :class:`LimitError` or :class:`~elfscreen.model.errors.InputError` naming the first bad input; ``.others``
    on the error lists the error objects of every bad input. ``parsed_out``, when given, receives the
    parsed structure of each queued job by id (the embedded pool runs them without parsing again).
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
    if parsed_out is not None:
        parsed_out.update((row["id"], structure) for row, structure in parsed if row["status"] == "queued")
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
class Heartbeats:
    """Refreshes the heartbeat of every job this process holds (claimed, or reserved with a message) in
    one UPDATE every ``every_s`` seconds, from one daemon thread per store that runs while anything is held."""

    def __init__(self, store: Store, every_s: float):
        self.store, self.every_s = store, every_s
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._running = False
        self.pid = os.getpid()

    @contextmanager
    def hold(self, *tokens: str):
        """Keep the jobs under ``tokens`` alive while the block runs."""
        with self._lock:
            for token in tokens:
                self._held[token] = self._held.get(token, 0) + 1
            if tokens and not self._running:
                self._running = True
                threading.Thread(target=self._beat, name="elfscreen-heartbeat", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                for token in tokens:
                    left = self._held.pop(token) - 1
                    if left:
                        self._held[token] = left

    def _beat(self) -> None:
        while True:
            time.sleep(self.every_s)
            with self._lock:
                tokens = list(self._held)
                if not tokens:
                    self._running = False
                    return
            try:
                self.store.heartbeat_tokens(tokens)
            except Exception:  # a store hiccup must not kill the jobs; the next beat retries
                pass


_heartbeats_lock = threading.Lock()


def heartbeats(store: Store, settings: Settings) -> Heartbeats:
    """The :class:`Heartbeats` of ``store`` (one per store and process)."""
    with _heartbeats_lock:
        beats = store.__dict__.get("_heartbeats")
        if beats is None or beats.pid != os.getpid():  # a forked child starts its own thread
            beats = store.__dict__["_heartbeats"] = Heartbeats(store, max(settings.lease_s / 4, 0.5))
        return beats


def run_job(store: Store, job_id: str, settings: Settings, worker: str, structure=None) -> str | None:
    """Claim and run one job; returns its final status, or None when it was not ours to run
    (finished already, or running alive elsewhere: a duplicate message). ``structure``: the job's
    structure as the API parsed and validated it (the embedded pool), else it is parsed from the store."""
    claim = store.claim(job_id, worker, settings.lease_s)
    if claim is None:
        return None
    try:
        model, _ = get_model(settings.device)
        with heartbeats(store, settings).hold(claim.token):
            result, cube_gz, pipeline_s = _screen(claim, model, settings, structure)
        outcome = {"result": result, "cube_gz": cube_gz, "pipeline_s": pipeline_s}
    except Exception as exc:
        outcome = _failure(exc, claim)
    return _finish(store, claim, outcome, settings, worker)


def run_jobs(store: Store, job_ids: list[str], settings: Settings, worker: str) -> list[str | None]:
    """Run the jobs of one message one after another (:func:`run_job` each: claimed just before it runs).
    The message's other jobs are reserved meanwhile (:meth:`Store.reserve`): should this worker die, the
    sweep re-sends them after the lease, as it re-sends the job that was running."""
    if len(job_ids) <= 1:
        return [run_job(store, job_id, settings, worker) for job_id in job_ids]
    token = store.reserve(job_ids, worker)
    try:
        with heartbeats(store, settings).hold(token):
            return [run_job(store, job_id, settings, worker) for job_id in job_ids]
    except BaseException:
        _release(store, token)
        raise


def run_batch(store: Store, job_ids: list[str], settings: Settings, worker: str) -> list[str | None]:
    """Run the jobs of one message together (a GPU worker): claim every fresh one at once, predict their
    grids in one batch (:func:`~elfscreen.model.predict.predict_grids`: one network call per round of chunks), then
    screen and finish each on its own, so a job that fails fails alone. A job lost once with a worker
    (``attempts`` > 0) runs alone afterwards, claimed just before it runs, so a structure that kills its
    worker costs only its own attempts. Returns each job's final status (None: not ours to run)."""
    token = store.reserve(job_ids, worker) if len(job_ids) > 1 else None
    beats = heartbeats(store, settings)
    try:
        with beats.hold(*filter(None, [token])):
            status: dict[str, str | None] = {}
            claims = store.claim_many(job_ids, worker, settings.lease_s, fresh_only=True)
            if claims:
                with beats.hold(claims[0].token):
                    for claim, outcome in _screen_batch(claims, settings):
                        status[claim.job_id] = _finish(store, claim, outcome, settings, worker)
            for job_id in job_ids:
                if job_id not in status:
                    status[job_id] = run_job(store, job_id, settings, worker)
            return [status[job_id] for job_id in job_ids]
    except BaseException:
        if token:
            _release(store, token)
        raise


def _release(store: Store, token: str) -> None:
    try:
        store.release(token)
    except Exception as exc:  # the store is down: the reservation goes stale and the sweep re-sends its jobs
        log.warning("could not release reserved jobs (%s); the sweep will re-send them", exc)


def _finish(store: Store, claim: Claim, outcome: dict, settings: Settings, worker: str) -> str | None:
    if not store.finish(claim, worker=worker, **outcome):
        return None
    if store.has_callback(claim.batch_id):
        notify_batch(store, claim.batch_id, settings)
    return "failed" if "error" in outcome else "done"


def _failure(exc: Exception, claim: Claim) -> dict:
    if isinstance(exc, InputError):  # the structure or the model: the job fails with the message
        return {"error": exc.to_dict()}
    # a bug or a resource failure: report without a traceback
    return {"error": {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                                "input": claim.name}}}


def _parse(claim: Claim, settings: Settings):
    return parse_structure(claim.content, claim.format, claim.name, StructureLimits(max_atoms=settings.max_atoms))


def _screen(claim: Claim, model: ElfModel, settings: Settings, structure=None) -> tuple[dict, bytes | None, float]:
    opts = claim.options
    start = time.perf_counter()
    if structure is None:
        structure = _parse(claim, settings)
    kwargs = {k: opts[k] for k in PIPELINE_OPTIONS}
    parsed = time.perf_counter()
    pred = predict_grid(structure, model, spacing_a=kwargs.pop("spacing_a"), device=settings.device, name=claim.name)
    result = screen_prediction(pred, model, timings_s={"parse": parsed - start}, **kwargs)
    pipeline_s = time.perf_counter() - parsed  # the pipeline alone: the rest of a job's time is overhead
    return result.model_dump(mode="json"), _cube(pred) if opts.get("keep_grid") else None, pipeline_s


def _screen_batch(claims: list[Claim], settings: Settings) -> Iterator[tuple[Claim, dict]]:
    """(claim, outcome) of each claim, as soon as it is known: the grids predicted as one batch, the
    topology and Tc per structure. If the batch cannot be predicted (one bad structure, out of memory),
    each structure is predicted alone, so only the jobs that fail alone fail."""
    try:
        model, _ = get_model(settings.device)
    except Exception as exc:  # no model: every job fails with the message
        for claim in claims:
            yield claim, _failure(exc, claim)
        return
    ready = []  # (claim, structure, seconds to parse)
    for claim in claims:
        start = time.perf_counter()
        try:
            ready.append((claim, _parse(claim, settings), time.perf_counter() - start))
        except Exception as exc:
            yield claim, _failure(exc, claim)
    if not ready:
        return
    start = time.perf_counter()
    try:
        shapes = [grid_shape(s, c.options["spacing_a"]) for c, s, _ in ready]
        preds = predict_grids([s for _, s, _ in ready], model, shapes=shapes, device=settings.device,
                              names=[c.name for c, _, _ in ready])
        points = [math.prod(shape) for shape in shapes]
        shares = [(time.perf_counter() - start) * n / sum(points) for n in points]
    except Exception as exc:
        log.warning("a batch of %d structures failed (%s: %s); predicting them one by one", len(ready),
                    type(exc).__name__, exc)
        preds, shares = [None] * len(ready), [0.0] * len(ready)
        _free_device_memory(settings.device)
    for k, (claim, structure, parse_s) in enumerate(ready):
        start = time.perf_counter()
        try:
            opts = claim.options
            pred = preds[k]
            preds[k] = None  # the grid lives only as long as its job
            if pred is None:
                pred = predict_grid(structure, model, spacing_a=opts["spacing_a"], device=settings.device,
                                    name=claim.name)
            kwargs = {key: opts[key] for key in PIPELINE_OPTIONS if key != "spacing_a"}
            result = screen_prediction(pred, model, timings_s={"parse": parse_s}, **kwargs)
            outcome = {"result": result.model_dump(mode="json"), "cube_gz": _cube(pred) if opts.get("keep_grid") else None,
                       "pipeline_s": shares[k] + time.perf_counter() - start}
        except Exception as exc:
            outcome = _failure(exc, claim)
        yield claim, outcome


def _free_device_memory(device: str | None) -> None:
    try:
        if pick_device(device).type == "cuda":
            torch.cuda.empty_cache()
    except Exception:
        pass


def _cube(pred) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_grid(pred.grid, Path(tmp) / "elf.cube.gz").read_bytes()


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

