"""The numba kernels of the sweep (:mod:`elfscreen.model.sweep` says what they compute).

Imported only to JIT-compile them (``cache=True``: once per machine, kept in the per-user cache) or to
build the ahead-of-time module from them; a process that runs the prebuilt module never imports numba.
``sweep_kernel(flat, order, shape, atoms_at)`` is the entry point both ways.
"""
from __future__ import annotations

import os

from elfscreen.model import cache_root

# Compiled kernels go to the per-user cache (compiled once per machine), never beside the installed
# source: numba's default __pycache__ inside site-packages outlives `pip uninstall` and then shadows a
# later editable install of the same namespace (README command 1, then command 2).
os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))

import numba as nb  # noqa: E402 - after NUMBA_CACHE_DIR
import numpy as np  # noqa: E402

if nb.config.CACHE_DIR != os.environ["NUMBA_CACHE_DIR"]:  # numba was imported before us: re-read it
    nb.core.config.reload_config()

# the ahead-of-time module's export: (flat f8, order i4, shape i8, atoms_at i4) → the 7 outputs of _sweep
AOT_SIGNATURE = ("Tuple((i8[:,::1], i8[:,::1], i8[:,::1], i8, i8[:,::1], i8[:,::1], i8))"
                 "(f8[::1], i4[::1], i8[::1], i4[::1])")


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
