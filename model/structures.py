"""Read and validate crystal structures (CIF, POSCAR/CONTCAR, extxyz, AIRSS .res).

Parsing is pymatgen's (CIF, POSCAR, .res) and ASE's (extxyz); this module only picks the reader,
turns every failure into one :class:`~elfscreen.model.errors.StructureError` that names the input and the
problem, and checks that the structure is something elfscreen can screen. Lengths in Å.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Structure

from elfscreen.model.errors import StructureError, UnsupportedElementError
from elfscreen.model.limits import StructureLimits

FORMATS = ("cif", "poscar", "extxyz", "res")
CIF_MAX_OPERATIONS = 192  # a space group given only by name expands up to this many (Fm-3m with centring)
_CIF_OPERATION_TAGS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz",
                       "_space_group_symop.operation_xyz")
_CIF_SITE_TAGS = ("_atom_site_fract_x", "_atom_site_cartn_x", "_atom_site.fract_x", "_atom_site.cartn_x")


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


def _precheck(text: str, fmt: str, name: str, limits: StructureLimits) -> None:
    """Refuse, before a parser runs, what would make it expand or loop beyond ``limits``: an extxyz
    atom-count line (ASE reads that many lines, forever at the end of the text) and a CIF's symmetry
    operations × sites (each site is expanded by every operation, then duplicates are merged pairwise)."""
    if fmt == "extxyz":
        _precheck_extxyz(text, name, limits)
    elif fmt == "cif":
        _precheck_cif(text, name, limits)


def _precheck_extxyz(text: str, name: str, limits: StructureLimits) -> None:
    lines, at, frames = text.splitlines(), 0, 0
    while at < len(lines) and lines[at].strip():
        try:
            count = int(lines[at].split()[0])
        except ValueError:
            raise StructureError(name, f"is not a readable extxyz file (line {at + 1} should hold the number of "
                                       "atoms of a frame)") from None
        if not 0 < count <= limits.max_atoms:
            raise StructureError(name, f"line {at + 1} declares {count:,} atoms; a structure needs 1 to "
                                       f"{limits.max_atoms:,} (the limit)")
        at, frames = at + count + 2, frames + 1
    if frames > 1:
        raise StructureError(name, f"holds {frames} structures; give one per input")


def _precheck_cif(text: str, name: str, limits: StructureLimits) -> None:
    from pymatgen.io.cif import CifFile

    try:
        blocks = CifFile.from_str(text).data.values()  # tokenising only: nothing is expanded yet
    except Exception:  # noqa: BLE001 - unreadable text: the parser proper reports it with its reason
        return
    images = 0
    for block in blocks:
        data = {key.lower(): value for key, value in block.data.items()}
        operations = next((len(_as_list(data[t])) for t in _CIF_OPERATION_TAGS if t in data), None)
        operations = operations or _cif_group_order(data)
        images += operations * next((len(_as_list(data[t])) for t in _CIF_SITE_TAGS if t in data), 0)
        for key in ("_cell_length_a", "_cell_length_b", "_cell_length_c"):
            _check_number(data.get(key), 0.0, limits.max_length_a, name, key)
        for key in ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"):
            _check_number(data.get(key), 0.0, 180.0, name, key)
        for key in ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"):
            for value in _as_list(data.get(key, [])):
                _check_number(value, -limits.max_fractional, limits.max_fractional, name, key)
    if images > limits.max_symmetry_images:
        raise StructureError(name, f"expands to {images:,} atom images (symmetry operations × sites) before "
                                   f"duplicates are merged; the limit is {limits.max_symmetry_images:,}")


def _cif_group_order(data: dict) -> int:
    """Operations of the space group a CIF block names without listing them (the most any has when
    the name is missing or unknown: the parser may still find one elsewhere)."""
    from pymatgen.symmetry.groups import SpaceGroup

    for key in ("_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt", "_symmetry_int_tables_number",
                "_space_group_it_number"):
        value = data.get(key)
        if isinstance(value, str) and value.strip(" '\"?."):
            try:
                value = value.strip(" '\"")
                group = SpaceGroup.from_int_number(int(value)) if value.isdigit() else SpaceGroup(value)
                return len(group.symmetry_ops)
            except Exception:  # noqa: BLE001 - a name pymatgen does not know: assume the largest group
                break
    return CIF_MAX_OPERATIONS


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _check_number(raw, lo: float, hi: float, name: str, what: str) -> None:
    """Raise unless the CIF number ``raw`` (uncertainty in brackets allowed; ``?``/``.``/absent skipped:
    the parser reports those) is finite and within [lo, hi]."""
    if raw is None or isinstance(raw, list):
        return
    token = str(raw).split("(")[0].strip()
    if token in ("", "?", "."):
        return
    try:
        value = float(token)
    except ValueError:
        return
    if not (np.isfinite(value) and lo <= value <= hi):
        raise StructureError(name, f"{what} is {token}; it must be a finite number from {lo:g} to {hi:g}")


def parse_structure(text: str, fmt: str, name: str = "<input>", limits: StructureLimits = StructureLimits()) -> Structure:
    """Parse ``text`` in format ``fmt`` and validate it; ``name`` is used in error messages. Counts and
    numbers that would make parsing expensive are refused before parsing (:func:`_precheck`)."""
    fmt = _normalise_format(fmt, name)
    if not text.strip():
        raise StructureError(name, "is empty")
    _precheck(text, fmt, name, limits)
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
    no two atoms closer than ``limits.min_distance_a`` (periodic images included), and atom count,
    lattice vector lengths, coordinates and cell volume within ``limits``. The numbers are checked
    before anything costly (the neighbour search here, spglib or the grid later) sees them."""
    n = len(structure)
    if n == 0:
        raise StructureError(name, "holds no atoms")
    if n > limits.max_atoms:
        raise StructureError(name, f"has {n} atoms; the limit is {limits.max_atoms}")
    if not structure.is_ordered:
        raise StructureError(name, "has partial occupancies; give an ordered structure")
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.isfinite(matrix).all():
        raise StructureError(name, "has a lattice with a non-finite number (nan or inf)")
    lengths = np.linalg.norm(matrix, axis=1)
    if lengths.max() > limits.max_length_a:
        raise StructureError(name, f"has a lattice vector {lengths.max():.4g} Å long; the limit is {limits.max_length_a:g} Å")
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not np.isfinite(frac).all():
        k = int(np.argwhere(~np.isfinite(frac))[0][0])
        raise StructureError(name, f"atom {k + 1} ({structure[k].specie}) has a non-finite coordinate (nan or inf)")
    if np.abs(frac).max() > limits.max_fractional:
        k = int(np.argmax(np.abs(frac).max(axis=1)))
        raise StructureError(name, f"atom {k + 1} ({structure[k].specie}) lies {np.abs(frac[k]).max():.3g} cells "
                                   f"away; the limit is {limits.max_fractional:g} (a broken coordinate?)")
    volume = float(abs(np.linalg.det(matrix)))
    if volume < 1e-9:
        raise StructureError(name, "does not have a three-dimensional periodic cell (cell volume is zero)")
    if not limits.min_volume_a3 <= volume <= limits.max_volume_a3:
        raise StructureError(
            name, f"has a cell volume of {volume:.4g} Å³, outside the allowed {limits.min_volume_a3:g}–{limits.max_volume_a3:g} Å³"
        )
    if Element("H") not in structure.composition:
        raise StructureError(name, f"contains no hydrogen (composition {structure.composition.reduced_formula})")
    d_min = limits.min_distance_a
    if min(structure.lattice.abc) < d_min:
        raise StructureError(name, f"has a lattice vector shorter than {d_min} Å: every atom overlaps its own image")
    # in the unit cell: the periodic distances are the same, and the search's bins span one cell only
    wrapped = Structure(structure.lattice, structure.species, frac % 1.0)
    centres, points, _, distances = wrapped.get_neighbor_list(r=d_min)
    if len(distances):
        k = int(np.argmin(distances))
        i, j = int(centres[k]), int(points[k])
        raise StructureError(
            name,
            f"atoms {i + 1} ({structure[i].specie}) and {j + 1} ({structure[j].specie}) are {distances[k]:.3f} Å apart "
            f"(periodic images included); the minimum is {d_min} Å",
        )


def check_species(structure: Structure, supported: tuple[str, ...], name: str = "<input>", model: str = "the model",
                  species_aware: bool = False) -> None:
    """Raise :class:`~elfscreen.model.errors.UnsupportedElementError` when ``structure`` holds an element
    outside ``supported`` (what the model's descriptor sees), naming the elements, the supported list and
    which model would be needed. Called before any prediction (CLI, client, service submission): a
    descriptor that sees H only would otherwise leave the other atoms out of the ELF without a word.
    ``model`` names the model in the message; ``species_aware``: whether its descriptor has an element
    embedding (then only a larger element table would help)."""
    from elfscreen.model.elements import PROPERTIES  # the species-aware descriptor's table

    unknown = sorted({site.specie.symbol for site in structure} - set(supported))
    if not unknown:
        return
    nowhere = [el for el in unknown if el not in PROPERTIES]
    if nowhere:
        hint = f"No elfscreen descriptor knows {', '.join(nowhere)} (the species-aware one covers {' '.join(PROPERTIES)})"
    elif not species_aware:
        hint = (f"Screening a compound needs a species-aware model (descriptor hydride-v2 or -v3, elements "
                f"{' '.join(PROPERTIES)}): elfscreen's default, elf-mh (`--model elf-mh` or ELFSCREEN_MODEL=elf-mh; "
                f"model/weights/MODEL_CARD-elf-mh.md), or your own checkpoint passed the same way")
    else:
        hint = None
    raise UnsupportedElementError(name, unknown, tuple(supported), by=model, hint=hint)


def structure_to_dict(structure: Structure) -> dict:
    """A validated structure as plain JSON (lattice rows in Å, species, fractional coordinates): what
    the service stores with a job so that it is parsed once, at submission. Floats round-trip exactly."""
    return {"lattice": structure.lattice.matrix.tolist(), "species": [str(site.specie) for site in structure],
            "frac_coords": structure.frac_coords.tolist()}


def structure_from_dict(data: dict) -> Structure:
    """The structure :func:`structure_to_dict` wrote."""
    return Structure(np.array(data["lattice"]), data["species"], data["frac_coords"])
