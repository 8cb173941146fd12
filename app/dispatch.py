"""Where stored jobs go to run: a pool of job processes (embedded mode) or Celery over Redis; and the sweep
that re-sends every job whose message was lost, so no accepted structure is ever lost.

A job is *lost* when it is

* running with a heartbeat older than the lease (its worker was killed or its machine died);
* queued and reserved by a worker that took its message (one or several jobs) with a reservation
  heartbeat older than the lease (that worker died before claiming the job);
* queued but never published (the broker was down when the API stored it);
* queued and published to a broker instance that is gone (Redis restarted: its ``run_id`` changed);
* queued and published longer ago than ``requeue_after_s`` (a catch-all; a duplicate is harmless).

Re-sending is always safe: a worker runs a job only if it wins the store's claim (:meth:`Store.claim`).
DFT verifications go the same way on their own lane: a separate process pool (embedded: never taking a
job process) or the Celery ``dft`` queue, sent, claimed and swept under the same rules.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from pymatgen.core import Lattice, Structure

from elfscreen.app.config import Settings
from elfscreen.app.jobs import run_jobs
from elfscreen.app.sandbox import fork_server, step_back
from elfscreen.app.store import Store
from elfscreen.app.verification import DFT_NICE, run_verification, time_limit_s
from elfscreen.model.errors import InputError
from elfscreen.model.pipeline import get_model, model_path, screen_structure
from elfscreen.model.threads import configure_threads, thread_count

log = logging.getLogger("elfscreen.dispatch")
GRACE_S = 5.0  # a queued job younger than this may still be on its way to the broker
REQUEST_NICE = 5  # niceness the embedded server's own process (request handling) takes below its jobs


class EmbeddedDispatcher:
    """Runs jobs in a pool of child processes of this server (``settings.embedded_workers``, by default
    one per usable core), each with its own model and store connection, so request handling and jobs
    never share an interpreter (and its lock). A child that dies (killed for memory, a crash) leaves
    its job running with a stale heartbeat: the pool is replaced and the sweep re-sends the job.
    DFT verifications run in a second pool (``settings.dft_workers`` processes at a lower priority, one
    verification per task), so a DFT run never takes a job process."""

    mode = "embedded"

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.worker = f"embedded@{socket.gethostname()}:{os.getpid()}"
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._context = fork_server()
        self._pool = self._new_pool()
        self._dft_pending: set[str] = set()
        self._dft_pool = self._new_dft_pool()
        # Jobs come before requests: the job processes are forked from the fork server, running by now at
        # this process's priority; then this process (request handling) steps back, so a burst of
        # requests slows the answers rather than the jobs already accepted.
        step_back(REQUEST_NICE)
        # start every job process now (model, compiled kernels), not under the first requests
        self._starting = [self._pool.submit(os.getpid) for _ in range(settings.embedded_workers)]
        for _ in range(settings.dft_workers):  # the DFT processes start too, but nothing waits for them
            self._dft_pool.submit(os.getpid)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.settings.embedded_workers,
                                   mp_context=self._context,
                                   initializer=_start_child, initargs=(self.settings, str(model_path())))

    def _new_dft_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.settings.dft_workers, mp_context=self._context,
                                   initializer=_start_dft_child, initargs=(self.settings,))

    def send_verifications(self, job_ids: list[str]) -> None:
        """Queue the verifications of ``job_ids`` in the DFT pool, one task each."""
        with self._lock:
            fresh = [j for j in job_ids if j not in self._dft_pending]
            self._dft_pending.update(fresh)
            pool = self._dft_pool
        for job_id in fresh:
            try:
                future = pool.submit(_verify_in_child, job_id, self.worker)
            except BrokenProcessPool:
                self._replace_pool(pool, "_dft_pool")
                with self._lock:
                    self._dft_pending.discard(job_id)  # the sweep sends it again
                continue
            future.add_done_callback(lambda f, job_id=job_id, pool=pool: self._dft_done(job_id, pool, f))
        self.store.mark_published(fresh, None, dft=True)

    def _dft_done(self, job_id: str, pool: ProcessPoolExecutor, future) -> None:
        with self._lock:
            self._dft_pending.discard(job_id)
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            log.error("a DFT process died while verifying job %s; the sweep re-sends it", job_id)
            self._replace_pool(pool, "_dft_pool")
        elif exc is not None:
            log.error("the verification of job %s could not be run", job_id, exc_info=exc)

    def lost_verifications(self, queued: list[dict]) -> list[str]:
        with self._lock:
            return [q["id"] for q in queued if q["id"] not in self._dft_pending]

    def send(self, job_ids: list[str]) -> None:
        with self._lock:
            fresh = [j for j in job_ids if j not in self._pending]
            self._pending.update(fresh)
            pool = self._pool
        # several jobs per task, as in Celery messages: each hand-over goes through this process's threads,
        # which a burst of requests keeps busy
        for ids in messages(fresh, self.settings.jobs_per_message):
            try:
                future = pool.submit(_run_in_child, ids, self.worker)
            except BrokenProcessPool:
                self._replace_pool(pool)
                with self._lock:
                    self._pending.difference_update(ids)  # the sweep sends them again
                continue
            future.add_done_callback(lambda f, ids=ids, pool=pool: self._done(ids, pool, f))
        self.store.mark_published(fresh, None)

    def _done(self, job_ids: list[str], pool: ProcessPoolExecutor, future) -> None:
        with self._lock:
            self._pending.difference_update(job_ids)
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            log.error("a job process died while running jobs %s; the sweep re-sends them", job_ids)
            self._replace_pool(pool)
        elif exc is not None:  # the store is unreachable: the jobs stay unfinished and the sweep re-sends them
            log.error("jobs %s could not be run", job_ids, exc_info=exc)

    def _replace_pool(self, broken: ProcessPoolExecutor, attr: str = "_pool") -> None:
        with self._lock:
            if getattr(self, attr) is not broken:
                return
            setattr(self, attr, self._new_dft_pool() if attr == "_dft_pool" else self._new_pool())
        broken.shutdown(wait=False, cancel_futures=True)

    def lost(self, queued: list[dict]) -> list[str]:
        with self._lock:
            return [q["id"] for q in queued if q["id"] not in self._pending]

    def wait_started(self, timeout_s: float = 300.0) -> None:
        """Block until every job process has started (the server answers requests only then)."""
        if wait(self._starting, timeout=timeout_s).not_done:
            log.warning("the job processes did not start within %.0f s; serving anyway", timeout_s)

    def ready(self) -> dict:
        return {"job_processes": self.settings.embedded_workers, "pending": len(self._pending),
                "dft_processes": self.settings.dft_workers, "dft_pending": len(self._dft_pending)}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._dft_pool.shutdown(wait=False, cancel_futures=True)


# --- the embedded pool's child processes ------------------------------------------------------------
_child: dict = {}


def _start_child(settings: Settings, model: str) -> None:
    """A job process starts: the server's model (named explicitly: the fork server's environment is the
    one it started with), its own store connections, an equal share of the server's threads for every
    compute pool (torch, numba, BLAS; :mod:`elfscreen.model.threads`)."""
    os.environ["ELFSCREEN_MODEL"] = model
    configure_threads(max(1, thread_count() // max(1, settings.embedded_workers)))
    _child.update(settings=settings, store=Store(settings.db_url))
    try:
        elf_model, _ = get_model(settings.device)
    except InputError as err:  # no model: each job fails with the message
        log.error("%s", err)
        return
    # one tiny screening loads what the first job would (descriptor, network, the sweep's compiled kernel)
    warm = Structure(Lattice.cubic(3.0), ["H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    screen_structure(warm, "warm-up", elf_model, spacing_a=0.6, device=settings.device)


def _run_in_child(job_ids: list[str], worker: str) -> list[str | None]:
    return run_jobs(_child["store"], job_ids, _child["settings"], f"{worker}/{os.getpid()}")


def _start_dft_child(settings: Settings) -> None:
    """A DFT process starts: below the job processes' priority (its QE runs inherit it), one thread, its
    own store connections. It loads no ELF model."""
    os.nice(DFT_NICE)
    configure_threads(1)
    _child.update(settings=settings, store=Store(settings.db_url))


def _verify_in_child(job_id: str, worker: str) -> str | None:
    return run_verification(_child["store"], job_id, _child["settings"], f"{worker}/dft/{os.getpid()}")


class CeleryDispatcher:
    """Publishes the job ids to the ``cpu`` or ``gpu`` queue over Redis, several per message
    (:func:`messages`): on ``cpu`` a worker runs a message's jobs one after another, on ``gpu`` as one
    batch (``worker/tasks.py``). A message of k jobs gets k times the per-job time limit."""

    mode = "celery"

    def __init__(self, store: Store, settings: Settings):
        # The one place the API touches the worker package (which itself runs app.jobs): imported only
        # in Celery mode, so an embedded server needs no Celery and app → worker stays a load-time leaf.
        from elfscreen.worker.celery_app import BATCH_TASK, DFT_QUEUE, MANY_TASK, VERIFY_TASK, make_app

        self.store, self.settings = store, settings
        self.app = make_app(settings)
        self.batched = settings.queue == "gpu"
        self.task_name = BATCH_TASK if self.batched else MANY_TASK
        self.verify_task, self.dft_queue = VERIFY_TASK, DFT_QUEUE
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

    def send(self, job_ids: list[str]) -> None:
        """Publish; on a broker failure the jobs stay stored and unpublished for the sweep."""
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

    def send_verifications(self, job_ids: list[str]) -> None:
        """Publish each verification to the ``dft`` queue, its time limit scaled by atoms and k-points
        (:func:`~elfscreen.app.verification.time_limit_s`); on a broker failure the sweep sends them."""
        if not job_ids:
            return
        structures = self.store.verification_structures(job_ids)
        try:
            epoch = self.epoch()
            with self.app.producer_or_acquire() as producer:
                for job_id in job_ids:
                    limit = time_limit_s(structures[job_id], self.settings.dft_time_limit_s)
                    self.app.send_task(self.verify_task, args=[job_id], queue=self.dft_queue, producer=producer,
                                       time_limit=limit, soft_time_limit=0.95 * limit,
                                       retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2})
        except Exception as exc:
            log.warning("broker unreachable (%s): %d verifications left for the sweep", exc, len(job_ids))
            return
        self.store.mark_published(job_ids, epoch, dft=True)

    def lost_verifications(self, queued: list[dict]) -> list[str]:
        return self.lost(queued)

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
    """Re-send every lost job, then every lost or not yet sent verification (see the module docstring);
    the job ids re-sent."""
    dead = store.requeue_dead(lease_s)
    lost = dispatcher.lost(store.queued(older_than_s=GRACE_S))
    ids = sorted(set(dead) | set(lost))
    if ids:
        log.warning("re-sending %d lost jobs (%d from lost workers)", len(ids), len(dead))
        dispatcher.send(ids)
    dead = store.requeue_dead(lease_s, dft=True)
    # verifications a job process queued after screening (batch options) wait here, unpublished
    lost = dispatcher.lost_verifications(store.queued(older_than_s=0.0, dft=True))
    verify = sorted(set(dead) | set(lost))
    if verify:
        log.info("sending %d verifications (%d from lost workers)", len(verify), len(dead))
        dispatcher.send_verifications(verify)
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
