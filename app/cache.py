"""The result cache: the same crystal, in any symmetry-equivalent setting, with the same model and options.

A job's ``cache_key`` hashes a *coarse* description that does not depend on the setting (the cell's
composition with counts, the spglib space group and the standardised conventional lattice, rounded)
together with the model identity and the options. Structures sharing a key are then compared exactly
with pymatgen's ``StructureMatcher`` at tight tolerances, so a key collision never returns the result
of a different crystal. A supercell is a different input (its result reports other counts).
"""
from __future__ import annotations

import hashlib
import json

from pymatgen.analysis.structure_matcher import StructureMatcher
import spglib
from pymatgen.core import Lattice, Structure

from elfscreen.model import __version__

SYMPREC_A = 1e-3  # Å: symmetry tolerance of the canonical setting (tight: only numerically equal cells match)
_MATCHER = StructureMatcher(ltol=1e-3, stol=5e-3, angle_tol=0.05, primitive_cell=False, scale=False,
                            attempt_supercell=False)


def structure_signature(structure: Structure) -> dict:
    """Setting-independent description: formula with counts, space group, standard lattice (Å, °)."""
    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    try:
        data = spglib.get_symmetry_dataset(cell, symprec=SYMPREC_A)
    except Exception:  # spglib gives up on some pathological cells: fall back to the Niggli cell
        data = None
    number, matrix = (0, structure.lattice.matrix) if data is None else (data.number, data.std_lattice)
    if number <= 2:  # triclinic (or no dataset): spglib's standard cell is not unique; Niggli's is
        matrix = spglib.niggli_reduce(matrix)
    lattice = Lattice(matrix)
    return {"formula": structure.composition.formula, "spacegroup": number,
            "abc": [round(x, 3) for x in sorted(lattice.abc)], "angles": [round(x, 1) for x in sorted(lattice.angles)]}


def cache_key(structure: Structure, model_id: str, options: dict) -> str:
    """sha256 of the structure's signature, the model identity, elfscreen's version and the options."""
    doc = {"structure": structure_signature(structure), "model": model_id, "elfscreen": __version__,
           "options": {k: options[k] for k in sorted(options)}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def same_crystal(a: Structure, b: Structure) -> bool:
    """True when ``b`` is ``a`` up to a symmetry-equivalent setting (origin, axes), same cell size."""
    return len(a) == len(b) and _MATCHER.fit(a, b)
