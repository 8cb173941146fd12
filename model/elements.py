"""Fixed physical properties of the elements the species-aware descriptor knows (its element embedding).

One row per element with a shipped pseudopotential (``model/potentials.py``): Pauling electronegativity
and the single-bond covalent radius in Å (Cordero et al., Dalton Trans. 2008, as ``ase.data`` lists it).
An element enters the "hydride-v2" descriptor only through these numbers, so an element seen in few
training cells borrows from the elements next to it in (χ, r_cov).
"""
from __future__ import annotations

from elfscreen.model.errors import UnsupportedElementError  # noqa: F401 - raised for the descriptor, defined with the other input errors

# element: (Pauling electronegativity, covalent radius Å)
PROPERTIES: dict[str, tuple[float, float]] = {
    "H": (2.20, 0.31),
    "La": (1.10, 2.07), "Y": (1.22, 1.90), "Ca": (1.00, 1.76), "Sr": (0.95, 1.95), "Ba": (0.89, 2.15),
    "Sc": (1.36, 1.70), "Mg": (1.31, 1.41), "Zr": (1.33, 1.75), "K": (0.82, 2.03), "Na": (0.93, 1.66),
    "Rb": (0.82, 2.20), "Ti": (1.54, 1.60), "Ce": (1.12, 2.04), "Al": (1.61, 1.21),
    "B": (2.04, 0.84), "C": (2.55, 0.76), "N": (3.04, 0.71), "P": (2.19, 1.07), "S": (2.58, 1.05),
    "Si": (1.90, 1.11),
}
PROPERTY_NAMES = ("pauling_chi", "covalent_radius_a")


def embedding(element: str, names: tuple[str, ...]) -> tuple[float, ...]:
    """The element's properties named by ``names`` (from ``PROPERTY_NAMES``)."""
    row = PROPERTIES[element]
    return tuple(row[PROPERTY_NAMES.index(n)] for n in names)
