"""Isosurfaces of a periodic grid: marching tetrahedra, vectorised in numpy.

Each grid cube is cut into the six tetrahedra of the Freudenthal (Kuhn) decomposition, all sharing the
cube's main diagonal. The decomposition is the same in every cube, so neighbouring tetrahedra share
their faces and the surface has no cracks; unlike marching cubes it needs no ambiguity table. A vertex
is placed on every tetrahedron edge whose two ends straddle the level, by linear interpolation, and
vertices on the same grid edge are merged, so the mesh is connected.

The grid follows elfscreen's convention (``values[i, j, k]`` at fractional ``(i/N1, j/N2, k/N3)``) and
is periodic: the cubes of the last layer wrap to the first, so the surface covers exactly one cell,
fractional [0, 1]³, and is cut open where it leaves the cell (the neighbouring cell's copy continues it).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

# The 8 corners of a unit cube, and the 6 tetrahedra 0 → e_a → e_a + e_b → (1, 1, 1), one per axis order.
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
_TETS = np.array([[0, 4 * (a == 0) + 2 * (a == 1) + (a == 2),
                   4 * (0 in (a, b)) + 2 * (1 in (a, b)) + (2 in (a, b)), 7] for a, b, _ in permutations(range(3))])
_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])  # the six edges of a tetrahedron


def _case_table() -> dict[int, list[list[int]]]:
    """For each of the 16 inside/outside patterns of a tetrahedron's corners (bit c: corner c ≥ level),
    the triangles to draw, each as three edge numbers (rows of ``_EDGES``)."""
    edge_of = {tuple(e): n for n, e in enumerate(_EDGES.tolist())}

    def edge(a, b):
        return edge_of[(min(a, b), max(a, b))]

    table = {}
    for code in range(1, 15):
        inside = [c for c in range(4) if code >> c & 1]
        outside = [c for c in range(4) if not code >> c & 1]
        if len(inside) in (1, 3):  # one corner cut off: one triangle on its three edges
            lone = inside[0] if len(inside) == 1 else outside[0]
            others = [c for c in range(4) if c != lone]
            table[code] = [[edge(lone, c) for c in others]]
        else:  # two against two: a quadrilateral, two triangles
            (a, b), (c, d) = inside, outside
            table[code] = [[edge(a, c), edge(a, d), edge(b, d)], [edge(a, c), edge(b, d), edge(b, c)]]
    return table


_CASES = _case_table()


@dataclass
class Mesh:
    """A triangle mesh in Cartesian Å: ``vertices`` (V, 3), ``triangles`` (T, 3) vertex indices (counter-
    clockwise seen from outside, i.e. from the lower values), ``normals`` (V, 3) unit vectors pointing
    towards lower values (down the field's gradient)."""

    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray

    def area(self) -> float:
        """Total area in Å²."""
        v = self.vertices[self.triangles]
        return float(0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum())


def isosurface(values: np.ndarray, lattice: np.ndarray, level: float) -> Mesh:
    """The surface ``{f = level}`` of the periodic field ``values`` (N1, N2, N3) on the cell ``lattice``
    (3×3, rows are the lattice vectors in Å), within one cell. ``{f ≥ level}`` is the inside.

    Returns a :class:`Mesh` with vertices in Å (Cartesian, ``frac @ lattice``, frac in [0, 1]) and normals
    from the grid's gradient (periodic central differences, interpolated like the vertices). Memory is
    about 200 bytes per grid point; coarsen large grids first (:func:`elfscreen.model.sampling.resample`).
    """
    values = np.asarray(values, dtype=float)
    lattice = np.asarray(lattice, dtype=float)
    if values.ndim != 3 or min(values.shape) < 2:
        raise ValueError(f"values must be a 3D grid with at least 2 points per axis, got shape {values.shape}")
    # the grid with its first layer repeated after the last, so that node (i, j, k), 0 ≤ i ≤ N1 …, needs no wrap
    padded = np.pad(values, [(0, 1)] * 3, mode="wrap")
    size = np.array(padded.shape)
    corner_ids = np.ravel_multi_index(_CORNERS.T, size)[_TETS]  # (6, 4) offsets of each tetrahedron's corners
    cube_ids = np.ravel_multi_index(np.indices(values.shape).reshape(3, -1), size).astype(np.int32)
    ids = (cube_ids[:, None, None] + corner_ids[None].astype(np.int32)).reshape(-1, 4)  # (tetrahedra, 4) node ids
    inside = (padded.ravel() >= level).astype(np.uint8)
    codes = (inside[ids] << np.arange(4, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)

    ends = [ids[codes == code][:, _EDGES[edges]] for code, triangles in _CASES.items() for edges in triangles]
    ends = np.sort(np.concatenate(ends), axis=-1).astype(np.int64)  # (triangles, 3 vertices, 2 edge ends)
    if not len(ends):
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)))
    n_nodes = int(size.prod())
    unique, triangles = np.unique(ends[..., 0] * n_nodes + ends[..., 1], return_inverse=True)
    triangles = triangles.reshape(-1, 3)
    a, b = unique // n_nodes, unique % n_nodes
    fa, fb = padded.ravel()[a], padded.ravel()[b]
    t = ((level - fa) / (fb - fa))[:, None]
    pa, pb = (np.stack(np.unravel_index(n, size), axis=-1) for n in (a, b))
    vertices = ((pa + t * (pb - pa)) / values.shape) @ lattice
    grad = np.pad(_gradient(values, lattice), [(0, 1)] * 3 + [(0, 0)], mode="wrap").reshape(-1, 3)
    normals = -(grad[a] + t * (grad[b] - grad[a]))
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)

    # orient every triangle so that its winding agrees with the normals (outward, towards lower values)
    v = vertices[triangles]
    facing = np.einsum("ij,ij->i", np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), normals[triangles].sum(axis=1))
    triangles[facing < 0] = triangles[facing < 0][:, [0, 2, 1]]
    return Mesh(vertices, triangles, normals)


def _gradient(values: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Cartesian gradient (N1, N2, N3, 3), per Å, by periodic central differences."""
    shape = values.shape
    d_frac = np.stack([(np.roll(values, -1, axis=a) - np.roll(values, 1, axis=a)) * shape[a] / 2 for a in range(3)],
                      axis=-1)
    return d_frac @ np.linalg.inv(lattice).T
