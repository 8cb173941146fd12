"""Shared by the benchmarks: memory readings and the timed-call loop (one process per measurement)."""
from __future__ import annotations

import os
import resource
import time


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def maxrss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def timed(call, repeat: int = 1, profile: bool = False):
    """Run ``call`` ``repeat`` times: (last result, wall times s, CPU times s, cProfile.Profile or None)."""
    times, cpu, result, prof = [], [], None, None
    for _ in range(repeat):
        result = None  # let the previous result go before the next call
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        result = call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if prof is not None:
            prof.disable()
    return result, times, cpu, prof
