"""ELF topology of a periodic grid: φ, φ*, the 1D/2D thresholds, the bottleneck and critical points.

Definitions follow ``../shared/notes/networking-value.md``:
- φ: highest isovalue t at which one piece of {ELF ≥ t} is periodic in three directions;
- φ_1d, φ_2d: the same for one and two directions (first chains, first layers);
- φ*: highest t at which one piece holds two distinct H atoms (or one H and its own image). An H atom
  belongs to the piece holding its attractor: the highest grid point within 0.7 bohr of the proton
  (the proton's nearest grid point when none lies that close).

All four come from one descending union–find sweep (:mod:`elfscreen.model.sweep`, 6-connectivity), exact on the
grid. The grid value is then refined to the critical point of the periodic Fourier interpolant that
the event voxel sits on (:mod:`elfscreen.model.fourier`): Newton on the gradient, accepted only if it converges
nearby to the right kind of point; otherwise the grid value is kept and the result says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from elfscreen.model.fourier import FourierField, SmoothField
from elfscreen.model.sweep import EVENT_1D, EVENT_2D, EVENT_3D, EVENT_H_PAIR, sweep
from elfscreen.model.volumetric import ElfGrid

if TYPE_CHECKING:
    from pymatgen.core import Structure

ATTRACTOR_RADIUS_A = 0.7 * 0.529177210903  # 0.7 bohr
MAX_LISTED = 64  # critical points listed (and refined); counts cover all of them


@dataclass
class Atom:
    index: int
    species: str
    distance_a: float


@dataclass
class Attractor:
    """An ELF maximum (a grid peak) joined at an event; ``image`` is its lattice translation."""

    frac: list[float]
    cart_a: list[float]
    elf: float
    image: list[int]
    nearest_atom: Atom


@dataclass
class Event:
    """A topological event of the sweep: the isovalue, where it happens and what it joins."""

    kind: str  # "merge" (two pieces join) , "loop" (a piece joins its own image) or "birth"
    elf: float  # refined value (continuum critical point), or the grid value when not refined
    elf_grid: float  # value of the grid point whose addition made it happen
    refined: bool
    frac: list[float]
    cart_a: list[float]
    voxel: list[int]
    joins: list[Attractor]
    nearest_atoms: list[Atom]


@dataclass
class CriticalPointEntry:
    kind: str  # "max" (3,-3) or "bond_saddle" (3,-1)
    frac: list[float]
    elf: float
    refined: bool
    persistence: float | None  # ELF range the feature lives over; None for essential ones


@dataclass
class Topology:
    """Everything :func:`analyze` finds; values are ELF, positions fractional and Å."""

    phi: float | None
    phi_1d: float | None
    phi_2d: float | None
    phi_star: float | None
    bottleneck: Event | None
    molecular_bottleneck: Event | None
    thresholds_grid: dict
    h_fraction: float
    n_h: int
    critical_points: dict
    warnings: list[str] = field(default_factory=list)


def h_attractors(grid: ElfGrid, radius_a: float = ATTRACTOR_RADIUS_A) -> np.ndarray:
    """Flat voxel index of each H atom's attractor (see module docstring), in site order of the H atoms."""
    s = grid.structure
    shape = np.array(grid.shape)
    lattice = s.lattice.matrix
    recip_len = np.linalg.norm(np.linalg.inv(lattice), axis=0)  # |b_a| without 2π, per Å
    half = np.ceil(radius_a * recip_len * shape).astype(int) + 1
    out = []
    for site in s:
        if site.specie.symbol != "H":
            continue
        centre = site.frac_coords * shape
        lo = np.floor(centre).astype(int) - half
        ranges = [np.arange(lo[a], lo[a] + 2 * half[a] + 2) for a in range(3)]
        idx = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
        dist = np.linalg.norm(((idx - centre) / shape) @ lattice, axis=1)
        wrapped = idx % shape
        vals = grid.values[wrapped[:, 0], wrapped[:, 1], wrapped[:, 2]]
        inside = dist <= radius_a
        best = np.argmax(np.where(inside, vals, -np.inf)) if inside.any() else np.argmin(dist)
        out.append(np.ravel_multi_index(tuple(wrapped[best]), grid.shape))
    return np.array(out, dtype=np.int64)


def nearest_atoms(structure: Structure, frac: np.ndarray, n: int = 2) -> list[Atom]:
    """The ``n`` atoms (periodic images included) nearest to a fractional point."""
    cart = structure.lattice.get_cartesian_coords(frac)
    r = 2.0
    while True:
        found = structure.get_sites_in_sphere(cart, r)
        if len(found) >= n or r > 50:
            break
        r *= 2
    found.sort(key=lambda nb: nb.nn_distance)
    return [Atom(int(nb.index), nb.specie.symbol, round(float(nb.nn_distance), 4)) for nb in found[:n]]


def analyze(grid: ElfGrid, *, refine: bool = True, min_persistence: float = 0.005,
            field: SmoothField | None = None, refine_listed: bool = True) -> Topology:
    """Topology of the ELF on ``grid``: φ, φ_1d, φ_2d, φ*, bottlenecks and critical points.

    ``min_persistence`` (ELF units) hides maxima and saddles whose feature lives over a smaller
    ELF range (grid noise); the sweep itself uses every voxel. ``field`` is the continuous field the
    events are refined on: the grid's Fourier interpolant unless given (the model's own ELF,
    :class:`~elfscreen.model.adaptive.ModelField`, for an adaptive grid); the listed critical points are
    refined on the grid's interpolant (on the model they cost ~0.5 s for 64 points), or not at all with
    ``refine_listed`` False (a hybrid grid that is one ensemble member away from the events).
    """
    s = grid.structure
    shape = grid.shape
    flat = grid.values.ravel()
    attractors = h_attractors(grid)
    atoms_at = np.bincount(attractors, minlength=flat.size).astype(np.int32).reshape(shape)
    result = sweep(grid.values, atoms_at)

    event_ids = [e for e in (EVENT_1D, EVENT_2D, EVENT_3D, EVENT_H_PAIR) if result.events[e, 0] >= 0]
    kinds = {}
    for e in event_ids:
        v, pa, pb = result.events[e]
        kinds[e] = "birth" if v == pa == pb else ("loop" if pa == pb else "merge")
    cp_entries, counts = _critical_point_entries(flat, result, min_persistence)
    voxels = [int(result.events[e, 0]) for e in event_ids] + [v for _, v, _ in cp_entries]
    n_neg = [3 if kinds[e] == "birth" else 2 for e in event_ids] + [3 if k == "max" else 2 for k, _, _ in cp_entries]
    voxels, n_neg = np.array(voxels, dtype=np.int64), np.array(n_neg)
    if field is None:
        points = _refine_voxels(grid, voxels, n_neg, refine)
    else:  # the events on ``field``; the listed critical points, which no result value rests on, on the grid's own
        cut = len(event_ids)
        points = (_refine_voxels(grid, voxels[:cut], n_neg[:cut], refine, field=field)
                  + _refine_voxels(grid, voxels[cut:], n_neg[cut:], refine and refine_listed))

    events: dict[int, Event | None] = dict.fromkeys((EVENT_1D, EVENT_2D, EVENT_3D, EVENT_H_PAIR))
    for n, e in enumerate(event_ids):
        v, pa, pb = (int(x) for x in result.events[e])
        frac, value, refined = points[n]
        joins = []
        if kinds[e] != "birth":
            for peak, image in ((pa, np.zeros(3, int)), (pb, result.event_offsets[e])):
                pf = np.array(np.unravel_index(peak, shape)) / np.array(shape)
                joins.append(Attractor(_r(pf), _r(s.lattice.get_cartesian_coords(pf + image)), float(flat[peak]),
                                       [int(x) for x in image], nearest_atoms(s, pf, 1)[0]))
        events[e] = Event(kinds[e], value, float(flat[v]), refined, _r(frac), _r(s.lattice.get_cartesian_coords(frac)),
                          [int(x) for x in np.unravel_index(v, shape)], joins, nearest_atoms(s, frac, 2))
    warnings = [f"{label} is the raw grid value: the critical point behind it could not be refined"
                for e, label in ((EVENT_3D, "φ"), (EVENT_H_PAIR, "φ*")) if refine and events[e] and not events[e].refined]
    listed = [CriticalPointEntry(kind, _r(frac), value, refined, pers)
              for (kind, _, pers), (frac, value, refined) in zip(cp_entries, points[len(event_ids):])]
    n_h = len(attractors)
    return Topology(
        phi=_value(events[EVENT_3D]),
        phi_1d=_value(events[EVENT_1D]),
        phi_2d=_value(events[EVENT_2D]),
        phi_star=_value(events[EVENT_H_PAIR]),
        bottleneck=events[EVENT_3D],
        molecular_bottleneck=events[EVENT_H_PAIR],
        thresholds_grid={k: (None if ev is None else ev.elf_grid) for k, ev in
                         (("phi", events[EVENT_3D]), ("phi_1d", events[EVENT_1D]), ("phi_2d", events[EVENT_2D]),
                          ("phi_star", events[EVENT_H_PAIR]))},
        h_fraction=n_h / len(s),
        n_h=n_h,
        critical_points={"counts": counts, "min_persistence": min_persistence, "listed": len(listed), "points": listed},
        warnings=warnings,
    )


def _critical_point_entries(flat: np.ndarray, result, min_persistence: float):
    """Maxima and bond saddles of the sweep with persistence ≥ ``min_persistence``: the first
    ``MAX_LISTED`` as (kind, voxel, persistence), most persistent first, and the counts of all.

    Each join of two pieces is a bond saddle that kills the lower of the two maxima; a join of a piece
    with its own image in a new direction is a bond saddle too (essential, no persistence). Saddles
    that close a contractible ring cannot be told from grid squares and are not listed.
    """
    entries: list[tuple[str, int, float | None]] = [("max", int(np.argmax(flat)), None)]
    if len(result.merges):
        saddle, _, die = result.merges.T
        pers = flat[die] - flat[saddle]
        keep = pers >= min_persistence
        entries += [("max", int(d), float(p)) for d, p in zip(die[keep], pers[keep])]
        entries += [("bond_saddle", int(v), float(p)) for v, p in zip(saddle[keep], pers[keep])]
    entries += [("bond_saddle", int(v), None) for v in result.loops[:, 0]]
    counts = {"max": sum(e[0] == "max" for e in entries), "bond_saddle": sum(e[0] == "bond_saddle" for e in entries)}
    entries.sort(key=lambda e: -(np.inf if e[2] is None else e[2]))
    return entries[:MAX_LISTED], counts


def values_at_events(grid: ElfGrid, topo: Topology, *, refine: bool = True) -> dict[str, float | None]:
    """φ and φ* of another field on the same grid and structure (an ensemble member), read at the
    critical points where :func:`analyze` found them on ``topo``'s field (the ensemble mean).

    Each event's value is the critical point of ``grid``'s Fourier interpolant that Newton reaches from
    the mean's refined point (same kind: bond saddle, or maximum for a birth), accepted under the same
    rule as :func:`analyze`; otherwise ``grid``'s value at the event voxel. No sweep: this assumes the
    member's bottleneck is the mean's one, which holds while the members differ by less than the gap
    to the next-highest competing saddle (``bench/ensemble.py`` measures the agreement with a full
    :func:`analyze` of each member). ``None`` where ``topo`` has no such event.
    """
    events = {"phi": topo.bottleneck, "phi_star": topo.molecular_bottleneck}
    found = {k: ev for k, ev in events.items() if ev is not None}
    out: dict[str, float | None] = dict.fromkeys(events)
    if not found:
        return out
    voxels = np.array([np.ravel_multi_index(tuple(ev.voxel), grid.shape) for ev in found.values()], dtype=np.int64)
    n_negative = np.array([3 if ev.kind == "birth" else 2 for ev in found.values()])
    starts = np.array([ev.frac for ev in found.values()], dtype=float)
    points = _refine_voxels(grid, voxels, n_negative, refine, starts=starts)
    for key, (_, value, _) in zip(found, points):
        out[key] = value
    return out


def _refine_voxels(grid: ElfGrid, voxels: np.ndarray, n_negative: np.ndarray, refine: bool,
                   starts: np.ndarray | None = None, field: SmoothField | None = None):
    """(frac, value, refined) for each flat voxel index: the critical point of ``field`` (default: the
    grid's Fourier interpolant) that Newton reaches from the voxel (or from ``starts``, fractional
    (P, 3), near it), or the voxel itself when refinement is off or fails."""
    shape = np.array(grid.shape)
    centres = np.array([np.unravel_index(v, grid.shape) for v in voxels]).reshape(-1, 3) / shape
    starts = centres if starts is None else np.asarray(starts, dtype=float).reshape(-1, 3)
    start_values = grid.values.ravel()[voxels]
    if not refine or not len(voxels):
        return [(f, float(v), False) for f, v in zip(centres, start_values)]
    lattice = grid.structure.lattice.matrix
    voxel_diag = float(np.linalg.norm(lattice / shape[:, None], axis=1).sum())
    field = FourierField(grid.values, lattice) if field is None else field
    cps = field.refine(starts, start_values, n_negative, max_shift_a=voxel_diag)
    out = []
    for v, centre, cp in zip(voxels, centres, cps):
        ijk = np.array(np.unravel_index(v, grid.shape))
        # Newton may reach a critical point that this voxel does not resolve (further than one step away in ELF)
        if cp.refined and abs(cp.value - grid.values[tuple(ijk)]) <= 2 * _local_step(grid.values, ijk) + 1e-9:
            out.append((cp.frac, cp.value, True))
        else:
            out.append((centre, float(grid.values[tuple(ijk)]), False))
    return out


def _local_step(values: np.ndarray, ijk: np.ndarray) -> float:
    """Largest change of the grid values between the voxel ``ijk`` and its 26 neighbours."""
    idx = [(ijk[a] + np.arange(-1, 2)) % values.shape[a] for a in range(3)]
    return float(np.abs(values[np.ix_(*idx)] - values[tuple(ijk)]).max())


def _value(ev: Event | None) -> float | None:
    return None if ev is None else ev.elf


def _r(x) -> list[float]:
    return [round(float(v), 6) for v in x]
