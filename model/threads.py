"""How many threads elfscreen's compute pools may use, and setting every pool to it.

A pool larger than the cores this process may actually run on oversubscribes them: torch's OpenMP
threads then spin at barriers waiting for a thread that is not running (screening CaH6 took 12 s
instead of 0.8 s with one core held by another process). The default is therefore the *usable*
cores: the process's CPU affinity mask (``taskset``, cpusets) capped by its cgroup CPU quota
(v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, rounded up), never the machine's count.

Which count wins, first found: the ``n`` passed to :func:`configure_threads`, ``$ELFSCREEN_THREADS``
(the override, any count ≥ 1), ``$OMP_NUM_THREADS`` capped by the usable cores, the usable cores.

:func:`configure_threads` applies it to torch (intra-op; inter-op while still allowed), numba,
BLAS/OpenMP libraries already loaded (through threadpoolctl when installed) and, through environment
variables, to those loaded later (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``NUMBA_NUM_THREADS``). It also makes idle OpenMP threads sleep instead of spin
(``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0``) unless the environment says otherwise; like the
other variables these act only on runtimes loaded after the call, so the CLI calls it before anything
imports numpy or torch. Nothing here imports torch or numba: a pool is set only when its library is
already imported, and :func:`configure_threads` is called again once it is (``model.pipeline``).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ENV_OVERRIDE = "ELFSCREEN_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
_POOL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_IDLE_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
_configured: dict[str, int] = {}


def affinity_cores() -> int:
    """Cores in this process's CPU affinity mask (``os.cpu_count()`` where the OS has no masks)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup and its ancestors in cores (quota ÷ period; the smallest
    found), or ``None`` when none is set or readable. cgroup v2 ``cpu.max`` ("max 100000" or
    "200000 100000") and v1 ``cpu.cfs_quota_us`` (−1: none) over ``cpu.cfs_period_us``."""
    limits = []
    for folder in _cgroup_folders(root, proc_cgroup):
        try:
            if (folder / "cpu.max").exists():
                quota, period = (folder / "cpu.max").read_text().split()[:2]
                if quota != "max":
                    limits.append(int(quota) / int(period))
            elif (folder / "cpu.cfs_quota_us").exists():
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                if quota > 0:
                    limits.append(quota / int((folder / "cpu.cfs_period_us").read_text()))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return min(limits) if limits else None


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[Path]:
    """The cgroup folders that may hold this process's CPU quota: its own cgroup (v2 unified entry
    ``0::``, v1 ``cpu`` controller) and each ancestor up to the mount root, which is the container's own
    cgroup when the container's cgroup namespace hides the path above it."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            base = root
        elif "cpu" in controllers.split(","):
            base = next((root / d for d in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / d).is_dir()), None)
            if base is None:
                continue
        else:
            continue
        parts = [p for p in path.strip().split("/") if p]
        found += [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return found or [root, root / "cpu"]


def usable_cores() -> int:
    """Cores this process may use: its affinity mask capped by its cgroup CPU quota (rounded up), ≥ 1."""
    cores = affinity_cores()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return max(1, cores)


def thread_count(n: int | None = None) -> int:
    """The pool size to use: ``n``, else ``$ELFSCREEN_THREADS``, else ``$OMP_NUM_THREADS`` capped by
    :func:`usable_cores`, else :func:`usable_cores`. A bad ``$ELFSCREEN_THREADS`` raises ``ValueError``
    naming it; a bad ``$OMP_NUM_THREADS`` is ignored (other programs set it too)."""
    if n is not None:
        if int(n) < 1:
            raise ValueError(f"thread count must be at least 1, got {n}")
        return int(n)
    raw = os.environ.get(ENV_OVERRIDE, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"${ENV_OVERRIDE} must be a whole number ≥ 1, got {raw!r}")
        return value
    cores = usable_cores()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return min(int(omp), cores)
    return cores


def configured() -> int | None:
    """The count the last :func:`configure_threads` set, ``None`` when this process never called it."""
    return _configured.get("n")


def configure_threads(n: int | None = None) -> int:
    """Set every compute pool of this process to :func:`thread_count` threads (see the module docstring)
    and return that count. Called again without ``n``, it keeps the count of the first call (so a job
    process's share survives the later call made once torch is imported)."""
    n = thread_count(n) if n is not None or "n" not in _configured else _configured["n"]
    _configured["n"] = n
    for var in _POOL_VARS:
        os.environ[var] = str(n)
    for var, value in _IDLE_DEFAULTS.items():
        os.environ.setdefault(var, value)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only allowed before the first inter-op work; the intra-op pool is what computes
            pass
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: libraries loaded before this call keep their pools
        pass
    else:
        threadpool_limits(n)
    return n
