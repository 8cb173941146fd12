"""Hydride structures for the DFT datasets: superhydride prototypes and random binary/ternary hydrides.

Prototypes are written from their space group and Wyckoff sites (pymatgen ``Structure.from_spacegroup``),
the metal substituted, the cell scaled to a volume guessed from per-element volumes at the target
pressure; the DFT relaxation (``model.dft.relax``) then finds the cell and positions. Free Wyckoff
parameters are the published ones where known (H3S, LaH10, CaH6, CaYH12) and otherwise set by a packing
fit (M–H ≈ 2.0 Å, H–H ≈ 1.1–1.3 Å; said per prototype). Units: Å, Å³, GPa; fractional coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pymatgen.core import Lattice, Structure

# Volume per atom (Å³) near 150 GPa; V(P) = V150·(150/P)^0.3 (a rough compressibility: the relaxation
# fixes the cell, this only has to start it sensibly).
VOLUME_150GPA = {
    "H": 1.9, "La": 17.0, "Ce": 15.0, "Y": 14.0, "Ca": 12.0, "Sr": 16.0, "Ba": 20.0, "Sc": 10.0, "Mg": 8.0,
    "Zr": 12.0, "K": 14.0, "Na": 9.0, "Rb": 17.0, "Ti": 9.0, "Al": 8.0, "B": 5.5, "C": 4.0, "N": 5.0,
    "P": 8.0, "S": 9.0, "Si": 8.0,
}


def volume_guess(species: list[str], pressure_gpa: float) -> float:
    """A starting cell volume (Å³) for ``species`` (one symbol per atom) at ``pressure_gpa``."""
    return sum(VOLUME_150GPA[s] for s in species) * (150.0 / pressure_gpa) ** 0.3


@dataclass(frozen=True)
class Prototype:
    """A structure type: space group, lattice shape and Wyckoff sites with placeholders ``A``, ``X``
    for the non-H species; ``substitutions`` lists the (A,) or (A, X) tuples the dataset uses."""

    name: str
    space_group: str
    shape: str  # "cubic", "hexagonal" (c/a given), "tetragonal" (c/a given)
    c_over_a: float
    sites: tuple[tuple[str, tuple[float, float, float]], ...]
    substitutions: tuple[tuple[str, ...], ...]
    note: str = ""

    def build(self, substitution: tuple[str, ...], pressure_gpa: float) -> Structure:
        """The primitive cell with ``substitution`` for (A, X), scaled to :func:`volume_guess`."""
        cell = _primitive(self, tuple(substitution)).copy()
        cell.scale_lattice(volume_guess([s.specie.symbol for s in cell], pressure_gpa))
        return cell


@lru_cache(maxsize=None)
def _primitive(proto: Prototype, substitution: tuple[str, ...]) -> Structure:
    """The primitive cell of ``proto`` with ``substitution``, at the volume of 150 GPa; cached, since
    pymatgen spends ~0.25 s per call expanding the space group, and only the volume depends on pressure."""
    names = dict(zip(("A", "X"), substitution))
    species = [names.get(s, s) for s, _ in proto.sites]
    coords = [list(c) for _, c in proto.sites]
    lattice = {"cubic": Lattice.cubic(1.0), "hexagonal": Lattice.hexagonal(1.0, proto.c_over_a),
               "tetragonal": Lattice.tetragonal(1.0, proto.c_over_a)}[proto.shape]
    conv = Structure.from_spacegroup(proto.space_group, lattice, species, coords)
    conv.scale_lattice(volume_guess([s.specie.symbol for s in conv], 150.0))
    return conv.get_primitive_structure(tolerance=0.01)


_ALKALINE_RARE = ("Ca", "Sr", "Ba", "Y", "La", "Sc", "Zr", "Ce")
PROTOTYPES: dict[str, Prototype] = {p.name: p for p in (
    Prototype("MH6-Im-3m", "Im-3m", "cubic", 1.0, (("A", (0, 0, 0)), ("H", (0.25, 0, 0.5))),
              tuple((m,) for m in ("Ca", "Y", "Mg", "Sr", "Sc", "La", "Zr", "Ba", "Na", "K")),
              "sodalite clathrate (CaH6, YH6): A 2a, H 12d"),
    Prototype("MH10-Fm-3m", "Fm-3m", "cubic", 1.0,
              (("A", (0, 0, 0)), ("H", (0.25, 0.25, 0.25)), ("H", (0.38, 0.38, 0.38))),
              tuple((m,) for m in ("La", "Y", "Ca", "Sr", "Ba", "Sc", "Zr", "Ce")),
              "LaH10 clathrate: A 4a, H 8c, H 32f x = 0.38"),
    Prototype("MH9-P63/mmc", "P6_3/mmc", "hexagonal", 1.528,
              (("A", (1 / 3, 2 / 3, 0.75)), ("H", (0, 0, 0.25)), ("H", (1 / 3, 2 / 3, 0.125)), ("H", (0.13, 0.26, 0.08))),
              tuple((m,) for m in ("Y", "La", "Ca", "Sr", "Ba", "Sc", "Zr", "Ce")),
              "YH9/CeH9 type: A 2d, H 2b, 4f, 12k; free parameters from a packing fit (M–H 1.92 Å, H–H 1.13 Å at "
              "a = 3.39 Å), relaxed by DFT"),
    Prototype("MH4-I4/mmm", "I4/mmm", "tetragonal", 1.95,
              (("A", (0, 0, 0)), ("H", (0, 0.5, 0.25)), ("H", (0, 0, 0.38))),
              tuple((m,) for m in ("Ca", "Sr", "Ba", "Y", "La", "Sc", "Zr", "Mg", "K", "Na")),
              "ThCr2Si2 type (CaH4, YH4): A 2a, H 4d, H 4e z = 0.38"),
    Prototype("H3X-Im-3m", "Im-3m", "cubic", 1.0, (("A", (0, 0, 0)), ("H", (0, 0.5, 0.5))),
              tuple((m,) for m in ("S", "P", "Si", "Al", "B")),
              "H3S type: A 2a, H 6b"),
    Prototype("AXH8-Fm-3m", "Fm-3m", "cubic", 1.0,
              (("A", (0, 0, 0)), ("X", (0.5, 0.5, 0.5)), ("H", (0.355, 0.355, 0.355))),
              tuple((a, x) for a in ("La", "Y", "Ca", "Sr", "Ba", "Ce") for x in ("B", "Al", "Si")),
              "LaBeH8 type: A 4a, X 4b, H 32f x = 0.355 (X–H ≈ 1.35 Å); Be itself has no NC file here"),
    Prototype("AXH12-Pm-3m", "Pm-3m", "cubic", 1.0,
              (("A", (0, 0, 0)), ("X", (0.5, 0.5, 0.5)), ("H", (0.25, 0.5, 0))),
              (("Ca", "Y"), ("Mg", "Y"), ("Sr", "Y"), ("Ca", "La"), ("Sc", "Ca"), ("Mg", "Ca"), ("Sr", "La"),
               ("Y", "La"), ("Ca", "Zr"), ("Ba", "Y")),
              "CaYH12 type (ordered sodalite): A 1a, X 1b, H 12h x = 1/4"),
)}
PROTOTYPE_PRESSURES_GPA = (100.0, 200.0, 300.0)


@lru_cache(maxsize=None)
def prototype_size(name: str, substitution: tuple[str, ...]) -> int:
    """Atoms in the primitive cell of prototype ``name`` with ``substitution`` (cached; no volume dependence)."""
    return len(PROTOTYPES[name].build(substitution, 150.0))


def prototype_entries(names: tuple[str, ...] | None = None) -> list[tuple[str, tuple[str, ...], float]]:
    """Every (prototype, substitution, pressure) of the prototype dataset, in a fixed order (the entry
    index is the position here; new prototypes are appended, so existing indices keep their meaning)."""
    out = []
    for proto in PROTOTYPES.values():
        for sub in proto.substitutions:
            for p in PROTOTYPE_PRESSURES_GPA:
                out.append((proto.name, sub, p))
    if names is not None:
        out = [e for e in out if e[0] in names]
    return out


# Random hydrides: which metals pair with H (binary) and with each other (ternary).
RANDOM_METALS = ("La", "Y", "Ca", "Sr", "Ba", "Sc", "Mg", "Zr", "K", "Na", "Ce", "Al", "B", "C", "N", "P", "S", "Si")


def random_composition(rng: np.random.Generator, n_atoms: int, ternary: bool, h_fraction: float) -> list[str]:
    """Species (one per atom) of a random hydride with about ``h_fraction`` H among ``n_atoms`` atoms."""
    n_h = min(n_atoms - (2 if ternary else 1), max(1, round(h_fraction * n_atoms)))
    n_m = n_atoms - n_h
    metals = [str(m) for m in rng.choice(RANDOM_METALS, size=2 if ternary else 1, replace=False)]
    if ternary:
        k = int(rng.integers(1, n_m))  # at least one of each
        return [metals[0]] * k + [metals[1]] * (n_m - k) + ["H"] * n_h
    return [metals[0]] * n_m + ["H"] * n_h


def min_distance_ok(structure: Structure, hh: float = 0.6, mh: float = 1.0, mm: float = 1.6) -> bool:
    """No H–H pair closer than ``hh``, no M–H closer than ``mh``, no M–M closer than ``mm`` (Å)."""
    d = structure.distance_matrix + np.eye(len(structure)) * 1e3
    is_h = np.array([s.specie.symbol == "H" for s in structure])
    limit = np.where(is_h[:, None] & is_h[None, :], hh, np.where(is_h[:, None] | is_h[None, :], mh, mm))
    if len(structure) == 1:
        return True
    return bool((d >= limit).all()) and math.isfinite(structure.volume)


def make_random_hydride(params: dict, rng: np.random.Generator, *, attempts: int = 40) -> tuple[Structure, dict]:
    """A random symmetric binary or ternary hydride (pyxtal, atomic motif) with ``params["species"]``
    (one symbol per atom) in a space group drawn from 2–230 compatible with the counts, at
    :func:`volume_guess` for ``params["pressure_gpa"]``; Niggli-reduced. Returns the structure and what
    was used. Raises ``ValueError`` when pyxtal cannot place the atoms within ``attempts`` groups."""
    import contextlib
    import io
    import warnings

    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    species = params["species"]
    elements = list(dict.fromkeys(species))
    counts = [species.count(e) for e in elements]
    volume = volume_guess(species, params["pressure_gpa"])
    tried, last = 0, "no compatible space group"
    for sg in rng.permutation(np.arange(2, 231)):
        if tried >= attempts:
            break
        group = Group(int(sg))
        try:
            if not group.check_compatible(counts)[0]:
                continue
        except Exception:  # noqa: BLE001 - pyxtal rejects some (group, counts) pairs by raising
            continue
        tried += 1
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                crystal = pyxtal()
                crystal.from_random(3, int(sg), elements, counts, factor=1.0, random_state=rng, max_count=3)
                s = crystal.to_pymatgen()
        except Exception as exc:  # noqa: BLE001 - pyxtal raises many types when it cannot place sites
            last = f"pyxtal failed for space group {sg} ({type(exc).__name__})"
            continue
        s.scale_lattice(volume)
        s = s.get_reduced_structure("niggli").get_sorted_structure()
        abc = np.array(s.lattice.abc)
        if len(s) != len(species) or abc.min() < 1.2 or abc.max() / abc.min() > 4.0 or not min_distance_ok(s):
            last = f"space group {sg}: cell or distances rejected"
            continue
        return s, {"space_group": int(sg), "attempts": tried, "cell": "niggli-reduced",
                   "volume_per_atom_a3": round(s.volume / len(s), 4)}
    raise ValueError(f"could not be generated after {tried} space groups: {last}")
