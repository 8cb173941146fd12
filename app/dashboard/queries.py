"""Read-only queries of the dashboard over the job store's tables (:mod:`elfscreen.app.store`)."""
from __future__ import annotations

import sqlalchemy as sa

from elfscreen.app.store import STATUSES, Store, batches, jobs, verifications

# what a table row needs: no structure text, no claim bookkeeping; and the job's DFT verification, if any
_ROW_COLUMNS = (jobs.c.id, jobs.c.batch_id, jobs.c.name, jobs.c.status, jobs.c.cached, jobs.c.cached_from,
                jobs.c.options, jobs.c.has_grid, jobs.c.created_at, jobs.c.finished_at, jobs.c.result, jobs.c.error,
                verifications.c.status.label("v_status"), verifications.c.attempts.label("v_attempts"),
                verifications.c.result.label("v_result"), verifications.c.error.label("v_error"))
_WITH_VERIFICATION = jobs.outerjoin(verifications, verifications.c.job_id == jobs.c.id)


def _row(found) -> dict:
    """A result row as a dict, with ``verification`` (status, attempts, result, error) or None (never asked)."""
    row = dict(found)
    status, attempts, result, error = (row.pop(k) for k in ("v_status", "v_attempts", "v_result", "v_error"))
    row["verification"] = None if status is None else {"status": status, "attempts": attempts, "result": result,
                                                        "error": error}
    return row


def batch_page(store: Store, owner: str, limit: int, offset: int) -> tuple[list[dict], int]:
    """The batches of ``owner``, newest first, one page, each with ``counts`` of its jobs by status; and
    how many batches there are."""
    cond = batches.c.owner == owner
    with store.engine.connect() as c:
        rows = [dict(r) for r in c.execute(sa.select(batches.c.id, batches.c.created_at, batches.c.total).where(cond)
                                          .order_by(batches.c.created_at.desc()).limit(limit).offset(offset)).mappings()]
        total = c.execute(sa.select(sa.func.count()).select_from(batches).where(cond)).scalar_one()
        found = c.execute(sa.select(jobs.c.batch_id, jobs.c.status, sa.func.count())
                          .where(jobs.c.batch_id.in_([r["id"] for r in rows]))
                          .group_by(jobs.c.batch_id, jobs.c.status)).all()
    for row in rows:
        row["counts"] = dict.fromkeys(STATUSES, 0)
    by_id = {row["id"]: row for row in rows}
    for batch_id, status, n in found:
        by_id[batch_id]["counts"][status] = n
    return rows, total


def result_rows(store: Store, owner: str, *, batch_id: str | None = None, status: str | None = None,
                limit: int = 1000, offset: int = 0) -> tuple[list[dict], int]:
    """Jobs of ``owner`` for the results table (each with its ``verification``, see :func:`_row`), in submission
    order, one page; and how many match."""
    cond = [jobs.c.owner == owner]
    if batch_id:
        cond.append(jobs.c.batch_id == batch_id)
    if status:
        cond.append(jobs.c.status == status)
    q = (sa.select(*_ROW_COLUMNS).select_from(_WITH_VERIFICATION).where(*cond)
         .order_by(jobs.c.created_at, jobs.c.seq).limit(limit).offset(offset))
    with store.engine.connect() as c:
        rows = [_row(r) for r in c.execute(q).mappings()]
        total = c.execute(sa.select(sa.func.count()).select_from(jobs).where(*cond)).scalar_one()
    return rows, total


def verified_rows(store: Store, owner: str, limit: int) -> tuple[list[dict], int]:
    """Jobs of ``owner`` whose DFT verification is done (as :func:`result_rows`), oldest verification first, at
    most ``limit``; and how many there are."""
    cond = [jobs.c.owner == owner, verifications.c.status == "done"]
    q = (sa.select(*_ROW_COLUMNS).select_from(_WITH_VERIFICATION).where(*cond)
         .order_by(verifications.c.finished_at).limit(limit))
    with store.engine.connect() as c:
        rows = [_row(r) for r in c.execute(q).mappings()]
        total = c.execute(sa.select(sa.func.count()).select_from(_WITH_VERIFICATION).where(*cond)).scalar_one()
    return rows, total


def computed_job(store: Store, row: dict) -> dict:
    """The job whose computation ``row`` shows: itself, or the job it was answered from (``cached_from``,
    possibly another owner's: the cache is shared, and only its structure and options are read).
    Its name, format, content (the structure text), options and result."""
    job_id = row["cached_from"] or row["id"]
    q = sa.select(jobs.c.name, jobs.c.format, jobs.c.content, jobs.c.options, jobs.c.result).where(jobs.c.id == job_id)
    with store.engine.connect() as c:
        return dict(c.execute(q).mappings().one())
