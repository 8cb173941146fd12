"""The Celery application: Redis broker, messages of job ids, results in the job store.

Start a worker with ``celery -A elfscreen.worker.celery_app worker -Q cpu`` (or ``-Q gpu`` with
``ELFSCREEN_DEVICE=cuda`` and ``--concurrency 1``), and a DFT worker with ``-Q dft -c <cores>`` on a
machine with Quantum ESPRESSO (one pw.x per process; :data:`VERIFY_TASK`, one verification per message,
its time limit scaled by atoms and k-points by the publisher). The API publishes up to
``ELFSCREEN_JOBS_PER_MESSAGE`` job ids per message to ``cpu`` (:data:`MANY_TASK`: run one after another)
and ``ELFSCREEN_GPU_BATCH`` to ``gpu`` (:data:`BATCH_TASK`: predicted as one batch). Delivery is
at-least-once: a message is acknowledged only after its jobs ran (``acks_late``), and given back when
the worker process dies (``reject_on_worker_lost``); the store's claim makes a second delivery harmless,
and its reservations let the sweep re-send the jobs of a message whose worker died.

Threads: the default concurrency is the usable cores (affinity mask, cgroup quota; not the machine's
count), and each worker process gets an equal share of :func:`~elfscreen.model.threads.thread_count`
for torch, numba and BLAS (``ELFSCREEN_THREADS`` overrides the total).
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Queue

from elfscreen.app.config import Settings
from elfscreen.model.threads import configure_threads, thread_count, usable_cores

TASK_NAME = "elfscreen.screen"  # one job id (messages published before batching)
MANY_TASK = "elfscreen.screen_many"  # a list of job ids, run one after another
BATCH_TASK = "elfscreen.screen_batch"  # a list of job ids, predicted as one batch
VERIFY_TASK = "elfscreen.verify"  # one job id whose DFT verification to run
DFT_QUEUE = "dft"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def make_app(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (the API's publisher and the worker share it)."""
    app = Celery("elfscreen", broker=settings.broker_url or DEFAULT_BROKER, include=["elfscreen.worker.tasks"])
    app.conf.update(
        task_queues=[Queue("cpu"), Queue("gpu"), Queue(DFT_QUEUE)],
        task_default_queue="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # results live in the job store
        task_serializer="json",
        accept_content=["json"],
        task_time_limit=settings.task_time_limit_s,  # per job: a message of k jobs is sent with k times it
        task_soft_time_limit=settings.task_time_limit_s * 0.95,
        # a pool process reports ready only after worker_process_init (the model load, CUDA set-up); Celery's
        # default of 4 s would kill a slow replacement process again and again
        worker_proc_alive_timeout=settings.process_start_s,
        # Redis redelivers an unacknowledged message after this; longer than any message, else it would run
        # twice (harmless, but wasted); a lost worker's jobs come back sooner through the sweep
        broker_transport_options={"visibility_timeout": int(settings.task_time_limit_s * max(
            1, settings.jobs_per_message, settings.gpu_batch)) + 600},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a Redis restart
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        worker_concurrency=usable_cores(),  # `-c N` overrides
    )
    return app


@worker_init.connect
def _share_threads(sender=None, **_) -> None:
    """The worker's main process: each of its ``concurrency`` processes gets an equal share of the threads
    (set here, inherited by the forked pool processes; a solo pool runs the jobs in this process)."""
    concurrency = getattr(sender, "concurrency", None) or 1
    configure_threads(max(1, thread_count() // concurrency))


@worker_process_init.connect
def _apply_threads(**_) -> None:
    configure_threads()  # the share chosen in the main process, applied to the libraries loaded by now


app = make_app(Settings.from_env())
