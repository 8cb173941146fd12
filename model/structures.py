"""Read and validate crystal structures (CIF, POSCAR/CONTCAR, extxyz, AIRSS .res).

Parsing is pymatgen's (CIF, POSCAR, .res) and ASE's (extxyz); this module only picks the reader,
turns every failure into one :class:`~elfscreen.model.errors.StructureError` that names the input and the
problem, and checks that the structure is something elfscreen can screen. Lengths in Å.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Structure

from elfscreen.model.errors import StructureError

FORMATS = ("cif", "poscar", "extxyz", "res")


@dataclass(frozen=True)
class StructureLimits:
    """What a structure must satisfy to be screened (Å, Å³)."""

    max_atoms: int = 2000
    min_volume_a3: float = 1.0
    max_volume_a3: float = 100_000.0
    min_distance_a: float = 0.3


def guess_format(name: str) -> str:
    """The format of a structure file from its name: ``cif``, ``poscar``, ``extxyz`` or ``res``."""
    base = Path(name).name
    lower = base.lower()
    if lower.endswith(".cif"):
        return "cif"
    if lower.endswith((".xyz", ".extxyz")):
        return "extxyz"
    if lower.endswith(".res"):
        return "res"
    if lower.endswith((".vasp", ".poscar")) or base.upper().startswith(("POSCAR", "CONTCAR")):
        return "poscar"
    raise StructureError(name, f"cannot tell the structure format from the name; give one of {', '.join(FORMATS)}")


def _normalise_format(fmt: str, name: str) -> str:
    fmt = fmt.lower()
    fmt = {"vasp": "poscar", "contcar": "poscar", "xyz": "extxyz", "airss": "res"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise StructureError(name, f"unknown structure format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def _parse(text: str, fmt: str, name: str) -> Structure:
    if fmt == "extxyz":
        import ase.io
        from pymatgen.io.ase import AseAtomsAdaptor

        frames = ase.io.read(io.StringIO(text), format="extxyz", index=":")
        if len(frames) != 1:
            raise StructureError(name, f"holds {len(frames)} structures; give one per input")
        atoms = frames[0]
        if not all(atoms.pbc) or abs(atoms.cell.volume) < 1e-9:
            raise StructureError(name, "is not periodic in three dimensions (extxyz needs a Lattice and pbc=\"T T T\")")
        return AseAtomsAdaptor.get_structure(atoms)
    if fmt == "res":
        from pymatgen.io.res import ResIO

        return ResIO.structure_from_str(text)
    if fmt == "cif":
        from pymatgen.io.cif import CifParser

        structures = CifParser.from_str(text).parse_structures(primitive=False)
        if len(structures) != 1:
            raise StructureError(name, f"holds {len(structures)} structures; give one per input")
        return structures[0]
    return Structure.from_str(text, fmt="poscar")


def parse_structure(text: str, fmt: str, name: str = "<input>", limits: StructureLimits = StructureLimits()) -> Structure:
    """Parse ``text`` in format ``fmt`` and validate it; ``name`` is used in error messages."""
    fmt = _normalise_format(fmt, name)
    if not text.strip():
        raise StructureError(name, "is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = _parse(text, fmt, name)
    except StructureError:
        raise
    except Exception as exc:  # the parsers raise many types; the user needs the file and the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StructureError(name, f"is not a readable {fmt} file ({reason})") from exc
    validate_structure(structure, name, limits)
    return structure


def read_structure(path: str | Path, fmt: str | None = None, limits: StructureLimits = StructureLimits()) -> Structure:
    """Read and validate the structure in the file ``path`` (format from its name unless given)."""
    path = Path(path)
    name = path.name
    fmt = fmt or guess_format(name)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise StructureError(name, f"cannot be read ({exc.strerror or exc})") from exc
    return parse_structure(text, fmt, name, limits)


def validate_structure(structure: Structure, name: str = "<input>", limits: StructureLimits = StructureLimits()) -> None:
    """Raise :class:`StructureError` unless ``structure`` is an ordered 3D crystal with hydrogen,
    no two atoms closer than ``limits.min_distance_a`` (periodic images included), and atom count and
    cell volume within ``limits``."""
    if not structure.is_ordered:
        raise StructureError(name, "has partial occupancies; give an ordered structure")
    volume = float(structure.lattice.volume)
    if not np.isfinite(structure.lattice.matrix).all() or not np.isfinite(volume) or volume < 1e-9:
        raise StructureError(name, "does not have a three-dimensional periodic cell (cell volume is zero)")
    n = len(structure)
    if n == 0:
        raise StructureError(name, "holds no atoms")
    if n > limits.max_atoms:
        raise StructureError(name, f"has {n} atoms; the limit is {limits.max_atoms}")
    if not limits.min_volume_a3 <= volume <= limits.max_volume_a3:
        raise StructureError(
            name, f"has a cell volume of {volume:.4g} Å³, outside the allowed {limits.min_volume_a3:g}–{limits.max_volume_a3:g} Å³"
        )
    if Element("H") not in structure.composition:
        raise StructureError(name, f"contains no hydrogen (composition {structure.composition.reduced_formula})")
    d_min = limits.min_distance_a
    if min(structure.lattice.abc) < d_min:
        raise StructureError(name, f"has a lattice vector shorter than {d_min} Å: every atom overlaps its own image")
    centres, points, _, distances = structure.get_neighbor_list(r=d_min)
    if len(distances):
        k = int(np.argmin(distances))
        i, j = int(centres[k]), int(points[k])
        raise StructureError(
            name,
            f"atoms {i + 1} ({structure[i].specie}) and {j + 1} ({structure[j].specie}) are {distances[k]:.3f} Å apart "
            f"(periodic images included); the minimum is {d_min} Å",
        )
