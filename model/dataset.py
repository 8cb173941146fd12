"""Datasets of DFT ELF grids of dense hydrogen: generate them (resumably) and read them back.

``generate(out_dir, kind, count)`` makes ``count`` structures of one kind and computes their PBE ELF
with :func:`elfscreen.model.dft.elf_of`, one at a time, writing each result as it finishes:

- ``DIR/<id>.npz`` (compressed): ``elf`` (float16, shape ``grid_shape``), ``lattice`` (3×3 Å, rows),
  ``species``, ``frac_coords``, ``grid_shape``, ``full_grid_shape`` and ``stride`` (the stored grid is
  every ``stride``-th point of the DFT grid along each axis: ``elf[i, j, k]`` sits at fractional
  ``(i/n1, j/n2, k/n3)`` of the stored shape, the :class:`~elfscreen.model.volumetric.ElfGrid` convention);
- one line of ``DIR/manifest.jsonl``: id, kind, index, seed, structure hash, generator parameters, the
  QE settings, version, pseudopotential, inputs, timings and convergence, the file's SHA-256, and
  φ, φ*, φ_1d, φ_2d from :func:`elfscreen.model.topology.analyze` on the full-resolution float64 grid;
- a failed or unconverged run goes to ``DIR/failed.jsonl`` with its reason and record; it is skipped
  (never used) by reruns too.

Each structure's id is a function of (kind, seed, index) alone, so a rerun of the same command skips
finished (and failed) ids and continues; a larger ``count`` extends the set. Work is done small cells
first. Kinds:

- ``crystal``: random symmetric hydrogen crystals (pyxtal) over the seven crystal families, atomic or
  molecular (H2 units), 4–48 atoms, 2.0–3.2 Å³/atom, generated directly in a random cell of the target
  volume with an H–H tolerance of 1.0 Å between atoms (molecules: between atoms of different
  molecules); a fraction is relaxed at 100 GPa (pw.x vc-relax) before the ELF;
- ``fluid``: hand-made snapshots of the dense fluid (76–139 GPa, ≈ 1500 K): H2 molecules with thermal
  spread of bond length and random orientation, plus dissociated atoms, in near-cubic cells;
- ``fluid-md``: snapshots of short Born–Oppenheimer MD runs (:func:`elfscreen.model.dft.md`, 1500 K, fixed cell)
  started from a hand-made fluid cell, one trajectory per nominal pressure in turn (76, 115, 139 GPa by
  default, the paper's three); entry ``index`` is snapshot ``index % snapshots`` of trajectory
  ``index // snapshots``. Each trajectory runs once; its snapshots are kept in ``DIR/md/<trajectory>.json``.

Lengths Å, volumes Å³, pressures GPa.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import io
import json
import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from elfscreen.model import __version__
from elfscreen.model.dft import HYDRIDE_SETTINGS, DftError, DftSettings, elf_of, md
from elfscreen.model.errors import InputError, StructureError
from elfscreen.model.prototypes import (
    PROTOTYPES,
    make_random_hydride,
    prototype_entries,
    prototype_size,
    random_composition,
    volume_guess,
)
from elfscreen.model.structures import validate_structure
from elfscreen.model.volumetric import ElfGrid, read_npz

KINDS = ("crystal", "fluid", "fluid-md", "hydride-prototype", "hydride-random", "crystal-relaxed")  # append only: the index seeds the random streams
HYDRIDE_KINDS = ("hydride-prototype", "hydride-random")
FAMILIES = {  # crystal family → space-group range (trigonal and hexagonal both in the hexagonal family; listed apart)
    "triclinic": (1, 2), "monoclinic": (3, 15), "orthorhombic": (16, 74), "tetragonal": (75, 142),
    "trigonal": (143, 167), "hexagonal": (168, 194), "cubic": (195, 230),
}
MIN_HH_A = 0.6  # every structure's shortest H–H distance (periodic images included)
H2_BOND_A = 0.74
DATASET_FORMAT = 1


@dataclass(frozen=True)
class GeneratorOptions:
    """Ranges the generators draw from (Å, Å³/atom, GPa, K)."""

    crystal_atoms: tuple[int, int] = (4, 48)
    crystal_families: tuple[str, ...] = tuple(FAMILIES)  # structure index i has family crystal_families[i % len]
    crystal_small_atoms: tuple[int, int] = (4, 24)  # most crystals come from here ...
    crystal_small_fraction: float = 0.75  # ... this share of them
    crystal_volume_per_atom: tuple[float, float] = (2.0, 3.2)
    crystal_molecular_fraction: float = 0.5
    crystal_hh_tolerance_a: float = 1.0
    relax_pressure_gpa: float = 100.0
    relax_max_atoms: int = 24  # vc-relax (costly: ≈ 3 min at 8 atoms) only for cells up to this size
    fluid_atoms: tuple[int, int] = (32, 48)
    fluid_pressure_gpa: tuple[float, float] = (76.0, 139.0)
    fluid_temperature_k: float = 1500.0
    fluid_dissociated_fraction: tuple[float, float] = (0.0, 0.4)
    fluid_bond_mean_a: float = 0.75
    fluid_bond_sigma_a: float = 0.05  # thermal + zero-point spread of the H2 bond at ≈ 1500 K
    fluid_hh_tolerance_a: float = 1.0  # between different molecules/atoms (lowered stepwise if packing fails)
    md_pressures_gpa: tuple[float, ...] = (76.0, 115.0, 139.0)  # trajectory t runs at md_pressures_gpa[t % len]
    md_atoms: int = 32
    md_steps: int = 160
    md_first_snapshot: int = 40  # steps before the first snapshot (the hand-made start relaxes)
    md_snapshot_every: int = 20
    stride: int = 2  # store every stride-th grid point (1: full resolution)
    # hydrides (model/prototypes.py): which prototypes (None: all), and the random binaries/ternaries
    prototypes: tuple[str, ...] | None = None
    # hydrides: only the entries containing at least one of these elements (None: all). A filter over the
    # same plans, so an entry keeps the parameters of its index; used to fill the rarest elements first.
    elements: tuple[str, ...] | None = None
    hydride_atoms: tuple[int, int] = (4, 24)
    hydride_small_atoms: tuple[int, int] = (4, 12)  # most random hydrides come from here ...
    hydride_small_fraction: float = 0.7  # ... this share of them
    hydride_h_fraction: tuple[float, float] = (0.5, 0.95)
    hydride_ternary_fraction: float = 0.4
    hydride_pressure_gpa: tuple[float, float] = (100.0, 300.0)
    # relaxed pure-H crystals: each relaxed at one of these pressures (structure index i:
    # pressures[(i // len(crystal_families)) % len], so that every family meets every pressure)
    relaxed_pressures_gpa: tuple[float, ...] = (50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0)

    @property
    def md_snapshot_steps(self) -> list[int]:
        return list(range(self.md_first_snapshot, self.md_steps + 1, self.md_snapshot_every))


def fluid_volume_per_atom(pressure_gpa: float, temperature_k: float = 1500.0) -> float:
    """PBE volume per atom of dense hydrogen (Å³) at ``pressure_gpa``: V = 2.45·(100/P)^0.31 (through
    2.45 Å³ at 100 GPa and 2.8 at ≈ 65 GPa), plus ≈ 3% thermal expansion at 1500 K (linear in T)."""
    return 2.45 * (100.0 / pressure_gpa) ** 0.31 * (1.0 + 0.03 * temperature_k / 1500.0)


# ---------------------------------------------------------------------------------------------------
# ids, hashes, plans
# ---------------------------------------------------------------------------------------------------

def entry_id(kind: str, seed: int, index: int) -> str:
    """Deterministic id of structure ``index`` of a (kind, seed) dataset, e.g. ``crystal-s0-000042``."""
    return f"{kind}-s{seed}-{index:06d}"


def structure_hash(structure: Structure) -> str:
    """SHA-256 (first 16 hex) of the lattice (Å, 6 decimals) and the sorted species + fractional
    coordinates (wrapped to [0, 1), 6 decimals)."""
    frac = np.round(np.mod(structure.frac_coords, 1.0), 6) % 1.0
    rows = sorted(f"{s.specie.symbol} {f[0]:.6f} {f[1]:.6f} {f[2]:.6f}" for s, f in zip(structure, frac))
    lat = " ".join(f"{x:.6f}" for x in np.asarray(structure.lattice.matrix).ravel())
    return hashlib.sha256((lat + "\n" + "\n".join(rows)).encode()).hexdigest()[:16]


def _rng(kind: str, seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), KINDS.index(kind), int(index), int(stream)])


def h_volume_per_atom(pressure_gpa: float) -> float:
    """Å³ per atom of relaxed pure-H crystals at ``pressure_gpa`` (PBE, this project's relaxations: 2.73
    at 50 GPa, 2.1–2.2 at 100, 1.8–2.0 at 150, 1.65–1.73 at 200, 1.29 at 400), as 2.15·(100/P)^0.37."""
    return 2.15 * (100.0 / pressure_gpa) ** 0.37


def plan(kind: str, seed: int, index: int, options: GeneratorOptions = GeneratorOptions(),
         relax_fraction: float = 0.0) -> dict | None:
    """The generator parameters of structure ``index`` (cheap; no structure is built); ``None`` for a
    hydride entry that ``options.prototypes`` or ``options.elements`` leaves out."""
    rng = _rng(kind, seed, index)
    if kind == "hydride-prototype":
        name, sub, pressure = prototype_entries()[index]
        if options.prototypes is not None and name not in options.prototypes:
            return None
        if options.elements is not None and not set(sub) & set(options.elements):
            return None
        proto = PROTOTYPES[name]
        return {"kind": kind, "prototype": name, "space_group": proto.space_group, "substitution": list(sub),
                "n_atoms": prototype_size(name, sub), "pressure_gpa": pressure, "relax_pressure_gpa": pressure}
    if kind == "hydride-random":
        lo, hi = options.hydride_small_atoms if rng.random() < options.hydride_small_fraction else options.hydride_atoms
        n = int(rng.integers(lo, hi + 1))
        ternary = bool(rng.random() < options.hydride_ternary_fraction) and n >= 4
        species = random_composition(rng, n, ternary, float(rng.uniform(*options.hydride_h_fraction)))
        pressure = round(float(rng.uniform(*options.hydride_pressure_gpa)), 1)
        relaxed = bool(rng.random() < relax_fraction)
        if options.elements is not None and not set(species) & set(options.elements):
            return None
        return {"kind": kind, "n_atoms": n, "species": species, "ternary": ternary, "pressure_gpa": pressure,
                "h_fraction": round(species.count("H") / n, 4), "relax_pressure_gpa": pressure if relaxed else None}
    if kind == "crystal-relaxed":
        params = plan("crystal", seed, index, options, 0.0)
        turn = index // len(options.crystal_families)
        pressure = options.relaxed_pressures_gpa[turn % len(options.relaxed_pressures_gpa)]
        # start near the pressure's volume (the crystal's draw scaled): far below the target pressure the
        # first BFGS steps halve the cell, which costs steps and restarts (model.dft.relax)
        lo, hi = options.crystal_volume_per_atom
        squeeze = h_volume_per_atom(pressure) / (0.5 * (lo + hi))
        tolerance = options.crystal_hh_tolerance_a * min(1.0, squeeze ** (1 / 3))  # denser: closer contacts
        return {**params, "kind": kind, "volume_per_atom_a3": round(params["volume_per_atom_a3"] * squeeze, 4),
                "hh_tolerance_a": round(tolerance, 3), "relax_pressure_gpa": pressure}
    if kind == "crystal":
        family = options.crystal_families[index % len(options.crystal_families)]
        lo, hi = options.crystal_small_atoms if rng.random() < options.crystal_small_fraction else options.crystal_atoms
        n = int(rng.integers(lo, hi + 1))
        molecular = bool(rng.random() < options.crystal_molecular_fraction)
        if molecular and n % 2:
            n = n + 1 if n < options.crystal_atoms[1] else n - 1
        vpa = float(rng.uniform(*options.crystal_volume_per_atom))
        relaxed = bool(rng.random() < relax_fraction) and n <= options.relax_max_atoms
        return {"kind": kind, "family": family, "motif": "molecular" if molecular else "atomic", "n_atoms": n,
                "volume_per_atom_a3": round(vpa, 4), "hh_tolerance_a": options.crystal_hh_tolerance_a,
                "relax_pressure_gpa": options.relax_pressure_gpa if relaxed else None}
    if kind == "fluid":
        n = int(rng.integers(options.fluid_atoms[0], options.fluid_atoms[1] + 1))
        p = float(rng.uniform(*options.fluid_pressure_gpa))
        f_free = float(rng.uniform(*options.fluid_dissociated_fraction))
        n_free = round(f_free * n)
        if (n - n_free) % 2:
            n_free += 1
        return {"kind": kind, "n_atoms": n, "pressure_estimate_gpa": round(p, 2),
                "temperature_k": options.fluid_temperature_k,
                "volume_per_atom_a3": round(fluid_volume_per_atom(p, options.fluid_temperature_k), 4),
                "n_molecules": (n - n_free) // 2, "n_dissociated": n_free,
                "bond_mean_a": options.fluid_bond_mean_a, "bond_sigma_a": options.fluid_bond_sigma_a,
                "hh_tolerance_a": options.fluid_hh_tolerance_a, "source": "hand-made mixture",
                "relax_pressure_gpa": None}
    if kind == "fluid-md":
        steps = options.md_snapshot_steps
        t, j = divmod(index, len(steps))
        p = options.md_pressures_gpa[t % len(options.md_pressures_gpa)]
        n = options.md_atoms
        f_free = float(_rng(kind, seed, t).uniform(*options.fluid_dissociated_fraction))
        n_free = round(f_free * n)
        if (n - n_free) % 2:
            n_free += 1
        return {"kind": kind, "n_atoms": n, "pressure_nominal_gpa": p, "temperature_k": options.fluid_temperature_k,
                "volume_per_atom_a3": round(fluid_volume_per_atom(p, options.fluid_temperature_k), 4),
                "n_molecules": (n - n_free) // 2, "n_dissociated": n_free,
                "bond_mean_a": options.fluid_bond_mean_a, "bond_sigma_a": options.fluid_bond_sigma_a,
                "hh_tolerance_a": options.fluid_hh_tolerance_a, "source": "Born-Oppenheimer MD snapshot",
                "trajectory": trajectory_id(seed, t), "trajectory_index": t, "md_steps": options.md_steps,
                "snapshot_step": steps[j], "relax_pressure_gpa": None}
    raise InputError("kind", f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")


def trajectory_id(seed: int, trajectory: int) -> str:
    return f"md-s{seed}-t{trajectory:04d}"


# ---------------------------------------------------------------------------------------------------
# structure generators
# ---------------------------------------------------------------------------------------------------

class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that ordinary ``except Exception`` inside pyxtal passes it on."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise :class:`_Timeout` after ``seconds`` (SIGALRM; a no-op outside the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)  # re-fires until it escapes pyxtal's bare excepts
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def min_hh_distance(structure: Structure, r: float = 3.0) -> float:
    """Shortest distance between two atoms, periodic images included (Å; ``r`` if none is shorter)."""
    d = structure.get_neighbor_list(r=r)[3]
    return float(d.min()) if len(d) else r


def _check(structure: Structure, name: str) -> None:
    validate_structure(structure, name)
    d = min_hh_distance(structure, 1.0)
    if d < MIN_HH_A:
        raise StructureError(name, f"shortest H–H distance {d:.3f} Å is below {MIN_HH_A} Å")


def _cell_ok(structure: Structure) -> bool:
    """Reject needle- or slab-like cells (costly, unphysical k-meshes): reduced lengths within 4× and ≥ 1.2 Å."""
    red = structure.lattice.get_niggli_reduced_lattice()
    abc = np.array(red.abc)
    return abc.min() >= 1.2 and abc.max() / abc.min() <= 4.0


def make_crystal(params: dict, rng: np.random.Generator, *, attempts: int = 12, time_limit_s: float = 4.0) -> tuple[Structure, dict]:
    """A random symmetric hydrogen crystal (pyxtal) following ``params`` (see :func:`plan`).

    Draws a space group of the family compatible with the atom (or H2) count, a random cell of that
    lattice type at exactly the target volume, and places atoms (H2 molecules) with an H–H tolerance
    of ``hh_tolerance_a``; the cell is then Niggli-reduced (same crystal, fewer FFT points). Tries other space groups, then neighbouring atom counts, when pyxtal fails.
    Returns the structure and what was actually used (space group, atom count, attempts).
    """
    from pymatgen.core import Molecule
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice as PxLattice
    from pyxtal.symmetry import Group
    from pyxtal.tolerance import Tol_matrix

    lo, hi = FAMILIES[params["family"]]
    molecular = params["motif"] == "molecular"
    h2 = Molecule(["H", "H"], [[0, 0, 0], [0, 0, H2_BOND_A]])
    tol = params["hh_tolerance_a"]
    tm = Tol_matrix(("H", "H", tol), prototype="molecular" if molecular else "atomic")
    n0 = params["n_atoms"]
    step = 2 if molecular else 1
    counts = [n0] + [n for d in range(step, 13, step) for n in (n0 + d, n0 - d) if 4 <= n <= 48]
    tried = 0
    last_error = "no compatible space group"
    for n in counts:
        units = n // 2 if molecular else n
        groups = [g for g in rng.permutation(np.arange(lo, hi + 1))]
        for sg in groups:
            if tried >= attempts * 4:
                break
            group = Group(int(sg))
            try:
                if not group.check_compatible([units])[0]:
                    continue
            except Exception:  # noqa: BLE001 - pyxtal rejects some (group, count) pairs by raising
                continue
            tried += 1
            try:
                with warnings.catch_warnings(), _time_limit(time_limit_s), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    lattice = PxLattice(group.lattice_type, volume=params["volume_per_atom_a3"] * n, random_state=rng,
                                        min_l=2.0 if molecular else 1.5)
                    crystal = pyxtal(molecular=molecular)
                    crystal.from_random(3, int(sg), [h2 if molecular else "H"], [units], lattice=lattice, tm=tm,
                                        random_state=rng, max_count=3)
                    structure = crystal.to_pymatgen()
            except (_Timeout, Exception) as exc:  # noqa: BLE001 - pyxtal raises many types when it cannot place sites
                last_error = f"pyxtal failed for space group {sg} with {n} atoms ({type(exc).__name__})"
                continue
            # Niggli-reduce: oblique conventional cells (e.g. monoclinic β ≈ 35°) need far more FFT points
            structure = Structure(structure.lattice, ["H"] * len(structure), structure.frac_coords)
            structure = structure.get_reduced_structure("niggli").get_sorted_structure()
            if len(structure) != n or not _cell_ok(structure):
                last_error = f"space group {sg}: cell rejected (needle/slab) or wrong atom count"
                continue
            return structure, {"space_group": int(sg), "n_atoms": len(structure), "attempts": tried, "cell": "niggli-reduced",
                               "volume_per_atom_a3": round(structure.volume / len(structure), 4),
                               "min_hh_a": round(min_hh_distance(structure), 4)}
        if tried >= attempts * 4:
            break
    raise StructureError(f"crystal {params['family']} {params['motif']} {n0} atoms",
                         f"could not be generated after {tried} tries: {last_error}")


def _random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_fluid(params: dict, rng: np.random.Generator, *, tries: int = 400) -> tuple[Structure, dict]:
    """A hand-made dense-fluid snapshot: ``n_molecules`` H2 (bond ~ N(bond_mean, bond_sigma), clipped to
    0.64–0.95 Å, random orientation) and ``n_dissociated`` atoms, placed at random in a near-cubic cell
    (lengths ±8%, angles 90 ± 4°) of the target volume, with every H–H distance between different
    units ≥ the tolerance (lowered by 0.05 Å steps, to 0.8 Å, when random insertion jams)."""
    n = params["n_atoms"]
    volume = params["volume_per_atom_a3"] * n
    stretch = rng.uniform(0.92, 1.08, 3)
    angles = 90.0 + rng.uniform(-4.0, 4.0, 3)
    shape = Lattice.from_parameters(*stretch, *angles)
    lattice = Lattice(shape.matrix * (volume / shape.volume) ** (1 / 3))
    inv = np.linalg.inv(lattice.matrix)
    bonds = np.clip(rng.normal(params["bond_mean_a"], params["bond_sigma_a"], params["n_molecules"]), 0.64, 0.95)
    tol = params["hh_tolerance_a"]
    while tol >= 0.8 - 1e-9:
        for _ in range(3):
            placed = _insert(lattice, inv, bonds, params["n_dissociated"], tol, rng, tries)
            if placed is not None:
                s = Structure(lattice, ["H"] * len(placed), np.mod(placed @ inv, 1.0))
                return s, {"n_atoms": len(s), "hh_tolerance_used_a": round(tol, 3),
                           "cell_abc_a": [round(x, 4) for x in lattice.abc],
                           "cell_angles_deg": [round(x, 3) for x in lattice.angles],
                           "bond_lengths_a": [round(float(b), 4) for b in bonds],
                           "min_hh_a": round(min_hh_distance(s), 4)}
        tol -= 0.05
    raise StructureError(f"fluid {n} atoms", "random insertion could not place all molecules")


def _min_image_dist(lattice: Lattice, inv: np.ndarray, points: np.ndarray, new: np.ndarray) -> float:
    if not len(points):
        return np.inf
    d = (new[:, None, :] - points[None, :, :]) @ inv
    d -= np.round(d)
    best = np.inf
    # near-orthogonal cells: check the 27 neighbouring images of the rounded difference
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    for s in shifts:
        c = (d + s) @ lattice.matrix
        best = min(best, float(np.linalg.norm(c, axis=-1).min()))
    return best


def _insert(lattice: Lattice, inv: np.ndarray, bonds: np.ndarray, n_free: int, tol: float,
            rng: np.random.Generator, tries: int) -> np.ndarray | None:
    units = [("m", b) for b in bonds] + [("a", 0.0)] * n_free
    order = rng.permutation(len(units))
    points = np.zeros((0, 3))
    for u in order:
        kind, b = units[u]
        for _ in range(tries):
            centre = rng.random(3) @ lattice.matrix
            if kind == "m":
                axis = _random_unit_vectors(rng, 1)[0]
                new = np.array([centre - 0.5 * b * axis, centre + 0.5 * b * axis])
            else:
                new = centre[None, :]
            if _min_image_dist(lattice, inv, points, new) >= tol:
                points = np.vstack([points, new])
                break
        else:
            return None
    return points


def build_structure(kind: str, seed: int, index: int, params: dict) -> tuple[Structure, dict]:
    """The structure of entry ``index`` (deterministic given kind, seed, index and the pyxtal version);
    for ``fluid-md``, the hand-made start of the entry's trajectory."""
    if kind == "fluid-md":
        rng = _rng(kind, seed, params["trajectory_index"], stream=1)
        structure, info = make_fluid(params, rng)
        _check(structure, params["trajectory"])
        return structure, info
    rng = _rng(kind, seed, index, stream=1)
    name = entry_id(kind, seed, index)
    if kind == "hydride-prototype":
        structure = PROTOTYPES[params["prototype"]].build(tuple(params["substitution"]), params["pressure_gpa"])
        info = {"space_group": params["space_group"], "volume_per_atom_a3": round(structure.volume / len(structure), 4)}
    elif kind == "hydride-random":
        try:
            structure, info = make_random_hydride(params, rng)
        except ValueError as exc:
            raise StructureError(name, str(exc)) from None
    else:
        structure, info = (make_crystal if kind in ("crystal", "crystal-relaxed") else make_fluid)(params, rng)
    _check(structure, name)
    return structure, info


def warm_start(out: Path, params: dict, structure: Structure, info: dict) -> tuple[Structure, dict]:
    """A prototype entry's starting cell: the same prototype and metals already relaxed in ``out`` at the
    nearest other pressure P0, scaled by volume_guess(P)/volume_guess(P0), when there is one (its c/a and
    free Wyckoff parameters are closer to the answer than the prototype's guess); else ``structure``.
    ``info["start"]`` names the entry it came from."""
    same = [e for e in read_manifest(out)
            if e.get("relaxed") and e["generator"].get("prototype") == params["prototype"]
            and e["generator"].get("substitution") == params["substitution"]
            and e["pressure_gpa"] != params["pressure_gpa"] and (out / e["file"]).is_file()]
    if not same:
        return structure, info
    near = min(same, key=lambda e: (abs(e["pressure_gpa"] - params["pressure_gpa"]), e["id"]))
    start, _ = load_entry(out / near["file"])
    species = [site.specie.symbol for site in start]
    start.scale_lattice(start.volume * volume_guess(species, params["pressure_gpa"]) / volume_guess(species, near["pressure_gpa"]))
    return start, {**info, "volume_per_atom_a3": round(start.volume / len(start), 4),
                   "start": {"from": near["id"], "pressure_gpa": near["pressure_gpa"]}}


MdRunner = Callable[..., tuple[list[dict], dict]]


def md_snapshot(md_dir: Path, seed: int, index: int, params: dict, settings: DftSettings,
                md_runner: MdRunner, snapshot_steps: list[int]) -> tuple[Structure, dict]:
    """The structure of a ``fluid-md`` entry: its snapshot of the trajectory, run first if needed and
    kept in ``md_dir/<trajectory>.json`` (frames at the snapshot steps, the run's record; or the
    failure, so that a failed trajectory is not rerun). Raises :class:`DftError` for a failed run."""
    path = md_dir / f"{params['trajectory']}.json"
    if not path.is_file():
        start, info = build_structure("fluid-md", seed, index, params)
        try:
            frames, record = md_runner(start, params["temperature_k"], params["md_steps"], settings,
                                       name=params["trajectory"])
        except DftError as exc:
            _write_json(path, {"trajectory": params["trajectory"], "failed": exc.problem, "record": exc.record})
            raise
        keep = set(snapshot_steps)
        pressures = [f["pressure_gpa"] for f in frames if f["pressure_gpa"] is not None and f["step"] >= min(keep)]
        _write_json(path, {
            "trajectory": params["trajectory"], "start": info, "record": record,
            "mean_pressure_gpa": round(float(np.mean(pressures)), 2) if pressures else None,  # over the snapshot window
            "frames": [{"step": f["step"], "temperature_k": f["temperature_k"], "pressure_gpa": f["pressure_gpa"],
                        "lattice": np.round(f["structure"].lattice.matrix, 10).tolist(),
                        "frac_coords": np.round(f["structure"].frac_coords, 10).tolist()}
                       for f in frames if f["step"] in keep]})
    data = json.loads(path.read_text())
    if "failed" in data:
        raise DftError(params["trajectory"], f"the MD trajectory failed: {data['failed']}", data.get("record") or {})
    frame = next((f for f in data["frames"] if f["step"] == params["snapshot_step"]), None)
    if frame is None:
        raise DftError(params["trajectory"], f"the trajectory has no step {params['snapshot_step']}", {})
    structure = Structure(Lattice(frame["lattice"]), ["H"] * len(frame["frac_coords"]), frame["frac_coords"])
    _check(structure, entry_id("fluid-md", seed, index))
    dt_fs = (data["record"] or {}).get("dt_fs")
    return structure, {"trajectory": params["trajectory"], "step": frame["step"],
                       "time_fs": round(frame["step"] * dt_fs, 2) if dt_fs else None,
                       "temperature_k": frame["temperature_k"], "md_pressure_gpa": frame["pressure_gpa"],
                       "trajectory_mean_pressure_gpa": data.get("mean_pressure_gpa"),
                       "md_settings": {k: (data["record"] or {}).get(k) for k in
                                       ("ecutwfc_ry", "ecutrho_ry", "kmesh", "dt_fs", "qe_version")},
                       "n_atoms": len(structure), "min_hh_a": round(min_hh_distance(structure), 4)}


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, default=_json_default))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------

def write_npz(path: Path, grid: ElfGrid, stride: int, entry: str) -> tuple[int, str, list[int]]:
    """Write ``grid`` (every ``stride``-th point, float16) and its structure as the dataset file ``path``
    (atomically); its size in bytes, SHA-256 and stored grid shape."""
    values = grid.values[::stride, ::stride, ::stride] if stride > 1 else grid.values
    buf = io.BytesIO()
    s = grid.structure
    np.savez_compressed(buf, elf=values.astype(np.float16), lattice=np.asarray(s.lattice.matrix, dtype=np.float64),
                        species=np.array([site.specie.symbol for site in s]),
                        frac_coords=np.asarray(s.frac_coords, dtype=np.float64),
                        grid_shape=np.array(values.shape, dtype=np.int64),
                        full_grid_shape=np.array(grid.shape, dtype=np.int64), stride=np.int64(stride),
                        id=np.array(entry))
    data = buf.getvalue()
    tmp = path.with_suffix(".npz.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data), hashlib.sha256(data).hexdigest(), list(values.shape)


def load_entry(path: str | Path) -> tuple[Structure, ElfGrid]:
    """Read one dataset file (``DIR/<id>.npz``): the structure and its ELF grid (float64 values)."""
    grid = read_npz(path)
    return grid.structure, grid


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a ``.jsonl`` file (an unfinished last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def read_manifest(out_dir: str | Path) -> list[dict]:
    """The manifest entries of a dataset folder."""
    return read_jsonl(Path(out_dir) / "manifest.jsonl")


def append_jsonl(path: Path, obj: dict) -> None:
    """Append ``obj`` as one JSON line to ``path`` and fsync it (a manifest line is written whole or not at all)."""
    line = json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _topology(grid: ElfGrid) -> dict:
    from elfscreen.model.topology import analyze

    t0 = time.monotonic()
    topo = analyze(grid)
    return {"phi": topo.phi, "phi_star": topo.phi_star, "phi_1d": topo.phi_1d, "phi_2d": topo.phi_2d,
            "thresholds_grid": topo.thresholds_grid, "warnings": topo.warnings,
            "grid": "full-resolution float64 DFT grid", "wall_s": round(time.monotonic() - t0, 2)}


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-01-31T12:00:00Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------------

Runner = Callable[..., tuple[ElfGrid, dict]]


def default_settings(kind: str) -> DftSettings:
    """The DFT settings of a dataset kind: :data:`~elfscreen.model.dft.HYDRIDE_SETTINGS` for hydrides
    (PseudoDojo potentials, H_DOS), the pure-hydrogen defaults otherwise."""
    return HYDRIDE_SETTINGS if kind in HYDRIDE_KINDS else DftSettings()


def generate(out_dir: str | Path, kind: str, count: int, seed: int = 0, relax_fraction: float | None = None,
             progress: Callable[[dict], None] | None = None, *, settings: DftSettings | None = None,
             options: GeneratorOptions = GeneratorOptions(), runner: Runner | None = None,
             max_new: int | None = None, md_runner: MdRunner | None = None, retry_failed: bool = False) -> dict:
    """Make (or continue) a dataset of ``count`` structures of ``kind`` in ``out_dir``.

    ``relax_fraction`` (default 0.2 for crystals, 0 for fluids): share of structures relaxed at
    ``options.relax_pressure_gpa`` before the ELF (among cells of at most ``options.relax_max_atoms``). ``progress`` is called with a dict after every
    structure. ``runner`` replaces :func:`elfscreen.model.dft.elf_of` and ``md_runner`` :func:`elfscreen.model.dft.md` (tests). ``max_new`` stops after that many
    new DFT runs. ``retry_failed``: run the entries that failed before again, with this version's plan and
    code (their failed lines stay as history; a success adds the entry, and it is no longer counted as
    failed). Returns counts: ``done`` (new), ``failed`` (new), ``skipped`` (finished before).
    Only one generator may work in a folder at a time (a lock file).
    """
    if kind not in KINDS:
        raise InputError("kind", f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    if relax_fraction is None:
        relax_fraction = {"crystal": 0.2, "hydride-random": 0.5}.get(kind, 0.0)
    if kind == "hydride-prototype":
        count = min(count, len(prototype_entries()))
    settings = settings or default_settings(kind)
    runner = runner or elf_of
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(str(out), "another generator is working in this folder") from None
        try:
            return _generate(out, kind, count, seed, relax_fraction, progress, settings, options, runner, max_new,
                             md_runner or md, retry_failed)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate(out: Path, kind, count, seed, relax_fraction, progress, settings, options, runner, max_new,
              md_runner, retry_failed) -> dict:
    manifest, failed_path = out / "manifest.jsonl", out / "failed.jsonl"
    finished = {e["id"] for e in read_jsonl(manifest) if (out / e.get("file", "")).is_file()}
    failed = set() if retry_failed else {e["id"] for e in read_jsonl(failed_path)}
    plans = [(i, params) for i in range(count) if (params := plan(kind, seed, i, options, relax_fraction)) is not None]
    plans.sort(key=lambda p: (p[1]["n_atoms"], p[0]))  # small cells first
    counts = {"done": 0, "failed": 0, "skipped": 0, "todo": 0}
    todo = []
    for i, params in plans:
        eid = entry_id(kind, seed, i)
        if eid in finished or eid in failed:
            counts["skipped"] += 1
        else:
            todo.append((i, params))
    counts["todo"] = len(todo)
    t_run = time.monotonic()
    for n_run, (i, params) in enumerate(todo):
        if max_new is not None and n_run >= max_new:
            break
        eid = entry_id(kind, seed, i)
        t0 = time.monotonic()
        base = {"id": eid, "kind": kind, "seed": seed, "index": i, "generator": params,
                "elfscreen_version": __version__, "dataset_format": DATASET_FORMAT}
        try:
            if kind == "fluid-md":
                structure, gen_info = md_snapshot(out / "md", seed, i, params, settings, md_runner,
                                                  options.md_snapshot_steps)
            else:
                structure, gen_info = build_structure(kind, seed, i, params)
                if kind == "hydride-prototype":
                    structure, gen_info = warm_start(out, params, structure, gen_info)
        except InputError as exc:  # DftError (a failed MD run) included
            append_jsonl(failed_path, {**base, "created": utc_now(), "step": "md" if kind == "fluid-md" else "structure",
                                       "reason": str(exc)})
            counts["failed"] += 1
            _report(progress, eid, "failed", str(exc), counts, t_run)
            continue
        base["generator_result"] = gen_info
        base["input_structure_hash"] = structure_hash(structure)
        try:
            grid, record = runner(structure, settings, None, params.get("relax_pressure_gpa"), name=eid)
        except DftError as exc:
            append_jsonl(failed_path, {**base, "created": utc_now(), "step": exc.record.get("failed_step", "dft"),
                                       "reason": str(exc), "record": exc.record, "cpu_s": exc.record.get("cpu_s"),
                                       "wall_s": round(time.monotonic() - t0, 2)})
            counts["failed"] += 1
            _report(progress, eid, "failed", str(exc), counts, t_run)
            continue
        topo = _topology(grid)
        size, sha, stored_shape = write_npz(out / f"{eid}.npz", grid, options.stride, eid)
        s = grid.structure
        entry = {
            **base, "created": utc_now(),
            "structure_hash": structure_hash(s), "n_atoms": len(s),
            "volume_per_atom_a3": round(s.volume / len(s), 5), "min_hh_a": round(min_hh_distance(s), 4),
            "species": sorted({site.specie.symbol for site in s}), "formula": s.composition.reduced_formula,
            "h_fraction": round(sum(site.specie.symbol == "H" for site in s) / len(s), 5),
            "relaxed": params.get("relax_pressure_gpa") is not None,
            "pressure_gpa": params.get("relax_pressure_gpa") or params.get("pressure_gpa"),
            "h_dos": record.get("h_dos"), "cpu_s": record.get("cpu_s"),
            "file": f"{eid}.npz", "file_sha256": sha, "file_bytes": size,
            "grid": {"stored_shape": stored_shape, "full_shape": list(grid.shape), "stride": options.stride,
                     "subsampling": "every stride-th point of the DFT grid (no averaging)" if options.stride > 1 else "none",
                     "dtype": "float16", "spacing_full_a": [round(x, 5) for x in grid.spacing_a]},
            "elf": record.get("elf"),
            "topology": topo,
            "qe": {"version": record.get("qe_version"), "settings": record.get("settings"),
                   "pseudopotentials": record.get("pseudopotentials"), "kmesh": record.get("kmesh"),
                   "pw_input": record.get("pw_input"), "pp_input": record.get("pp_input"),
                   "scf": {k: v for k, v in (record.get("scf") or {}).items() if k != "output_tail"},
                   "pp": record.get("pp"), "rescaled": record.get("rescaled"), "relax": _slim_relax(record.get("relax"))},
            "wall_s": round(time.monotonic() - t0, 2),
        }
        append_jsonl(manifest, entry)
        counts["done"] += 1
        _report(progress, eid, "done", f"{len(s)} atoms, φ={topo['phi']}, {size / 1024:.0f} KiB", counts, t_run)
    return counts


def _slim_relax(rec: dict | None) -> dict | None:
    if not rec:
        return None
    return {k: v for k, v in rec.items() if k != "output_tail"}


def _report(progress, eid, status, message, counts, t_run) -> None:
    if progress:
        progress({"id": eid, "status": status, "message": message, **counts,
                  "elapsed_s": round(time.monotonic() - t_run, 1)})


def summary(out_dir: str | Path) -> dict:
    """Counts, sizes and φ range of a dataset folder."""
    out = Path(out_dir)
    entries = read_manifest(out)
    failed = _still_failed(out, entries)
    phis = [e["topology"]["phi"] for e in entries if e.get("topology", {}).get("phi") is not None]
    sizes = [e["file_bytes"] for e in entries]
    return {"entries": len(entries), "failed": len(failed), "bytes": int(sum(sizes)),
            "mean_bytes": int(np.mean(sizes)) if sizes else 0,
            "phi_range": [min(phis), max(phis)] if phis else None,
            "atoms_range": [min(e["n_atoms"] for e in entries), max(e["n_atoms"] for e in entries)] if entries else None}


def _still_failed(folder: Path, entries: list[dict]) -> list[dict]:
    """The failed entries of a folder that no later run made good (one line per id, the latest)."""
    made = {e["id"] for e in entries}
    latest = {f["id"]: f for f in read_jsonl(folder / "failed.jsonl")}
    return [f for i, f in latest.items() if i not in made]


def _pseudo_files(entry: dict) -> list[str]:
    qe = entry.get("qe") or {}
    if qe.get("pseudopotentials"):
        return [p["name"] for p in qe["pseudopotentials"].values()]
    return [qe["pseudopotential"]["name"]] if qe.get("pseudopotential") else []


def summary_of(dirs: list[str | Path]) -> dict:
    """One summary over dataset folders (``elfscreen dataset summary DIR… --json``): ``structures``,
    ``by_element`` (cells containing each element), ``relaxed``, ``pressure_gpa`` {min, max} (relaxation
    or generation pressure, where known), ``pseudopotentials`` (file names used), ``with_h_dos``,
    ``failed`` (entries whose latest run failed and none succeeded since), ``cpu_hours`` (QE CPU time of
    finished and failed runs, retried ones included; wall time for runs made before
    0.7, which were single-core), ``by_folder``."""
    entries, failed, attempts, by_folder = [], [], [], {}
    for d in dirs:
        e = read_manifest(d)
        f = _still_failed(Path(d), e)
        entries += e
        failed += f
        attempts += read_jsonl(Path(d) / "failed.jsonl")
        by_folder[str(d)] = {"structures": len(e), "failed": len(f)}
    by_element: dict[str, int] = {}
    for e in entries:
        for el in e.get("species") or ["H"]:
            by_element[el] = by_element.get(el, 0) + 1
    pressures = [p for e in entries if (p := e.get("pressure_gpa") or (e.get("generator") or {}).get("relax_pressure_gpa"))]
    # QE CPU seconds where recorded (since 0.7), else the run's wall seconds (runs are single-core)
    cpu = sum((e.get("cpu_s") or e.get("wall_s") or 0.0) for e in entries + attempts)
    return {"structures": len(entries), "by_element": dict(sorted(by_element.items())),
            "relaxed": sum(bool(e.get("relaxed")) for e in entries),
            "pressure_gpa": {"min": min(pressures), "max": max(pressures)} if pressures else None,
            "pseudopotentials": sorted({n for e in entries for n in _pseudo_files(e)}),
            "with_h_dos": sum(e.get("h_dos") is not None for e in entries), "failed": len(failed),
            "cpu_hours": round(cpu / 3600.0, 4), "by_folder": by_folder}
