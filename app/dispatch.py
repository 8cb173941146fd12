"""Where stored jobs go to run: an in-process pool (embedded mode) or Celery over Redis; and the sweep
that re-sends every job whose message was lost, so no accepted structure is ever lost.

A job is *lost* when it is

* running with a heartbeat older than the lease (its worker was killed or its machine died);
* queued and reserved by a worker that took its message (several jobs per message) with a reservation
  heartbeat older than the lease (that worker died before reaching the job);
* queued but never published (the broker was down when the API stored it);
* queued and published to a broker instance that is gone (Redis restarted: its ``run_id`` changed);
* queued and published longer ago than ``requeue_after_s`` (a catch-all; a duplicate is harmless).

Re-sending is always safe: a worker runs a job only if it wins the store's claim (:meth:`Store.claim`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from elfscreen.app.config import Settings
from elfscreen.app.jobs import run_job
from elfscreen.app.store import Store

log = logging.getLogger("elfscreen.dispatch")
GRACE_S = 5.0  # a queued job younger than this may still be on its way to the broker


class EmbeddedDispatcher:
    """Runs jobs in a thread pool of this process (the model is loaded once, shared by the threads).
    A job sent with its structure (parsed by the API's validation) runs without parsing it again."""

    mode = "embedded"
    MAX_KEPT_SITES = 50_000  # parsed structures kept for queued jobs (atoms in all); beyond, jobs parse again

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self._pool = ThreadPoolExecutor(max_workers=settings.embedded_workers, thread_name_prefix="elfscreen-job")
        self._pending: set[str] = set()
        self._structures: dict[str, object] = {}
        self._kept_sites = 0
        self._lock = threading.Lock()
        self.worker = f"embedded@{socket.gethostname()}:{os.getpid()}"

    def send(self, job_ids: list[str], structures: dict | None = None) -> None:
        structures = structures or {}
        with self._lock:
            fresh = [j for j in job_ids if j not in self._pending]
            self._pending.update(fresh)
            for job_id in fresh:
                s = structures.get(job_id)
                if s is not None and self._kept_sites + len(s) <= self.MAX_KEPT_SITES:
                    self._structures[job_id] = s
                    self._kept_sites += len(s)
        for job_id in fresh:
            self._pool.submit(self._run, job_id)
        self.store.mark_published(fresh, None)

    def _run(self, job_id: str) -> None:
        with self._lock:
            structure = self._structures.pop(job_id, None)
            self._kept_sites -= 0 if structure is None else len(structure)
        try:
            run_job(self.store, job_id, self.settings, self.worker, structure)
        except Exception:  # the store is unreachable: the job stays unfinished and the sweep re-sends it
            log.exception("job %s could not be run", job_id)
        finally:
            with self._lock:
                self._pending.discard(job_id)

    def lost(self, queued: list[dict]) -> list[str]:
        with self._lock:
            return [q["id"] for q in queued if q["id"] not in self._pending]

    def ready(self) -> dict:
        return {"pool_threads": self.settings.embedded_workers, "pending": len(self._pending)}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class CeleryDispatcher:
    """Publishes the job ids to the ``cpu`` or ``gpu`` queue over Redis, several per message
    (:func:`messages`): on ``cpu`` a worker runs a message's jobs one after another, on ``gpu`` as one
    batch (``worker/tasks.py``). A message of k jobs gets k times the per-job time limit."""

    mode = "celery"

    def __init__(self, store: Store, settings: Settings):
        from elfscreen.worker.celery_app import BATCH_TASK, MANY_TASK, make_app

        self.store, self.settings = store, settings
        self.app = make_app(settings)
        self.batched = settings.queue == "gpu"
        self.task_name = BATCH_TASK if self.batched else MANY_TASK
        self._epoch: tuple[float, str | None] = (0.0, None)

    def epoch(self, max_age_s: float = 1.0) -> str | None:
        """The broker instance's ``run_id`` (changes when Redis restarts), cached ``max_age_s``."""
        at, run_id = self._epoch
        if time.monotonic() - at > max_age_s:
            with self.app.connection_for_write() as conn:
                client = conn.default_channel.client
                run_id = client.info("server")["run_id"]
            self._epoch = (time.monotonic(), run_id)
        return run_id

    def send(self, job_ids: list[str], structures: dict | None = None) -> None:
        """Publish; on a broker failure the jobs stay stored and unpublished for the sweep. (``structures``
        is for the embedded pool: a message carries job ids only, the store holds the rest.)"""
        if not job_ids:
            return
        limit = self.settings.task_time_limit_s
        try:
            epoch = self.epoch()  # read before publishing: a restart in between re-sends, never loses
            with self.app.producer_or_acquire() as producer:
                for ids in messages(job_ids, self.settings.gpu_batch if self.batched else self.settings.jobs_per_message,
                                    guided=not self.batched):
                    self.app.send_task(self.task_name, args=[ids], queue=self.settings.queue, producer=producer,
                                       time_limit=limit * len(ids), soft_time_limit=0.95 * limit * len(ids),
                                       retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2})
        except Exception as exc:
            log.warning("broker unreachable (%s): %d jobs left for the sweep", exc, len(job_ids))
            return
        self.store.mark_published(job_ids, epoch)

    def lost(self, queued: list[dict]) -> list[str]:
        epoch = self.epoch(max_age_s=0.0)
        stale = time.time() - self.settings.requeue_after_s
        return [q["id"] for q in queued
                if q["published_at"] is None or q["broker_epoch"] != epoch or q["published_at"] < stale]

    def ready(self) -> dict:
        return {"broker_run_id": self.epoch(max_age_s=0.0), "queue": self.settings.queue}

    def close(self) -> None:
        self.app.close()


def messages(job_ids: list[str], most: int, guided: bool = True) -> list[list[str]]:
    """Split ``job_ids`` into messages of at most ``most`` jobs. ``guided``: each message takes a quarter
    of the jobs left (at least 1), so a batch ends with single jobs and several workers finish together
    (guided self-scheduling); else as many full messages as can be (a GPU worker's batches)."""
    out, at, n = [], 0, len(job_ids)
    most = max(1, int(most))
    while at < n:
        size = min(most, max(1, -(-(n - at) // 4))) if guided else most
        out.append(list(job_ids[at:at + size]))
        at += size
    return out


def make_dispatcher(store: Store, settings: Settings):
    return CeleryDispatcher(store, settings) if settings.broker_url else EmbeddedDispatcher(store, settings)


def sweep(store: Store, dispatcher, lease_s: float) -> list[str]:
    """Re-send every lost job (see the module docstring); the ids re-sent."""
    dead = store.requeue_dead(lease_s)
    lost = dispatcher.lost(store.queued(older_than_s=GRACE_S))
    ids = sorted(set(dead) | set(lost))
    if ids:
        log.warning("re-sending %d lost jobs (%d from lost workers)", len(ids), len(dead))
        dispatcher.send(ids)
    return ids


class Sweeper:
    """Runs :func:`sweep` every ``settings.sweep_every_s`` in a daemon thread."""

    def __init__(self, store: Store, dispatcher, settings: Settings):
        self._stop = threading.Event()
        self._args = (store, dispatcher, settings)
        self._thread = threading.Thread(target=self._loop, name="elfscreen-sweep", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def _loop(self) -> None:
        store, dispatcher, settings = self._args
        while not self._stop.wait(settings.sweep_every_s):
            try:
                sweep(store, dispatcher, settings.lease_s)
            except Exception as exc:  # broker or store down: try again next round
                log.warning("sweep failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
