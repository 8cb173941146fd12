"""The job store: batches, jobs, kept grids and a job event log, in SQLAlchemy Core.

SQLite by default (one file, WAL), PostgreSQL through a ``postgresql://`` URL. The store is the
source of truth: the API writes a job before it queues it, and a worker may only write a job's
outcome while it holds the job's *claim* (a token set by an atomic conditional UPDATE), so a job
that is delivered twice (a redelivered or re-published message) still finishes exactly once.
Times are UNIX seconds (float).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

UNFINISHED = ("queued", "running")
STATUSES = ("queued", "running", "done", "failed")

metadata = sa.MetaData()

batches = sa.Table(
    "batches", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("callback_url", sa.Text),
    sa.Column("callback_state", sa.String(16)),  # null (none asked), pending, sending, sent, failed
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

grids = sa.Table(
    "grids", metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("cube_gz", sa.LargeBinary, nullable=False),
)

events = sa.Table(
    "job_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # created, claimed, requeued, done, failed
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("worker", sa.String(128)),
)


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


class Store:
    """Every read and write of jobs goes through here (one instance per process)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    # --- the API side -------------------------------------------------------------------------
    def create_batch(self, batch: dict, job_rows: list[dict]) -> None:
        """Insert a batch and its jobs in one transaction (before anything is queued)."""
        now = batch["created_at"]
        with self.engine.begin() as c:
            c.execute(batches.insert(), batch)
            c.execute(jobs.insert(), job_rows)
            c.execute(events.insert(), [{"job_id": j["id"], "kind": "created", "at": now} for j in job_rows])

    def mark_published(self, job_ids: list[str], epoch: str | None) -> None:
        if job_ids:
            with self.engine.begin() as c:
                c.execute(jobs.update().where(jobs.c.id.in_(job_ids), jobs.c.status == "queued")
                          .values(published_at=time.time(), broker_epoch=epoch))

    def cache_candidates(self, keys: list[str], per_key: int = 8) -> dict[str, list[dict]]:
        """For each key, finished computed (not themselves cached) jobs with it, oldest first."""
        q = (sa.select(jobs.c.id, jobs.c.cache_key, jobs.c.name, jobs.c.format, jobs.c.content, jobs.c.result,
                       jobs.c.has_grid)
             .where(jobs.c.cache_key.in_(sorted(set(keys))), jobs.c.status == "done", jobs.c.cached.is_(False))
             .order_by(jobs.c.finished_at))
        out: dict[str, list[dict]] = {}
        with self.engine.connect() as c:
            for r in c.execute(q).mappings():
                found = out.setdefault(r["cache_key"], [])
                if len(found) < per_key:
                    found.append(dict(r))
        return out

    def job(self, job_id: str, owner: str) -> dict | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner)).mappings().first()
        return dict(row) if row else None

    def list_jobs(self, owner: str, *, status: str | None = None, batch_id: str | None = None, name: str | None = None,
                  limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
        """Jobs of ``owner`` in submission order, filtered, one page; and the total that match."""
        cond = [jobs.c.owner == owner]
        if status:
            cond.append(jobs.c.status == status)
        if batch_id:
            cond.append(jobs.c.batch_id == batch_id)
        if name:
            cond.append(jobs.c.name == name)
        q = sa.select(jobs).where(*cond).order_by(jobs.c.created_at, jobs.c.seq).limit(limit).offset(offset)
        with self.engine.connect() as c:
            rows = [dict(r) for r in c.execute(q).mappings()]
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

    def grid(self, job_id: str) -> bytes | None:
        with self.engine.connect() as c:
            return c.execute(sa.select(grids.c.cube_gz).where(grids.c.job_id == job_id)).scalar_one_or_none()

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
        token, now = new_id(), time.time()
        takeable = sa.or_(jobs.c.status == "queued",
                          sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < now - lease_s))
        with self.engine.begin() as c:
            n = c.execute(jobs.update().where(jobs.c.id == job_id, takeable, jobs.c.attempts < max_attempts).values(
                status="running", claim=token, worker=worker, started_at=now, heartbeat_at=now,
                attempts=jobs.c.attempts + 1)).rowcount
            if n != 1:
                error = {"error": {"code": "worker_lost", "input": None, "message":
                                   f"the job's worker was lost {max_attempts} times (killed for time or memory?)"}}
                if c.execute(jobs.update().where(jobs.c.id == job_id, takeable, jobs.c.attempts >= max_attempts)
                             .values(status="failed", error=error, finished_at=now, claim=None)).rowcount:
                    c.execute(events.insert().values(job_id=job_id, kind="failed", at=now, worker=worker))
                return None
            c.execute(events.insert().values(job_id=job_id, kind="claimed", at=now, worker=worker))
            row = c.execute(sa.select(jobs.c.batch_id, jobs.c.name, jobs.c.format, jobs.c.content, jobs.c.options)
                            .where(jobs.c.id == job_id)).one()
        return Claim(job_id, token, row.batch_id, row.name, row.format, row.content, dict(row.options))

    def heartbeat(self, claim: Claim) -> None:
        with self.engine.begin() as c:
            c.execute(jobs.update().where(jobs.c.id == claim.job_id, jobs.c.claim == claim.token)
                      .values(heartbeat_at=time.time()))

    def finish(self, claim: Claim, *, result: dict | None = None, error: dict | None = None,
               cube_gz: bytes | None = None, pipeline_s: float | None = None, worker: str | None = None) -> bool:
        """Write the outcome (``result`` → done, ``error`` → failed) if the claim still holds."""
        status = "failed" if error is not None else "done"
        now = time.time()
        with self.engine.begin() as c:
            n = c.execute(jobs.update().where(jobs.c.id == claim.job_id, jobs.c.claim == claim.token,
                                              jobs.c.status == "running")
                          .values(status=status, result=result, error=error, finished_at=now, pipeline_s=pipeline_s,
                                  has_grid=cube_gz is not None, claim=None)).rowcount
            if n != 1:
                return False
            if cube_gz is not None:
                c.execute(grids.insert().values(job_id=claim.job_id, cube_gz=cube_gz))
            c.execute(events.insert().values(job_id=claim.job_id, kind=status, at=now, worker=worker))
        return True

    # --- the sweep ------------------------------------------------------------------------------
    def requeue_dead(self, lease_s: float) -> list[str]:
        """Put running jobs whose heartbeat is older than ``lease_s`` back to queued; their ids."""
        limit = time.time() - lease_s
        with self.engine.begin() as c:
            ids = list(c.execute(sa.select(jobs.c.id).where(jobs.c.status == "running", jobs.c.heartbeat_at < limit))
                       .scalars())
            if ids:
                c.execute(jobs.update().where(jobs.c.id.in_(ids), jobs.c.status == "running", jobs.c.heartbeat_at < limit)
                          .values(status="queued", claim=None, published_at=None))
                c.execute(events.insert(), [{"job_id": i, "kind": "requeued", "at": time.time()} for i in ids])
        return ids

    def queued(self, *, older_than_s: float = 0.0) -> list[dict]:
        """Queued jobs created more than ``older_than_s`` ago: id, broker_epoch, published_at."""
        q = (sa.select(jobs.c.id, jobs.c.broker_epoch, jobs.c.published_at)
             .where(jobs.c.status == "queued", jobs.c.created_at < time.time() - older_than_s))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

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
