"""The service's settings, read once from ``ELFSCREEN_*`` environment variables.

Every setting has a default that gives the embedded mode (no broker, SQLite in the working
directory), so ``elfscreen serve`` needs none of them. Sizes in bytes, times in seconds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from elfscreen.model.threads import usable_cores  # affinity mask and cgroup quota: the cores a pool may fill


def _env(name: str, default, cast=str):
    raw = os.environ.get(f"ELFSCREEN_{name}")
    return default if raw is None or raw == "" else cast(raw)


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _keys(raw: str) -> frozenset[str]:
    return frozenset(k.strip() for k in raw.split(",") if k.strip())


@dataclass(frozen=True)
class Settings:
    """What the API, the embedded pool and the Celery workers are configured with."""

    db_url: str = "sqlite:///elfscreen-jobs.db"
    broker_url: str | None = None  # None: embedded mode (in-process pool)
    queue: str = "cpu"  # Celery queue the API sends jobs to: cpu or gpu
    device: str | None = None  # torch device for the pipeline; None: CUDA when present
    embedded_workers: int = field(default_factory=usable_cores)  # job processes of the embedded pool
    jobs_per_message: int = 8  # most jobs in one Celery message to the cpu queue (run one after another)
    gpu_batch: int = 8  # jobs in one Celery message to the gpu queue (predicted as one batch)
    api_keys: frozenset[str] = field(default_factory=frozenset)  # empty: no key needed
    rate_limit_per_min: int = 0  # submissions per key (or client address) per minute; 0: unlimited
    max_upload_bytes: int = 20 * 1024 * 1024  # one request body
    max_structures: int = 1000  # per request
    max_atoms: int = 500  # per structure (tighter than the CLI's model.limits.MAX_ATOMS)
    max_grid_points: int = 4_000_000  # per structure, N1·N2·N3 of the predicted grid
    parse_workers: int = 2  # sandbox processes that read and check submitted structures
    parse_timeout_s: float = 10.0  # per structure, in the sandbox
    parse_memory_mb: int = 1024  # address space of a sandbox process
    task_time_limit_s: float = 900.0  # hard limit of one job in a Celery worker
    process_start_s: float = 300.0  # a Celery pool process may take this long to start (it loads the model first)
    dft_workers: int = 1  # processes of the embedded DFT pool (one pw.x each)
    dft_time_limit_s: float = 3600.0  # hard limit of a DFT verification of ≤ 8 atoms and ≤ 64 k-points; scaled up
    lease_s: float = 60.0  # a running job whose heartbeat is older than this is re-queued
    requeue_after_s: float = 3600.0  # a queued job published longer ago than this is published again
    sweep_every_s: float = 15.0  # how often the API process runs the lost-job sweep
    callback_timeout_s: float = 10.0
    callback_allow_private: bool = False  # allow callbacks to loopback/private/link-local addresses
    public_url: str | None = None  # base of the permalinks in responses (https://host/prefix); None: the request's
    test_process_init_delay_s: float = 0.0  # tests only: a Celery pool process waits this long before it loads the model

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            db_url=_env("DB_URL", cls.db_url),
            broker_url=_env("BROKER_URL", None),
            queue=_env("QUEUE", cls.queue),
            device=_env("DEVICE", None),
            embedded_workers=_env("WORKERS", usable_cores(), int),
            jobs_per_message=_env("JOBS_PER_MESSAGE", cls.jobs_per_message, int),
            gpu_batch=_env("GPU_BATCH", cls.gpu_batch, int),
            api_keys=_keys(_env("API_KEYS", "")),
            rate_limit_per_min=_env("RATE_LIMIT_PER_MIN", cls.rate_limit_per_min, int),
            max_upload_bytes=_env("MAX_UPLOAD_BYTES", cls.max_upload_bytes, int),
            max_structures=_env("MAX_STRUCTURES", cls.max_structures, int),
            max_atoms=_env("MAX_ATOMS", cls.max_atoms, int),
            max_grid_points=_env("MAX_GRID_POINTS", cls.max_grid_points, int),
            parse_workers=_env("PARSE_WORKERS", cls.parse_workers, int),
            parse_timeout_s=_env("PARSE_TIMEOUT_S", cls.parse_timeout_s, float),
            parse_memory_mb=_env("PARSE_MEMORY_MB", cls.parse_memory_mb, int),
            task_time_limit_s=_env("TASK_TIME_LIMIT_S", cls.task_time_limit_s, float),
            process_start_s=_env("PROCESS_START_S", cls.process_start_s, float),
            dft_workers=_env("DFT_WORKERS", cls.dft_workers, int),
            dft_time_limit_s=_env("DFT_TIME_LIMIT_S", cls.dft_time_limit_s, float),
            lease_s=_env("LEASE_S", cls.lease_s, float),
            requeue_after_s=_env("REQUEUE_AFTER_S", cls.requeue_after_s, float),
            sweep_every_s=_env("SWEEP_EVERY_S", cls.sweep_every_s, float),
            callback_timeout_s=_env("CALLBACK_TIMEOUT_S", cls.callback_timeout_s, float),
            callback_allow_private=_env("CALLBACK_ALLOW_PRIVATE", False, _flag),
            public_url=_env("PUBLIC_URL", None),
            test_process_init_delay_s=_env("TEST_PROCESS_INIT_DELAY_S", 0.0, float),
        )
