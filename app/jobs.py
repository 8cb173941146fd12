"""Running stored jobs wherever they execute (an embedded pool process or a Celery worker): claim, screen
(:mod:`elfscreen.app.screening`), finish, queue the DFT verifications the batch asked for, and call the
batch's callback when its last job finishes.

A job is written only under its claim (:meth:`~elfscreen.app.store.Store.claim`), so a job delivered twice
still finishes once. Every job of a message (one or several) is reserved for its worker before anything else is
done with it, so the sweep re-sends it after the lease should the worker die before claiming it. While a process
holds jobs their heartbeats are kept fresh (:mod:`elfscreen.app.heartbeat`).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from elfscreen.app.config import Settings
from elfscreen.app.heartbeat import Heartbeats, heartbeats
from elfscreen.app.screening import screen_claim, screen_claims
from elfscreen.app.store import Claim, Store
from elfscreen.app.webhook import notify_batch

log = logging.getLogger("elfscreen.jobs")


def run_job(store: Store, job_id: str, settings: Settings, worker: str) -> str | None:
    """Claim and run one job; returns its final status, or None when it was not ours to run
    (finished already, or running alive elsewhere: a duplicate message)."""
    claim = store.claim(job_id, worker, settings.lease_s)
    if claim is None:
        return None
    with heartbeats(store, settings).hold(claim.token):
        outcome = screen_claim(claim, settings)
    return _finish(store, claim, outcome, settings, worker)


def run_jobs(store: Store, job_ids: list[str], settings: Settings, worker: str) -> list[str | None]:
    """Run the jobs of one message one after another (:func:`run_job` each: claimed just before it runs),
    all of them reserved from the start (:func:`_reserved`), a single job included."""
    with _reserved(store, job_ids, settings, worker):
        return [run_job(store, job_id, settings, worker) for job_id in job_ids]


def run_batch(store: Store, job_ids: list[str], settings: Settings, worker: str) -> list[str | None]:
    """Run the jobs of one message together (a GPU worker), all of them reserved from the start
    (:func:`_reserved`): claim every fresh one at once, predict their grids in one batch
    (:func:`~elfscreen.app.screening.screen_claims`), then finish each on its own, so a job that fails
    fails alone. A job lost once with a worker (``attempts`` > 0) runs alone afterwards, claimed just
    before it runs, so a structure that kills its worker costs only its own attempts.
    Returns each job's final status (None: not ours to run)."""
    with _reserved(store, job_ids, settings, worker) as beats:
        status: dict[str, str | None] = {}
        claims = store.claim_many(job_ids, worker, settings.lease_s, fresh_only=True)
        if claims:
            with beats.hold(claims[0].token):
                for claim, outcome in screen_claims(claims, settings):
                    status[claim.job_id] = _finish(store, claim, outcome, settings, worker)
        for job_id in job_ids:
            if job_id not in status:
                status[job_id] = run_job(store, job_id, settings, worker)
        return [status[job_id] for job_id in job_ids]


@contextmanager
def _reserved(store: Store, job_ids: list[str], settings: Settings, worker: str) -> Iterator[Heartbeats]:
    """Reserve the jobs of a message (:meth:`Store.reserve`) before anything else is done with them, and
    keep the reservation's heartbeat fresh while the block runs (it yields this process's heartbeats):
    should the worker die before it claims one of them, even the only one, the sweep re-sends it after
    the lease (``settings.lease_s``, seconds), not after ``requeue_after_s``. On a normal exit every reserved job has been claimed (the
    claim replaces the reservation) or failed, so nothing is left to release; on an exception the jobs
    still reserved are released for the sweep."""
    token = store.reserve(job_ids, worker)
    beats = heartbeats(store, settings)
    try:
        with beats.hold(token):
            yield beats
    except BaseException:
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
    if store.wants_verification(claim.batch_id):  # queued unpublished: the API's sweep sends them
        store.after_screening(claim.batch_id)
    if store.has_callback(claim.batch_id):
        notify_batch(store, claim.batch_id, settings)
    return "failed" if "error" in outcome else "done"
