"""The Celery tasks: run stored jobs through ``model.pipeline``: one job, the
jobs of a ``cpu`` message one after another (:func:`elfscreen.app.jobs.run_jobs`), or those of a ``gpu`` message as
one batch (:func:`elfscreen.app.jobs.run_batch`, one network call per round of descriptor chunks); and
the DFT verification of one job on the ``dft`` queue (:func:`elfscreen.app.verification.run_verification`). Each job's
structure was parsed and validated once, at submission; the store holds it as JSON.

Each worker process loads the ELF model once, when it starts (not a worker of the ``dft`` queue alone: verifications
need none), and keeps one store connection pool.
Only transient failures are retried (the job store unreachable); a bad structure or model fails its
job with the validation message and is not retried. The worker's main process reserves the jobs of each
screening message as it receives it (:class:`~elfscreen.app.heartbeat.Receipts`, its own store), before a
pool process takes the message.
"""
from __future__ import annotations

import logging
import os
import time
from functools import lru_cache

from celery.signals import task_received, worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

from elfscreen.app.config import Settings
from elfscreen.app.heartbeat import Receipts
from elfscreen.app.jobs import run_batch, run_jobs
from elfscreen.app.store import Store
from elfscreen.app.verification import DFT_NICE, run_verification
from elfscreen.model.errors import InputError
from elfscreen.model.pipeline import get_model
from elfscreen.worker.celery_app import BATCH_TASK, DFT_QUEUE, MANY_TASK, TASK_NAME, VERIFY_TASK, app

log = logging.getLogger("elfscreen.worker")
SETTINGS = Settings.from_env()


@lru_cache(maxsize=1)
def store() -> Store:
    """This process's store (created after the fork, never shared with the parent)."""
    return Store(SETTINGS.db_url)


@worker_process_init.connect
def _load_model(**_) -> None:
    time.sleep(SETTINGS.test_process_init_delay_s)  # 0 but in tests: a pool process that is slow to start
    try:
        if set(app.amqp.queues.consume_from or ()) == {DFT_QUEUE}:  # `-Q dft`: verifications need no ELF model
            log.info("this worker consumes only the %s queue: no ELF model loaded", DFT_QUEUE)
        else:
            get_model(SETTINGS.device)
        store()
    except InputError as err:  # no model installed: every job will fail with this message
        log.error("%s", err)


@lru_cache(maxsize=1)
def receipts() -> Receipts:
    """The main process's reservations of received messages (never used by a pool process)."""
    return Receipts(SETTINGS.db_url, max(SETTINGS.lease_s / 4, 0.5))


@task_received.connect
def _reserve_received(request=None, **_) -> None:
    """The main process, on receiving a screening message: reserve its jobs (their ids: the message's one
    argument), so they come back after the lease should the whole worker die before a pool process takes it."""
    if request.name in (TASK_NAME, MANY_TASK, BATCH_TASK):
        job_ids = [request.args[0]] if request.name == TASK_NAME else request.args[0]
        receipts().reserve(job_ids, f"{request.hostname}:{os.getpid()}")


RETRY = {"bind": True, "autoretry_for": (OperationalError, InterfaceError), "retry_backoff": True,
         "retry_backoff_max": 60, "max_retries": 10}  # only transient failures: the store unreachable


def _worker(task) -> str:
    return f"{task.request.hostname}:{os.getpid()}"


@app.task(name=TASK_NAME, **RETRY)
def screen(self, job_id: str) -> str | None:
    """Screen the stored job ``job_id`` (reserved first, as the jobs of any message); returns its final status
    (None: a duplicate delivery)."""
    return run_jobs(store(), [job_id], SETTINGS, worker=_worker(self))[0]


@app.task(name=MANY_TASK, **RETRY)
def screen_many(self, job_ids: list[str]) -> list[str | None]:
    """Screen the stored jobs ``job_ids`` one after another (the ``cpu`` queue)."""
    return run_jobs(store(), job_ids, SETTINGS, worker=_worker(self))


@app.task(name=BATCH_TASK, **RETRY)
def screen_batch(self, job_ids: list[str]) -> list[str | None]:
    """Screen the stored jobs ``job_ids`` as one batch on this worker's device (the ``gpu`` queue)."""
    return run_batch(store(), job_ids, SETTINGS, worker=_worker(self))


@app.task(name=VERIFY_TASK, **RETRY)
def verify(self, job_id: str) -> str | None:
    """Run the DFT verification of the stored job ``job_id`` (the ``dft`` queue); its final status (None:
    a duplicate delivery, or cancelled). QE runs below the priority of screening on the same machine."""
    if os.nice(0) < DFT_NICE:
        os.nice(DFT_NICE - os.nice(0))
    return run_verification(store(), job_id, SETTINGS, worker=_worker(self))
