"""Thread defaults (model.threads): the pools follow the affinity mask, the cgroup quota and the override."""
import json
import os
import subprocess
import sys

import pytest

from elfscreen.model import threads

# A child process: restrict its affinity to the first core, configure, then load torch and numba (as the
# CLI does: configure first, import later) and report every pool's size.
CHILD = """
import json, os, sys
if sys.argv[1] == "pin":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from elfscreen.model.threads import configure_threads
n = configure_threads()
got = {"n": n, "omp": os.environ["OMP_NUM_THREADS"], "wait": os.environ["OMP_WAIT_POLICY"]}
if sys.argv[2] == "load":
    import numba, torch
    configure_threads()  # again once they are imported (model.pipeline does, after loading torch)
    got.update(torch=torch.get_num_threads(), numba=numba.get_num_threads())
print(json.dumps(got))
"""


def _child(mode: str, load: bool = False, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("ELFSCREEN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                               "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, "load" if load else "-"], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_process_pinned_to_one_core_runs_one_thread_per_pool():
    got = _child("pin", load=True)
    assert got == {"n": 1, "torch": 1, "numba": 1, "omp": "1", "wait": "PASSIVE"}


LIBRARY_CHILD = """
import json
from elfscreen.model.pipeline import load_model
load_model()
import numba, torch
print(json.dumps({"torch": torch.get_num_threads(), "numba": numba.get_num_threads()}))
"""


def test_a_library_caller_gets_the_setting_from_load_model():
    """Without the CLI (a script that loads the model), the pools still follow elfscreen's setting."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                               "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", LIBRARY_CHILD], env={**clean, "ELFSCREEN_THREADS": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"torch": 1, "numba": 1}


def test_the_override_wins_over_the_mask():
    got = _child("pin", load=True, ELFSCREEN_THREADS="3")
    assert (got["n"], got["torch"], got["numba"], got["omp"]) == (3, 3, 3, "3")


def test_unpinned_default_is_the_usable_cores():
    got = _child("free")
    assert got["n"] == int(got["omp"]) == threads.usable_cores() == len(os.sched_getaffinity(0))


def test_omp_num_threads_is_capped_by_the_mask():
    assert _child("pin", OMP_NUM_THREADS="8")["n"] == 1


def test_bad_override_names_the_variable(monkeypatch):
    monkeypatch.setenv("ELFSCREEN_THREADS", "lots")
    with pytest.raises(ValueError, match="ELFSCREEN_THREADS"):
        threads.thread_count()


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, 1.5 cores
    ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
])
def test_cgroup_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n" if "cpu.max" in files else "4:cpu,cpuacct:/\n")
    if "cpu.max" not in files:  # v1 mounts the controller as cpu,cpuacct; cpu is its link
        (tmp_path / "cpu,cpuacct").symlink_to(tmp_path / "cpu")
    assert threads.cgroup_cpu_limit(tmp_path, proc) == expected


def test_nested_cgroup_takes_the_smallest_quota(tmp_path):
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    (tmp_path / "job" / "cpu.max").write_text("50000 100000\n")
    (tmp_path / "job" / "step" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/job/step\n")
    assert threads.cgroup_cpu_limit(tmp_path, proc) == 0.5


def test_a_quota_caps_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.usable_cores() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cores() == len(os.sched_getaffinity(0))
