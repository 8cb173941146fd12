"""Start-up properties of one-off commands (timings: bench/startup.py): what they import, and that the sweep
kernel is compiled once per machine, not once per process."""
import json
import subprocess
import sys

import numpy as np

from elfscreen.model import sweep, sweep_kernel

HEAVY = ("torch", "numba", "scipy", "pymatgen.io.vasp", "pymatgen.symmetry.analyzer")

# run the CLI in a fresh interpreter, then list which heavy modules it imported
CLI_CHILD = """
import json, sys
from elfscreen.app import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules], "numpy": "numpy" in sys.modules}),
      file=sys.stderr)
""" % (HEAVY,)


def _cli(*argv, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", CLI_CHILD, *argv], capture_output=True, text=True, timeout=300, env=env)
    return json.loads(out.stderr.strip().splitlines()[-1])


def test_help_imports_nothing_heavy():
    got = _cli("--help")
    assert got == {"code": 0, "loaded": [], "numpy": False}


def test_topology_of_a_grid_file_imports_no_torch_numba_or_scipy():
    sweep._aot_kernel()  # built by this test process first when the machine has none (once per machine)
    got = _cli("topology", "--example", "h2_molecular_cubic", "--indent", "0")
    assert got == {"code": 0, "loaded": [], "numpy": True}


def test_the_precompiled_kernel_gives_the_jit_kernel_results():
    values = np.random.default_rng(7).random((17, 13, 11))
    atoms = (np.random.default_rng(8).random(values.shape) < 0.02).astype(np.int32)
    args = (values.ravel(), np.argsort(-values.ravel(), kind="stable").astype(np.int32),
            np.array(values.shape, dtype=np.int64), atoms.ravel())
    aot = sweep._aot_kernel()
    assert aot is not None and sweep.aot_module_path().exists()
    a, j = aot(*args), sweep_kernel._sweep(*args)  # events, offsets, merges, n_merges, loops, loop_vecs, n_loops
    assert a[3] == j[3] > 10 and a[6] == j[6] > 0  # many merges and some loops
    assert np.array_equal(a[0], j[0]) and np.array_equal(a[1], j[1])
    assert np.array_equal(a[2][: a[3]], j[2][: j[3]])  # (the buffers beyond the counts are uninitialised)
    assert np.array_equal(a[4][: a[6]], j[4][: j[6]]) and np.array_equal(a[5][: a[6]], j[5][: j[6]])


def test_a_second_process_loads_the_jit_kernel_from_the_cache():
    """numba counts, per compiled signature, whether it came from its disk cache; after this process has
    compiled (or loaded) the kernel, another process must only load it."""
    sweep_kernel._sweep(*(np.zeros(1), np.zeros(1, np.int32), np.ones(3, np.int64), np.zeros(1, np.int32)))
    child = ("import json, numpy as np\nfrom elfscreen.model import sweep_kernel as k\n"
             "k._sweep(np.zeros(1), np.zeros(1, np.int32), np.ones(3, np.int64), np.zeros(1, np.int32))\n"
             "print(json.dumps({'hits': sum(k._sweep.stats.cache_hits.values()), "
             "'misses': sum(k._sweep.stats.cache_misses.values())}))")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert json.loads(out.stdout.splitlines()[-1]) == {"hits": 1, "misses": 0}, out.stderr
