"""Screening one structure with the old thread defaults vs elfscreen's, idle and with a core held.

The structure is the CaH6 sodalite prototype (``model.prototypes``, MH6-Im-3m with Ca, at 200 GPa),
screened with the shipped model at 0.1 Å (``model.pipeline.screen_structure``: descriptor, 5-member
network, topology, ensemble spread). Each configuration runs in a fresh process, which screens once to
warm up (kernels, model) and then ``--repeat`` times; the table gives the median and the range.

- old default: what a process got before (no thread setup: torch's own pool size, OpenMP's spin-wait);
- elfscreen default: ``model.threads.configure_threads()`` before torch loads (usable cores: affinity
  mask and cgroup quota; passive OpenMP waits), as the CLI, job processes and Celery workers do;
- 1 thread: ``ELFSCREEN_THREADS=1``.

"core held": a busy-loop process pinned to the last core of this process's mask, at normal priority,
for the whole run of that configuration.

    python bench/threads.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

POOL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY",
             "KMP_BLOCKTIME", "ELFSCREEN_THREADS")

CHILD = r"""
import json, sys, time
mode, repeat = sys.argv[1], int(sys.argv[2])
if mode != "old":
    from elfscreen.model.threads import configure_threads
    configure_threads()
import torch
from elfscreen.model.pipeline import load_model, screen_structure
from elfscreen.model.prototypes import PROTOTYPES
from elfscreen.model.sweep import use_kernel
use_kernel("jit")  # the same kernel in every configuration
structure = PROTOTYPES["MH6-Im-3m"].build(("Ca",), 200.0)
model = load_model()
screen_structure(structure, "CaH6", model)  # warm-up
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    screen_structure(structure, "CaH6", model)
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "torch_threads": torch.get_num_threads()}))
"""


def _spin() -> subprocess.Popen:
    core = max(os.sched_getaffinity(0))
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def _run(mode: str, repeat: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in POOL_VARS}
    if mode == "one":
        env["ELFSCREEN_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(repeat)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from elfscreen.model.threads import usable_cores

    print(f"usable cores {usable_cores()} (affinity {sorted(os.sched_getaffinity(0))}); "
          f"load average before {os.getloadavg()[0]:.2f}; {args.repeat} timed screenings per row\n")
    print("| threads | core held by a busy loop | torch threads | median s | min s | max s |")
    print("|---|---|---|---|---|---|")
    labels = {"old": "old default", "new": "elfscreen default", "one": "1 (ELFSCREEN_THREADS=1)"}
    for held in (False, True):
        for mode in ("old", "new", "one"):
            spinner = _spin() if held else None
            try:
                time.sleep(0.2)
                got = _run(mode, args.repeat)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            t = got["times"]
            print(f"| {labels[mode]} | {'yes' if held else 'no'} | {got['torch_threads']} | {statistics.median(t):.3f} "
                  f"| {min(t):.3f} | {max(t):.3f} |", flush=True)
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
