"""One descending union–find sweep over a periodic grid: when does {f ≥ t} percolate?

Voxels are added in order of decreasing value. Neighbours are the 6 face neighbours on the periodic
grid (6-connectivity: two voxels touch only through a shared face, so the superlevel set never
leaks through a diagonal where the field between the two voxel centres dips below both; the
resulting resolution error is removed by the sub-voxel refinement in :mod:`elfscreen.model.fourier`).

Each voxel stores its parent and the integer lattice offset of its periodic copy relative to its
parent's, so every set knows the unwrapped position of each member. Joining two members of one set
with a different offset closes a loop around the torus; its translation is added to the set's loop
lattice. The rank of that lattice (0–3) is the number of independent lattice directions in which the
piece is periodic: rank 1 = chains, 2 = layers, 3 = a network spanning the crystal. We keep
independent integer generators of the lattice, which is all the rank needs.

O(V log V) for V voxels (the sort), near-linear after it.

The kernel (:mod:`elfscreen.model.sweep_kernel`) runs in one of two compiled forms, both built once per
machine into the per-user cache (:func:`elfscreen.model.cache_root`), never once per process:

- ``"jit"`` (default): numba's JIT with its on-disk cache. It releases the GIL (threads of a server
  sweep in parallel) but each process pays ~0.3 s to import numba and ~0.5 s to load the cached code.
- ``"aot"``: an extension module compiled ahead of time by numba's ``pycc`` from the same source, on
  first use (a few seconds, a C compiler needed), then imported in milliseconds without numba. It holds
  the GIL, so one-off single-threaded processes use it: the CLI selects it (:func:`use_kernel`).
  Without a compiler or ``numba.pycc``, or if the build fails, the JIT is used.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elfscreen.model import cache_root

# Event slots: first piece periodic in 1, 2, 3 directions; first piece holding two H atoms.
EVENT_1D, EVENT_2D, EVENT_3D, EVENT_H_PAIR = 0, 1, 2, 3
KERNEL_SOURCE = Path(__file__).with_name("sweep_kernel.py")
_kernel: dict = {"mode": os.environ.get("ELFSCREEN_SWEEP_KERNEL", "jit")}


@dataclass
class SweepResult:
    """What the sweep found; voxels are flat C-order indices into the ``(N1, N2, N3)`` grid.

    ``events[e] = (voxel, peak_a, peak_b)`` for the four events (−1 where it never happened);
    ``event_offsets[e]`` is the lattice offset of ``peak_b``'s copy relative to ``peak_a``'s.
    ``merges[m] = (saddle voxel, surviving peak, dying peak)``: every join of two distinct pieces.
    ``loops[m] = (saddle voxel, peak)`` with translation ``loop_vectors[m]``: every join that closes a
    loop around the torus in a new direction (raises its piece's rank).
    """

    events: np.ndarray
    event_offsets: np.ndarray
    merges: np.ndarray
    loops: np.ndarray
    loop_vectors: np.ndarray


def sweep(values: np.ndarray, atoms_at: np.ndarray | None = None) -> SweepResult:
    """Run the sweep on ``values`` (N1, N2, N3); ``atoms_at`` (same shape, int) counts the H atoms whose
    attractor is each voxel, for the two-H event (φ*)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if atoms_at is None:
        atoms_at = np.zeros(values.shape, dtype=np.int32)
    order = np.argsort(-values.ravel(), kind="stable").astype(np.int32)
    out = kernel()(values.ravel(), order, np.array(values.shape, dtype=np.int64),
                 np.ascontiguousarray(atoms_at, dtype=np.int32).ravel())
    events, offsets, merges, n_merges, loops, loop_vecs, n_loops = out
    return SweepResult(events, offsets, merges[:n_merges].copy(), loops[:n_loops].copy(), loop_vecs[:n_loops].copy())




def use_kernel(mode: str) -> None:
    """Run later sweeps of this process with the ``"jit"`` or ``"aot"`` kernel (see the module docstring;
    ``$ELFSCREEN_SWEEP_KERNEL`` sets the default)."""
    if mode not in ("jit", "aot"):
        raise ValueError(f"sweep kernel must be 'jit' or 'aot', got {mode!r}")
    _kernel.clear()
    _kernel["mode"] = mode


def kernel():
    """The sweep kernel of this process, loaded (and compiled on the machine's first use) once."""
    if "fn" not in _kernel:
        fn = _aot_kernel() if _kernel["mode"] == "aot" else None
        if fn is None:
            from elfscreen.model.sweep_kernel import _sweep as fn
        _kernel["fn"] = fn
    return _kernel["fn"]


def aot_module_path() -> Path:
    """Where the ahead-of-time module of the current kernel source lives: named by the SHA-256 of
    ``sweep_kernel.py`` (a changed source builds a new module) and this interpreter's ABI."""
    digest = hashlib.sha256(KERNEL_SOURCE.read_bytes() + platform.machine().encode()).hexdigest()[:16]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return cache_root() / "aot" / f"_elfscreen_sweep_{digest}{suffix}"


def _aot_kernel():
    """The ahead-of-time kernel, built now if this machine has none for this source; None if it cannot be."""
    path = aot_module_path()
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.parent / ".lock", "w") as lock:  # one build per machine, other processes wait
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    _build_aot(path)
        name = path.name.split(".")[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.sweep_kernel
    except Exception as exc:  # no compiler, no numba.pycc, a broken cache: the JIT still works
        print(f"elfscreen: note: sweep kernel not precompiled ({type(exc).__name__}: {exc}); using numba's JIT",
              file=sys.stderr)
        return None


def _build_aot(path: Path) -> None:
    """Compile the kernel with numba.pycc into a temporary folder beside ``path``, then move it in place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's pending-deprecation notice
        from numba.pycc import CC

        from elfscreen.model.sweep_kernel import AOT_SIGNATURE, _sweep

        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            cc = CC(path.name.split(".")[0])
            cc.output_dir = tmp
            cc.verbose = False
            cc.export("sweep_kernel", AOT_SIGNATURE)(_sweep.py_func)
            cc.compile()
            built = next(Path(tmp).glob(path.name.split(".")[0] + "*"))
            os.replace(built, path)
