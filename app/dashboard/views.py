"""What the structure page draws, as JSON: the crystal, an ELF slice through the bottleneck (the ML grid's, or
the ML and the DFT grid's on the same plane) and an ELF isosurface. Lengths in Å (Cartesian, the structure's own axes), ELF dimensionless."""
from __future__ import annotations

import itertools
import math

import numpy as np
from pymatgen.core import Structure

from elfscreen.model.isosurface import isosurface
from elfscreen.model.sampling import Plane, cell_plane, resample, saddle_plane, slice_values
from elfscreen.model.volumetric import ElfGrid

FACE_TOLERANCE = 0.02  # fractional: an atom this close to a cell face is drawn on the opposite face too
NEAR_PLANE_A = 0.5  # atoms this close to a slice are marked on it


def scene(structure: Structure, result: dict) -> dict:
    """The cell (``lattice``, rows a, b, c), the atoms (with their copies on the cell's faces, ``image``
    true), the listed ELF critical points and the two bottlenecks (φ, φ*) of a result."""
    lattice = structure.lattice.matrix
    atoms = []
    for site in structure:
        frac = np.mod(site.frac_coords, 1.0)
        shifts = [(0, 1) if x < FACE_TOLERANCE else (0, -1) if x > 1 - FACE_TOLERANCE else (0,) for x in frac]
        for shift in itertools.product(*shifts):
            atoms.append({"species": site.specie.symbol, "cart": _r((frac + shift) @ lattice),
                          "image": any(shift)})
    points = [{"kind": p["kind"], "cart": _r(np.mod(p["frac"], 1.0) @ lattice), "elf": p["elf"],
               "persistence": p["persistence"]} for p in result["critical_points"]["points"]]
    return {"lattice": lattice.round(4).tolist(), "atoms": atoms, "critical_points": points,
            "bottleneck": _bottleneck(result.get("bottleneck"), lattice),
            "molecular_bottleneck": _bottleneck(result.get("molecular_bottleneck"), lattice)}


def _bottleneck(event: dict | None, lattice: np.ndarray) -> dict | None:
    if event is None:
        return None
    return {"cart": _r(np.mod(event["frac"], 1.0) @ lattice), "elf": event["elf"]}


def slice_view(grid: ElfGrid, result: dict, half_width_a: float, n: int) -> dict:
    """The ELF on an ``n`` × ``n`` square, ``half_width_a`` Å each side of the bottleneck at φ, in the plane
    that shows it as a saddle (:func:`~elfscreen.model.sampling.saddle_plane`; the cell's ab plane through its
    centre when φ has no bottleneck). ``values[r][c]`` is at ``x_c u + y_r v`` from ``origin``, with x and
    y running from −half_width_a to +half_width_a; ``atoms`` are the atoms within 0.5 Å of the plane."""
    plane = _bottleneck_plane(grid, result)
    values = slice_values(grid.values, grid.structure.lattice.matrix, plane, half_width_a, n)
    return {**_plane_view(grid.structure, plane, result, half_width_a, n), "level": result.get("phi"),
            "values": values.round(4).tolist()}


def slice_pair(ml: ElfGrid, dft: ElfGrid, result: dict, half_width_a: float, n: int) -> dict:
    """The ML and the DFT ELF on the same square: the plane of :func:`slice_view` (chosen on the ML grid, through
    the ML bottleneck), ``ml`` and ``dft`` each with its ``values`` and ``level`` (its own φ: ``result["phi"]``,
    ``result["dft"]["phi"]``). ``dft`` must lie on the cell of ``ml`` (same lattice, same frame)."""
    plane = _bottleneck_plane(ml, result)
    lattice = ml.structure.lattice.matrix
    sides = {name: {"values": slice_values(grid.values, lattice, plane, half_width_a, n).round(4).tolist(),
                    "level": level} for name, grid, level in (("ml", ml, result.get("phi")),
                                                              ("dft", dft, result["dft"].get("phi")))}
    return {**_plane_view(ml.structure, plane, result, half_width_a, n), **sides}


def _bottleneck_plane(grid: ElfGrid, result: dict) -> Plane:
    """The plane that shows the bottleneck at φ as a saddle, or the cell's ab plane through its centre."""
    lattice = grid.structure.lattice.matrix
    event = result.get("bottleneck")
    return saddle_plane(grid.values, lattice, np.asarray(event["frac"])) if event else cell_plane(lattice)


def _plane_view(structure: Structure, plane: Plane, result: dict, half_width_a: float, n: int) -> dict:
    event = result.get("bottleneck")
    return {"plane": plane.kind, "origin": _r(plane.origin), "u": _r(plane.u), "v": _r(plane.v),
            "half_width_a": half_width_a, "n": n, "atoms": _atoms_near(structure, plane, half_width_a),
            "bottleneck": None if event is None else {"x": 0.0, "y": 0.0, "elf": event["elf"]}}


def _atoms_near(structure: Structure, plane: Plane, half_width_a: float) -> list[dict]:
    """Atoms (any periodic image) within ``NEAR_PLANE_A`` of the plane and inside the square."""
    lattice = structure.lattice.matrix
    heights = structure.lattice.volume / np.linalg.norm(np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1)
    reach = [math.ceil((half_width_a * math.sqrt(2) + NEAR_PLANE_A) / h) + 1 for h in heights]
    shifts = np.array(list(itertools.product(*(range(-r, r + 1) for r in reach))))
    origin_frac = plane.origin @ np.linalg.inv(lattice)
    out = []
    for site in structure:
        frac = np.mod(site.frac_coords, 1.0) + np.floor(origin_frac)  # the image in the origin's cell
        xy, distance = plane.to_plane((frac + shifts) @ lattice)
        inside = (distance <= NEAR_PLANE_A) & (np.abs(xy) <= half_width_a).all(axis=1)
        out += [{"species": site.specie.symbol, "x": round(float(x), 4), "y": round(float(y), 4),
                 "distance_a": round(float(d), 4)} for (x, y), d in zip(xy[inside], distance[inside])]
    return out


def isosurface_view(grid: ElfGrid, level: float, resolution: int) -> dict:
    """The surface ELF = ``level`` in one cell (:func:`elfscreen.model.isosurface.isosurface`), on the grid or, when
    it has more than ``resolution`` points along an axis, on a coarser one (trilinear) with at most that
    many: ``vertices`` and ``normals`` flattened (x, y, z, x, …), ``triangles`` flattened vertex indices."""
    values = grid.values
    scale = resolution / max(values.shape)
    if scale < 1:
        values = resample(values, tuple(max(2, round(n * scale)) for n in values.shape))
    mesh = isosurface(values, grid.structure.lattice.matrix, level)
    return {"level": level, "grid_shape": list(values.shape), "area_a2": round(mesh.area(), 4),
            "vertices": mesh.vertices.round(3).ravel().tolist(), "normals": mesh.normals.round(3).ravel().tolist(),
            "triangles": mesh.triangles.ravel().tolist()}


def _r(x) -> list[float]:
    return [round(float(v), 4) for v in x]
