"""The job store: batches, jobs, kept grids and a job event log, in SQLAlchemy Core.

SQLite by default (one file, WAL), PostgreSQL through a ``postgresql://`` URL. The store is the
source of truth: the API writes a job before it queues it, and a worker may only write a job's
outcome while it holds the job's *claim* (a token set by an atomic conditional UPDATE), so a job
that is delivered twice (a redelivered or re-published message) still finishes exactly once.
A DFT verification of a finished job (issue 15) is a row of ``verifications`` keyed by the job id, with
its own status, claim, heartbeat and attempts under the same rules (claim to run, finish only under the
claim, the sweep re-sends lost ones); its events go to ``job_events`` as ``verify_*``, its DFT ELF grid
to ``dft_grid_values``. Times are UNIX seconds (float).
"""
from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass

from typing import Iterator, NamedTuple

import numpy as np
import sqlalchemy as sa
from pymatgen.core import Structure
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from elfscreen.model.options import rank_key
from elfscreen.model.structures import structure_from_dict, structure_to_dict
from elfscreen.model.volumetric import ElfGrid

UNFINISHED = ("queued", "running")
STATUSES = ("queued", "running", "done", "failed")
VERIFY_STATUSES = ("queued", "running", "done", "failed", "cancelled")

metadata = sa.MetaData()

batches = sa.Table(
    "batches", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("callback_url", sa.Text),
    sa.Column("callback_state", sa.String(16)),  # null (none asked), pending, sending, sent, failed
    sa.Column("verify", sa.Boolean),  # verify every job by DFT once it is done
    sa.Column("verify_top", sa.Integer),  # verify the best k jobs once the batch is finished
    sa.Column("verify_by", sa.String(8)),  # tc or phi
    sa.Column("verify_state", sa.String(16)),  # null (no verify_top), pending, taken
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("batch_id", sa.String(32), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # position in the batch
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("structure", sa.JSON),  # the validated structure (model.structures.structure_to_dict): parsed once
    sa.Column("options", sa.JSON, nullable=False),  # pipeline options incl. h_dos, keep_grid
    sa.Column("cache_key", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("cached", sa.Boolean, nullable=False, default=False),
    sa.Column("cached_from", sa.String(32)),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.JSON),
    sa.Column("has_grid", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("claim", sa.String(32)),
    sa.Column("worker", sa.String(128)),
    sa.Column("broker_epoch", sa.String(64)),  # the broker instance the message was published to
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("published_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("pipeline_s", sa.Float),  # seconds inside model.pipeline.screen_structure
)

grids = sa.Table(  # kept ELF grids: an .npz holding ``values`` (float32, N1×N2×N3)
    "grid_values", metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("npz", sa.LargeBinary, nullable=False),
)

verifications = sa.Table(  # the DFT verification of a done job (at most one per job)
    "verifications", metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # VERIFY_STATUSES
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("claim", sa.String(32)),
    sa.Column("worker", sa.String(128)),
    sa.Column("broker_epoch", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("published_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("result", sa.JSON),  # {"dft": {...}, "delta_phi": ...}: what model.verify.verify returns
    sa.Column("error", sa.JSON),
    sa.Column("grid_structure", sa.JSON),  # the DFT grid's cell (structure_to_dict; QE's standard orientation)
)

dft_grids = sa.Table(  # DFT ELF grids of finished verifications: an .npz holding ``values`` (float64, as computed)
    "dft_grid_values", metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("npz", sa.LargeBinary, nullable=False),
)

events = sa.Table(
    "job_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # created, claimed, requeued, done, failed; verify_* alike
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("worker", sa.String(128)),
)


# Every column of a job row that a caller may leave out, with its value when left out.
_JOB_DEFAULTS = {c.name: c.default.arg if c.default is not None else None for c in jobs.columns if c.default or c.nullable}

# The hot statements, built once (building SQLAlchemy expressions costs more than running them on SQLite).
# Parameters are named p_* (a name of a column is reserved for the SET clause).
_B = sa.bindparam


def _claim_statement(takeable):
    return (jobs.update().where(jobs.c.id.in_(_B("p_ids", expanding=True)), takeable, jobs.c.attempts < _B("p_max"))
            .values(status="running", claim=_B("p_token"), worker=_B("p_worker"), started_at=_B("p_now"),
                    heartbeat_at=_B("p_now"), attempts=jobs.c.attempts + 1)
            .returning(jobs.c.id, jobs.c.batch_id, jobs.c.name, jobs.c.format, jobs.c.content, jobs.c.options,
                       jobs.c.structure))


_TAKEABLE = sa.or_(jobs.c.status == "queued", sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < _B("p_stale")))
_CLAIM = _claim_statement(_TAKEABLE)
_CLAIM_FRESH = _claim_statement(sa.and_(jobs.c.status == "queued", jobs.c.attempts == 0))
_FINISH = (jobs.update().where(jobs.c.id == _B("p_id"), jobs.c.claim == _B("p_token"), jobs.c.status == "running")
           .values(status=_B("p_status"), result=_B("p_result", type_=jobs.c.result.type),
                   error=_B("p_error", type_=jobs.c.error.type), finished_at=_B("p_now"), pipeline_s=_B("p_pipeline"),
                   has_grid=_B("p_grid"), claim=None))
_RESERVE = (jobs.update().where(jobs.c.id.in_(_B("p_ids", expanding=True)), jobs.c.status == "queued")
            .values(claim=_B("p_token"), worker=_B("p_worker"), heartbeat_at=_B("p_now")))
_RESERVE_UNHELD = _RESERVE.where(jobs.c.claim.is_(None))
_HEARTBEAT = jobs.update().where(jobs.c.claim.in_(_B("p_tokens", expanding=True))).values(heartbeat_at=_B("p_now"))
_HEARTBEAT_HELD = _HEARTBEAT.returning(jobs.c.claim)
_V_HEARTBEAT = (verifications.update().where(verifications.c.claim.in_(_B("p_tokens", expanding=True)))
                .values(heartbeat_at=_B("p_now")))
_PUBLISHED = (jobs.update().where(jobs.c.id.in_(_B("p_ids", expanding=True)), jobs.c.status == "queued")
              .values(published_at=_B("p_now"), broker_epoch=_B("p_epoch")))
_V_PUBLISHED = (verifications.update().where(verifications.c.job_id.in_(_B("p_ids", expanding=True)),
                                             verifications.c.status == "queued")
                .values(published_at=_B("p_now"), broker_epoch=_B("p_epoch")))
_EVENT = events.insert()
_GRID = grids.insert()


def new_id() -> str:
    return uuid.uuid4().hex


def make_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` uses psycopg 3, SQLite gets WAL and a busy timeout."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _npz(values: np.ndarray, dtype=np.float32) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, values=np.asarray(values, dtype=dtype))
    return buffer.getvalue()


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns a store made by an older elfscreen lacks (nullable ones only; old rows get NULL)."""
    for table in (jobs, batches):
        have = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        with engine.begin() as c:
            for column in table.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    c.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _with_verifications(c, rows: list[dict]) -> list[dict]:
    """``rows`` (job dicts), each with ``verification``: its verifications row as a dict, or None."""
    if rows:
        found = {r["job_id"]: dict(r) for r in c.execute(sa.select(verifications).where(
            verifications.c.job_id.in_([r["id"] for r in rows]))).mappings()}
        for row in rows:
            row["verification"] = found.get(row["id"])
    return rows


def _queue_verifications(c, job_ids: list[str], now: float) -> list[str]:
    """Insert queued verifications for those of ``job_ids`` that have none (event ``verify_created``)."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return []
    have = set(c.execute(sa.select(verifications.c.job_id).where(verifications.c.job_id.in_(ids))).scalars())
    new = [i for i in ids if i not in have]
    if new:
        insert = (sqlite_insert if c.dialect.name == "sqlite" else pg_insert)(verifications)
        c.execute(insert.on_conflict_do_nothing(), [{"job_id": i, "status": "queued", "attempts": 0, "created_at": now}
                                                    for i in new])
        c.execute(_EVENT, [{"job_id": i, "kind": "verify_created", "at": now} for i in new])
    return new


def merged_result(job: dict) -> dict | None:
    """The job's ML result, with ``dft`` and ``delta_phi`` of its verification once that is done."""
    v = job.get("verification")
    if job["result"] is None or not v or v["status"] != "done" or not v["result"]:
        return job["result"]
    return {**job["result"], "dft": v["result"]["dft"], "delta_phi": v["result"]["delta_phi"]}


@dataclass
class Claim:
    """What a worker needs to run a job it has claimed; ``token`` guards its writes."""

    job_id: str
    token: str
    batch_id: str
    name: str
    format: str
    content: str
    options: dict
    structure: dict | None  # as validated at submission; None for jobs stored before it was kept


@dataclass
class VerifyClaim:
    """What a DFT worker needs to verify a job it has claimed; ``token`` guards its writes."""

    job_id: str
    token: str
    name: str
    structure: dict  # the job's validated structure (structure_to_dict)
    ml_phi: float | None  # the job's ML φ (result.phi)


class VerifiedJob(NamedTuple):
    """One finished verification, as :meth:`Store.verified` yields it (a tuple: ``job, values, structure``).

    ``job``: the ``jobs`` row as a dict (``id``, ``batch_id``, ``owner``, ``name``, ``format``, ``content``
    (the submitted text), ``structure`` (structure_to_dict of the validated structure), ``options``,
    ``result`` (the ML result with ``dft`` and ``delta_phi`` added), …) plus ``verification`` (the
    verifications row: ``status`` "done", ``result`` {"dft", "delta_phi"}, ``attempts``, times).
    ``values``: the DFT ELF, float32 ndarray N1×N2×N3, value at fractional (i/N1, j/N2, k/N3) of
    ``structure``. ``structure``: the pymatgen Structure of the DFT grid (lattice in Å; QE's standard
    orientation of the job's cell, same fractional coordinates). ``ElfGrid(structure, values, name)`` is
    the grid (:meth:`grid`), which ``model.volumetric`` writes as cube, ELFCAR or dataset ``.npz``."""

    job: dict
    values: np.ndarray
    structure: Structure

    def grid(self) -> ElfGrid:
        return ElfGrid(self.structure, self.values.astype(np.float64), self.job["name"])


class Store:
    """Every read and write of jobs goes through here (one instance per process)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self._callbacks: dict[str, tuple[bool, bool]] = {}

    # --- the API side -------------------------------------------------------------------------
    def create_batch(self, batch: dict, job_rows: list[dict]) -> None:
        """Insert a batch and its jobs in one transaction (before anything is queued). Rows may leave out
        nullable columns (a cached row carries ``finished_at``, a queued one does not): each row is
        completed with NULLs, since one multi-row INSERT binds the same columns for every row."""
        now = batch["created_at"]
        rows = [{**_JOB_DEFAULTS, **row} for row in job_rows]
        with self.engine.begin() as c:
            c.execute(batches.insert(), batch)
            c.execute(jobs.insert(), rows)
            c.execute(events.insert(), [{"job_id": j["id"], "kind": "created", "at": now} for j in job_rows])

    def mark_published(self, job_ids: list[str], epoch: str | None, *, dft: bool = False) -> None:
        """Note the jobs (``dft``: the verifications of the jobs) as published to broker ``epoch``."""
        if job_ids:
            with self.engine.begin() as c:
                c.execute(_V_PUBLISHED if dft else _PUBLISHED,
                          {"p_ids": list(job_ids), "p_now": time.time(), "p_epoch": epoch})

    def cache_candidates(self, keys: list[str], owner: str, per_key: int = 8) -> dict[str, list[dict]]:
        """For each key, finished computed (not themselves cached) jobs of ``owner`` with it, oldest first.
        The cache is per owner (API key): another key's jobs, their ids and results stay invisible."""
        q = (sa.select(jobs.c.id, jobs.c.cache_key, jobs.c.name, jobs.c.structure, jobs.c.result, jobs.c.has_grid)
             .where(jobs.c.cache_key.in_(sorted(set(keys))), jobs.c.owner == owner, jobs.c.status == "done",
                    jobs.c.cached.is_(False), jobs.c.structure.is_not(None))
             .order_by(jobs.c.finished_at))
        out: dict[str, list[dict]] = {}
        with self.engine.connect() as c:
            for r in c.execute(q).mappings():
                found = out.setdefault(r["cache_key"], [])
                if len(found) < per_key:
                    found.append(dict(r))
        return out

    def job(self, job_id: str, owner: str) -> dict | None:
        """The job row, with ``verification``: its verifications row as a dict, or None (never asked)."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner)).mappings().first()
            return _with_verifications(c, [dict(row)])[0] if row else None

    def list_jobs(self, owner: str, *, status: str | None = None, batch_id: str | None = None, name: str | None = None,
                  limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
        """Jobs of ``owner`` in submission order, filtered, one page (each with ``verification``, as
        :meth:`job`); and the total that match."""
        cond = [jobs.c.owner == owner]
        if status:
            cond.append(jobs.c.status == status)
        if batch_id:
            cond.append(jobs.c.batch_id == batch_id)
        if name:
            cond.append(jobs.c.name == name)
        q = sa.select(jobs).where(*cond).order_by(jobs.c.created_at, jobs.c.seq).limit(limit).offset(offset)
        with self.engine.connect() as c:
            rows = _with_verifications(c, [dict(r) for r in c.execute(q).mappings()])
            total = c.execute(sa.select(sa.func.count()).select_from(jobs).where(*cond)).scalar_one()
        return rows, total

    def batch(self, batch_id: str, owner: str) -> tuple[dict, dict[str, int]] | None:
        """The batch row and its job counts by status, or None."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(batches).where(batches.c.id == batch_id, batches.c.owner == owner)).mappings().first()
            if row is None:
                return None
            counts = dict(c.execute(sa.select(jobs.c.status, sa.func.count()).where(jobs.c.batch_id == batch_id)
                                    .group_by(jobs.c.status)).all())
        return dict(row), {s: counts.get(s, 0) for s in STATUSES}

    def grid(self, job_id: str) -> np.ndarray | None:
        """The kept ELF grid of ``job_id`` (float32, N1×N2×N3), or None."""
        with self.engine.connect() as c:
            data = c.execute(sa.select(grids.c.npz).where(grids.c.job_id == job_id)).scalar_one_or_none()
        if data is None:
            return None
        with np.load(io.BytesIO(data)) as npz:
            return npz["values"]

    def counts(self) -> dict[str, int]:
        """Jobs by status, and how many were answered from the cache (for /metrics)."""
        with self.engine.connect() as c:
            out = dict(c.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)).all())
            cached = c.execute(sa.select(sa.func.count()).select_from(jobs).where(jobs.c.cached.is_(True))).scalar_one()
        return {**{s: out.get(s, 0) for s in STATUSES}, "cached": cached}

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))

    # --- the worker side ----------------------------------------------------------------------
    def claim(self, job_id: str, worker: str, lease_s: float, max_attempts: int = 3) -> Claim | None:
        """Take the job if it is queued, or running under a claim whose heartbeat is older than
        ``lease_s`` (its worker died); None when it is finished or alive elsewhere. A job already
        claimed ``max_attempts`` times (its workers keep dying: time limit, out of memory) fails instead."""
        claims = self.claim_many([job_id], worker, lease_s, max_attempts)
        return claims[0] if claims else None

    def claim_many(self, job_ids: list[str], worker: str, lease_s: float, max_attempts: int = 3, *,
                   fresh_only: bool = False) -> list[Claim]:
        """:meth:`claim` every job of ``job_ids`` that can be taken, in one transaction and under one
        token (each finishes on its own); the claims in the order of ``job_ids``. With ``fresh_only``,
        only queued jobs never claimed before are taken (a batch leaves a job that was lost with a worker
        to run alone, so a job that kills its worker cannot take its batch-mates' attempts with it)."""
        if not job_ids:
            return []
        token, now = new_id(), time.time()
        ids = list(dict.fromkeys(job_ids))
        params = {"p_ids": ids, "p_max": max_attempts, "p_token": token, "p_worker": worker, "p_now": now}
        with self.engine.begin() as c:
            if fresh_only:
                rows = c.execute(_CLAIM_FRESH, params).all()
            else:
                rows = c.execute(_CLAIM, {**params, "p_stale": now - lease_s}).all()
            if rows:
                claimed = [{"job_id": r.id, "kind": "claimed", "at": now, "worker": worker} for r in rows]
                c.execute(_EVENT, claimed[0] if len(claimed) == 1 else claimed)
            taken = {r.id for r in rows}
            rest = [i for i in ids if i not in taken]
            if rest and not fresh_only:
                error = {"error": {"code": "worker_lost", "input": None, "message":
                                   f"the job's worker was lost {max_attempts} times (killed for time or memory?)"}}
                takeable = sa.or_(jobs.c.status == "queued",
                                  sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < now - lease_s))
                lost = c.execute(jobs.update().where(jobs.c.id.in_(rest), takeable, jobs.c.attempts >= max_attempts)
                                 .values(status="failed", error=error, finished_at=now, claim=None)
                                 .returning(jobs.c.id)).scalars().all()
                if lost:
                    c.execute(_EVENT, [{"job_id": i, "kind": "failed", "at": now, "worker": worker} for i in lost])
        found = {r.id: Claim(r.id, token, r.batch_id, r.name, r.format, r.content, dict(r.options), r.structure)
                 for r in rows}
        return [found[i] for i in ids if i in found]

    def reserve(self, job_ids: list[str], worker: str, *, unheld: bool = False) -> str:
        """Mark the still-queued jobs of ``job_ids`` as held by ``worker`` (one message carries them all)
        under a new token, with a heartbeat; they stay queued until claimed one by one. If the worker
        dies, their heartbeat goes stale and :meth:`requeue_dead` hands them back to the sweep. A reservation
        replaces an older one, except with ``unheld``: then only jobs no token holds are taken (a Celery
        worker's main process on receiving a message, which must not undo its pool process's reservation)."""
        token, now = new_id(), time.time()
        with self.engine.begin() as c:
            c.execute(_RESERVE_UNHELD if unheld else _RESERVE,
                      {"p_ids": list(job_ids), "p_token": token, "p_worker": worker, "p_now": now})
        return token

    def release(self, token: str) -> list[str]:
        """Give back the jobs still held under reservation ``token`` (unpublished: the sweep re-sends them)."""
        with self.engine.begin() as c:
            return list(c.execute(jobs.update().where(jobs.c.claim == token, jobs.c.status == "queued")
                                  .values(claim=None, published_at=None).returning(jobs.c.id)).scalars())

    def has_callback(self, batch_id: str) -> bool:
        """Whether the batch asked for a callback (fixed at creation, so remembered per process)."""
        return self._batch_flags(batch_id)[0]

    def wants_verification(self, batch_id: str) -> bool:
        """Whether the batch asked for DFT verifications (``verify`` or ``verify_top``; remembered)."""
        return self._batch_flags(batch_id)[1]

    def _batch_flags(self, batch_id: str) -> tuple[bool, bool]:
        known = self._callbacks.get(batch_id)
        if known is None:
            with self.engine.connect() as c:
                row = c.execute(sa.select(batches.c.callback_url, batches.c.verify, batches.c.verify_top)
                                .where(batches.c.id == batch_id)).first()
            if len(self._callbacks) >= 4096:
                self._callbacks.clear()
            known = self._callbacks[batch_id] = (row is not None and row.callback_url is not None,
                                                 row is not None and bool(row.verify or row.verify_top))
        return known

    def heartbeat(self, claim: Claim) -> None:
        self.heartbeat_tokens([claim.token])

    def heartbeat_tokens(self, tokens: list[str]) -> None:
        """Refresh the heartbeat of every job claimed or reserved, and every verification claimed, under
        one of ``tokens``."""
        if tokens:
            with self.engine.begin() as c:
                c.execute(_HEARTBEAT, {"p_tokens": list(tokens), "p_now": time.time()})
                c.execute(_V_HEARTBEAT, {"p_tokens": list(tokens), "p_now": time.time()})

    def heartbeat_held(self, tokens: set[str]) -> set[str]:
        """Refresh the heartbeat of every job held under one of ``tokens``; the tokens that still hold a job
        (a token on no row was replaced by a claim or another reservation, or its jobs were re-sent)."""
        if not tokens:
            return set()
        with self.engine.begin() as c:
            return set(c.execute(_HEARTBEAT_HELD, {"p_tokens": list(tokens), "p_now": time.time()}).scalars())

    def finish(self, claim: Claim, *, result: dict | None = None, error: dict | None = None,
               grid: np.ndarray | None = None, pipeline_s: float | None = None, worker: str | None = None) -> bool:
        """Write the outcome (``result`` → done, ``error`` → failed, ``grid``: the ELF values to keep) if the
        claim still holds."""
        status = "failed" if error is not None else "done"
        now = time.time()
        with self.engine.begin() as c:
            n = c.execute(_FINISH, {"p_id": claim.job_id, "p_token": claim.token, "p_status": status, "p_result": result,
                                    "p_error": error, "p_now": now, "p_pipeline": pipeline_s,
                                    "p_grid": grid is not None}).rowcount
            if n != 1:
                return False
            if grid is not None:
                c.execute(_GRID, {"job_id": claim.job_id, "npz": _npz(grid)})
            c.execute(_EVENT, {"job_id": claim.job_id, "kind": status, "at": now, "worker": worker})
        return True

    # --- the sweep ------------------------------------------------------------------------------
    def requeue_dead(self, lease_s: float, *, dft: bool = False) -> list[str]:
        """Put running jobs whose heartbeat is older than ``lease_s`` back to queued, and free queued jobs
        whose reservation's heartbeat is that old (:meth:`reserve`); both unpublished. Their ids.
        ``dft``: the same for verifications (event ``verify_requeued``)."""
        table, key, kind = (verifications, verifications.c.job_id, "verify_requeued") if dft else (jobs, jobs.c.id, "requeued")
        t = table.c
        limit = time.time() - lease_s
        dead = sa.and_(t.status == "running", t.heartbeat_at < limit)
        held = sa.and_(t.status == "queued", t.claim.is_not(None), t.heartbeat_at < limit)
        with self.engine.begin() as c:
            ids = list(c.execute(table.update().where(sa.or_(dead, held))
                                 .values(status="queued", claim=None, published_at=None).returning(key)).scalars())
            if ids:
                c.execute(events.insert(), [{"job_id": i, "kind": kind, "at": time.time()} for i in ids])
        return ids

    def queued(self, *, older_than_s: float = 0.0, dft: bool = False) -> list[dict]:
        """Queued jobs (``dft``: verifications) created more than ``older_than_s`` ago: id, broker_epoch,
        published_at."""
        table, key = (verifications, verifications.c.job_id) if dft else (jobs, jobs.c.id)
        q = (sa.select(key.label("id"), table.c.broker_epoch, table.c.published_at)
             .where(table.c.status == "queued", table.c.created_at < time.time() - older_than_s))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]


    # --- DFT verifications ----------------------------------------------------------------------
    def request_verification(self, job_id: str, owner: str) -> tuple[dict | None, bool]:
        """Queue the DFT verification of ``owner``'s job ``job_id`` (it must be done): a new one, or again
        after a failed or cancelled one. (the job row with ``verification``, whether one was queued now);
        (None, False) when there is no such job. A queued, running or done verification is left as it is."""
        now = time.time()
        with self.engine.begin() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner)).mappings().first()
            if row is None:
                return None, False
            queued = False
            if row["status"] == "done":
                queued = bool(_queue_verifications(c, [job_id], now))
                if not queued and c.execute(verifications.update()
                                            .where(verifications.c.job_id == job_id,
                                                   verifications.c.status.in_(("failed", "cancelled")))
                                            .values(status="queued", attempts=0, claim=None, error=None, result=None,
                                                    published_at=None, started_at=None, finished_at=None,
                                                    heartbeat_at=None, created_at=now)).rowcount:
                    c.execute(_EVENT, {"job_id": job_id, "kind": "verify_created", "at": now})
                    queued = True
            return _with_verifications(c, [dict(row)])[0], queued

    def after_screening(self, batch_id: str) -> list[str]:
        """Queue (unpublished: the sweep sends them) the verifications a batch asked for: every done job
        of a ``verify`` batch, and, once a ``verify_top`` batch has no unfinished job, its best
        ``verify_top`` done jobs by ``verify_by`` (taken exactly once). Idempotent; the job ids queued now."""
        now = time.time()
        with self.engine.begin() as c:
            b = c.execute(sa.select(batches.c.verify, batches.c.verify_top, batches.c.verify_by, batches.c.verify_state)
                          .where(batches.c.id == batch_id)).first()
            if b is None or not (b.verify or b.verify_state == "pending"):
                return []
            done = sa.and_(jobs.c.batch_id == batch_id, jobs.c.status == "done")
            ids: list[str] = []
            if b.verify:
                ids += c.execute(sa.select(jobs.c.id).where(done)).scalars().all()
            if b.verify_state == "pending":
                left = c.execute(sa.select(sa.func.count()).select_from(jobs)
                                 .where(jobs.c.batch_id == batch_id, jobs.c.status.in_(UNFINISHED))).scalar_one()
                if not left and c.execute(batches.update().where(batches.c.id == batch_id,
                                                                 batches.c.verify_state == "pending")
                                          .values(verify_state="taken")).rowcount == 1:
                    rows = c.execute(sa.select(jobs.c.id, jobs.c.result).where(done)).all()
                    rows = sorted(rows, key=lambda r: rank_key(r.result, b.verify_by or "tc"))
                    ids += [r.id for r in rows[:b.verify_top]]
            return _queue_verifications(c, ids, now)

    def claim_verification(self, job_id: str, worker: str, lease_s: float, max_attempts: int = 3) -> VerifyClaim | None:
        """Take the verification of ``job_id`` if it is queued, or running with a heartbeat older than
        ``lease_s``; None when it is finished, cancelled or alive elsewhere. One claimed ``max_attempts``
        times already (its workers keep dying) fails with ``worker_lost`` instead."""
        v = verifications.c
        token, now = new_id(), time.time()
        takeable = sa.or_(v.status == "queued", sa.and_(v.status == "running", v.heartbeat_at < now - lease_s))
        with self.engine.begin() as c:
            n = c.execute(verifications.update().where(v.job_id == job_id, takeable, v.attempts < max_attempts)
                          .values(status="running", claim=token, worker=worker, started_at=now, heartbeat_at=now,
                                  attempts=v.attempts + 1)).rowcount
            if n != 1:
                error = {"error": {"code": "worker_lost", "input": None, "message":
                                   f"the verification's worker was lost {max_attempts} times (killed for time or memory?)"}}
                if c.execute(verifications.update().where(v.job_id == job_id, takeable, v.attempts >= max_attempts)
                             .values(status="failed", error=error, finished_at=now, claim=None)).rowcount:
                    c.execute(_EVENT, {"job_id": job_id, "kind": "verify_failed", "at": now, "worker": worker})
                return None
            c.execute(_EVENT, {"job_id": job_id, "kind": "verify_claimed", "at": now, "worker": worker})
            row = c.execute(sa.select(jobs.c.name, jobs.c.structure, jobs.c.result).where(jobs.c.id == job_id)).one()
        return VerifyClaim(job_id, token, row.name, row.structure, (row.result or {}).get("phi"))

    def verification_held(self, token: str) -> bool:
        """Whether a verification is still running under ``token`` (False once cancelled or taken over)."""
        with self.engine.connect() as c:
            return c.execute(sa.select(verifications.c.job_id).where(
                verifications.c.claim == token, verifications.c.status == "running")).first() is not None

    def finish_verification(self, claim: VerifyClaim, *, result: dict | None = None, error: dict | None = None,
                            grid: ElfGrid | None = None, worker: str | None = None) -> bool:
        """Write the outcome (``result`` {"dft", "delta_phi"} and the DFT ``grid`` → done, ``error`` →
        failed) if the claim still holds (not cancelled, not taken over)."""
        status = "failed" if error is not None else "done"
        now = time.time()
        v = verifications.c
        with self.engine.begin() as c:
            n = c.execute(verifications.update().where(v.job_id == claim.job_id, v.claim == claim.token,
                                                       v.status == "running")
                          .values(status=status, result=result, error=error, finished_at=now, claim=None,
                                  grid_structure=None if grid is None else structure_to_dict(grid.structure))).rowcount
            if n != 1:
                return False
            if grid is not None:
                c.execute(dft_grids.delete().where(dft_grids.c.job_id == claim.job_id))
                c.execute(dft_grids.insert(), {"job_id": claim.job_id, "npz": _npz(grid.values, np.float64)})
            c.execute(_EVENT, {"job_id": claim.job_id, "kind": f"verify_{status}", "at": now, "worker": worker})
        return True

    def cancel_verification(self, job_id: str, owner: str) -> dict | None:
        """Cancel ``owner``'s queued or running verification of ``job_id`` (a running one's worker sees it
        and stops its DFT run); the job row with ``verification``, or None when there is no such job."""
        now = time.time()
        v = verifications.c
        with self.engine.begin() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner)).mappings().first()
            if row is None:
                return None
            if c.execute(verifications.update().where(v.job_id == job_id, v.status.in_(UNFINISHED))
                         .values(status="cancelled", claim=None, finished_at=now)).rowcount:
                c.execute(_EVENT, {"job_id": job_id, "kind": "verify_cancelled", "at": now})
            return _with_verifications(c, [dict(row)])[0]

    def dft_grid(self, job_id: str) -> ElfGrid | None:
        """The DFT ELF grid of a done verification of ``job_id`` (on the DFT cell, float64 as computed), or None."""
        with self.engine.connect() as c:
            data = c.execute(sa.select(dft_grids.c.npz).where(dft_grids.c.job_id == job_id)).scalar_one_or_none()
            cell = c.execute(sa.select(verifications.c.grid_structure, jobs.c.name)
                             .join(jobs, jobs.c.id == verifications.c.job_id)
                             .where(verifications.c.job_id == job_id)).first()
        if data is None or cell is None or cell.grid_structure is None:
            return None
        with np.load(io.BytesIO(data)) as npz:
            return ElfGrid(structure_from_dict(cell.grid_structure), npz["values"].astype(np.float64), cell.name)

    def verified(self, owner: str | None = None) -> Iterator[VerifiedJob]:
        """Every job with a finished (done) verification, of ``owner`` or of everyone (None), oldest
        verification first, as :class:`VerifiedJob` ``(job, values, structure)``: ``job`` the job dict
        (incl. ``name``, ``format``, ``content``, ``structure``, ``options``, ``result`` = ML result +
        ``dft`` + ``delta_phi``, ``verification``), ``values`` the DFT ELF (float32 ndarray N1×N2×N3),
        ``structure`` the DFT grid's pymatgen Structure (lattice Å). One grid in memory at a time."""
        cond = [verifications.c.status == "done"] + ([jobs.c.owner == owner] if owner is not None else [])
        q = (sa.select(jobs.c.id).join(verifications, verifications.c.job_id == jobs.c.id).where(*cond)
             .order_by(verifications.c.finished_at))
        with self.engine.connect() as c:
            ids = c.execute(q).scalars().all()
        for job_id in ids:
            with self.engine.connect() as c:
                row = c.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
                job = _with_verifications(c, [dict(row)])[0]
                data = c.execute(sa.select(dft_grids.c.npz).where(dft_grids.c.job_id == job_id)).scalar_one_or_none()
            if data is None:
                continue
            job["result"] = merged_result(job)
            with np.load(io.BytesIO(data)) as npz:
                values = npz["values"].astype(np.float32)
            yield VerifiedJob(job, values, structure_from_dict(job["verification"]["grid_structure"]))

    def verification_structures(self, job_ids: list[str]) -> dict[str, dict]:
        """The validated structure of each job (for the DFT time limit: atoms and k-points)."""
        with self.engine.connect() as c:
            return dict(c.execute(sa.select(jobs.c.id, jobs.c.structure).where(jobs.c.id.in_(list(job_ids)))).all())

    # --- callbacks ------------------------------------------------------------------------------
    def take_callback(self, batch_id: str) -> dict | None:
        """If the batch has a pending callback and no unfinished job, take it (exactly one caller does)."""
        with self.engine.begin() as c:
            state = c.execute(sa.select(batches.c.callback_state).where(batches.c.id == batch_id)).scalar_one_or_none()
            if state != "pending":  # the common case: no callback asked, or already taken
                return None
            left = c.execute(sa.select(sa.func.count()).select_from(jobs)
                             .where(jobs.c.batch_id == batch_id, jobs.c.status.in_(UNFINISHED))).scalar_one()
            if left:
                return None
            n = c.execute(batches.update().where(batches.c.id == batch_id, batches.c.callback_state == "pending")
                          .values(callback_state="sending")).rowcount
            if n != 1:
                return None
            return dict(c.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().one())

    def callback_done(self, batch_id: str, ok: bool) -> None:
        with self.engine.begin() as c:
            c.execute(batches.update().where(batches.c.id == batch_id).values(callback_state="sent" if ok else "failed"))

    def event_counts(self, job_id: str) -> dict[str, int]:
        """How many times each event happened to a job (the fault tests check done == 1)."""
        with self.engine.connect() as c:
            return dict(c.execute(sa.select(events.c.kind, sa.func.count()).where(events.c.job_id == job_id)
                                  .group_by(events.c.kind)).all())
