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
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from elfscreen.model import cache_root

# Compiled kernels go to the per-user cache (compiled once per machine), never beside the installed
# source: numba's default __pycache__ inside site-packages outlives `pip uninstall` and then shadows a
# later editable install of the same namespace (README command 1, then command 2).
os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))

import numba as nb  # noqa: E402 - after NUMBA_CACHE_DIR
import numpy as np  # noqa: E402

if nb.config.CACHE_DIR != os.environ["NUMBA_CACHE_DIR"]:  # numba was imported before us: re-read it
    nb.core.config.reload_config()

# Event slots: first piece periodic in 1, 2, 3 directions; first piece holding two H atoms.
EVENT_1D, EVENT_2D, EVENT_3D, EVENT_H_PAIR = 0, 1, 2, 3


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
    out = _sweep(values.ravel(), order, np.array(values.shape, dtype=np.int64),
                 np.ascontiguousarray(atoms_at, dtype=np.int32).ravel())
    events, offsets, merges, n_merges, loops, loop_vecs, n_loops = out
    return SweepResult(events, offsets, merges[:n_merges].copy(), loops[:n_loops].copy(), loop_vecs[:n_loops].copy())


@nb.njit(cache=True, nogil=True)
def _find(parent, off, x):
    """Root of x and the offset of x's copy relative to the root's; compresses the path."""
    root = x
    ox = 0
    oy = 0
    oz = 0
    while parent[root] != root:
        ox += off[root, 0]
        oy += off[root, 1]
        oz += off[root, 2]
        root = parent[root]
    node = x
    ax, ay, az = ox, oy, oz
    while parent[node] != root and parent[node] != node:
        nxt = parent[node]
        bx, by, bz = off[node, 0], off[node, 1], off[node, 2]
        parent[node] = root
        off[node, 0] = ax
        off[node, 1] = ay
        off[node, 2] = az
        ax -= bx
        ay -= by
        az -= bz
        node = nxt
    return root, ox, oy, oz


@nb.njit(cache=True, nogil=True)
def _add_generator(basis, rank, vx, vy, vz):
    """Add (vx, vy, vz) to a set of ``rank`` independent integer vectors; return the new rank."""
    if vx == 0 and vy == 0 and vz == 0:
        return rank
    if rank == 0:
        basis[0, 0], basis[0, 1], basis[0, 2] = vx, vy, vz
        return 1
    if rank == 1:
        cx = basis[0, 1] * vz - basis[0, 2] * vy
        cy = basis[0, 2] * vx - basis[0, 0] * vz
        cz = basis[0, 0] * vy - basis[0, 1] * vx
        if cx != 0 or cy != 0 or cz != 0:
            basis[1, 0], basis[1, 1], basis[1, 2] = vx, vy, vz
            return 2
        return 1
    if rank == 2:
        cx = basis[0, 1] * basis[1, 2] - basis[0, 2] * basis[1, 1]
        cy = basis[0, 2] * basis[1, 0] - basis[0, 0] * basis[1, 2]
        cz = basis[0, 0] * basis[1, 1] - basis[0, 1] * basis[1, 0]
        if cx * vx + cy * vy + cz * vz != 0:
            basis[2, 0], basis[2, 1], basis[2, 2] = vx, vy, vz
            return 3
        return 2
    return 3


@nb.njit(cache=True, nogil=True)
def _grow(a, n):
    if n < a.shape[0]:
        return a
    b = np.empty((2 * a.shape[0],) + a.shape[1:], a.dtype)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True, nogil=True)
def _sweep(flat, order, shape, atoms_at):
    n1, n2, n3 = shape[0], shape[1], shape[2]
    nvox = n1 * n2 * n3
    parent = np.full(nvox, -1, np.int32)
    off = np.zeros((nvox, 3), np.int32)
    size = np.zeros(nvox, np.int32)
    peak = np.zeros(nvox, np.int32)
    hcount = np.zeros(nvox, np.int32)
    slot = np.full(nvox, -1, np.int32)  # index into the loop-lattice pool, for roots with rank ≥ 1
    bases = np.zeros((64, 3, 3), np.int64)
    ranks = np.zeros(64, np.int64)
    n_slots = 0

    events = np.full((4, 3), -1, np.int64)
    offsets = np.zeros((4, 3), np.int64)
    merges = np.zeros((256, 3), np.int64)
    n_merges = 0
    loops = np.zeros((64, 2), np.int64)
    loop_vecs = np.zeros((64, 3), np.int64)
    n_loops = 0

    for pos in range(nvox):
        v = order[pos]
        i = v // (n2 * n3)
        j = (v // n3) % n2
        k = v % n3
        parent[v] = v
        size[v] = 1
        peak[v] = v
        hcount[v] = atoms_at[v]
        if atoms_at[v] >= 2 and events[3, 0] < 0:
            events[3, 0], events[3, 1], events[3, 2] = v, v, v
        for d in range(6):
            axis = d >> 1
            step = 1 if (d & 1) == 0 else -1
            sx = 0
            sy = 0
            sz = 0
            ui, uj, uk = i, j, k
            if axis == 0:
                ui = i + step
                if ui == n1:
                    ui, sx = 0, 1
                elif ui < 0:
                    ui, sx = n1 - 1, -1
            elif axis == 1:
                uj = j + step
                if uj == n2:
                    uj, sy = 0, 1
                elif uj < 0:
                    uj, sy = n2 - 1, -1
            else:
                uk = k + step
                if uk == n3:
                    uk, sz = 0, 1
                elif uk < 0:
                    uk, sz = n3 - 1, -1
            u = (ui * n2 + uj) * n3 + uk
            if parent[u] < 0:
                continue
            rv, vx, vy, vz = _find(parent, off, v)
            ru, ux, uy, uz = _find(parent, off, u)
            # cell(ru) − cell(rv), from cell(u) = cell(v) + s
            dx = vx + sx - ux
            dy = vy + sy - uy
            dz = vz + sz - uz
            if rv == ru:
                if dx == 0 and dy == 0 and dz == 0:
                    continue
                if slot[rv] < 0:
                    bases = _grow(bases, n_slots)
                    ranks = _grow(ranks, n_slots)
                    slot[rv] = n_slots
                    ranks[n_slots] = 0
                    n_slots += 1
                s = slot[rv]
                before = ranks[s]
                ranks[s] = _add_generator(bases[s], ranks[s], dx, dy, dz)
                if ranks[s] == before:
                    continue  # a loop in a direction the piece already spans: no new topology
                loops = _grow(loops, n_loops)
                loop_vecs = _grow(loop_vecs, n_loops)
                loops[n_loops, 0], loops[n_loops, 1] = v, peak[rv]
                loop_vecs[n_loops, 0], loop_vecs[n_loops, 1], loop_vecs[n_loops, 2] = dx, dy, dz
                n_loops += 1
                root = rv
                pa = peak[rv]
                pb = pa
                ox, oy, oz = dx, dy, dz
            else:
                pa = peak[rv]
                pb = peak[ru]
                _, ax, ay, az = _find(parent, off, pa)
                _, bx, by, bz = _find(parent, off, pb)
                ox = dx + bx - ax
                oy = dy + by - ay
                oz = dz + bz - az
                if flat[pb] > flat[pa]:
                    keep, die = pb, pa
                else:
                    keep, die = pa, pb
                if not (rv == v and size[v] == 1):  # v joining its first piece is growth, not a saddle
                    merges = _grow(merges, n_merges)
                    merges[n_merges, 0], merges[n_merges, 1], merges[n_merges, 2] = v, keep, die
                    n_merges += 1
                # union by size: attach the smaller root under the larger
                if size[ru] > size[rv]:
                    big, small = ru, rv
                    dx, dy, dz = -dx, -dy, -dz
                else:
                    big, small = rv, ru
                parent[small] = big
                off[small, 0], off[small, 1], off[small, 2] = dx, dy, dz
                size[big] += size[small]
                hcount[big] += hcount[small]
                peak[big] = keep
                if slot[small] >= 0:
                    if slot[big] < 0:
                        slot[big] = slot[small]
                    else:
                        sb = slot[big]
                        ss = slot[small]
                        for g in range(ranks[ss]):
                            ranks[sb] = _add_generator(bases[sb], ranks[sb], bases[ss, g, 0], bases[ss, g, 1], bases[ss, g, 2])
                root = big
            rank = ranks[slot[root]] if slot[root] >= 0 else 0
            for e in range(3):
                if rank >= e + 1 and events[e, 0] < 0:
                    events[e, 0], events[e, 1], events[e, 2] = v, pa, pb
                    offsets[e, 0], offsets[e, 1], offsets[e, 2] = ox, oy, oz
            if events[3, 0] < 0 and (hcount[root] >= 2 or (hcount[root] >= 1 and rank >= 1)):
                events[3, 0], events[3, 1], events[3, 2] = v, pa, pb
                offsets[3, 0], offsets[3, 1], offsets[3, 2] = ox, oy, oz
    return events, offsets, merges, n_merges, loops, loop_vecs, n_loops
