"""Norm-conserving pseudopotentials for the DFT ELF, one file per element.

The table (``SPECIES_FILES``) follows one valence convention, because the core/valence split of the
heavy atom moves φ (H3S: 0.749 with ``S.upf``, 0.685 with ``S-sp.upf``): semicore s/p states in valence
for every metal (the PseudoDojo ``-sp`` files), valence-only files for H and the p-block. The files ship
gzipped in ``model/pseudo/`` (PseudoDojo NC v0.4 without core correction, attribution in its README);
``$ELFSCREEN_PSEUDO_DIR`` names a folder searched first. Only norm-conserving files are accepted: QE's
ELF is wrong near atoms with PAW/ultrasoft data (τ from smooth wavefunctions, ρ augmented).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from elfscreen.model.errors import InputError

SHIPPED_DIR = Path(__file__).resolve().parent / "pseudo"
TABLE = "PseudoDojo NC-SR v0.4 PBE (no core correction)"
SPECIES_FILES = {
    "H": "H.upf",
    # metals: semicore s, p in valence
    "La": "La-sp.upf", "Y": "Y-sp.upf", "Ca": "Ca-sp.upf", "Sr": "Sr-sp.upf", "Ba": "Ba-sp.upf",
    "Sc": "Sc-sp.upf", "Mg": "Mg-sp.upf", "Zr": "Zr-sp.upf", "K": "K-sp.upf", "Na": "Na-sp.upf",
    "Rb": "Rb-sp.upf", "Ti": "Ti-sp.upf", "Ce": "Ce-sp.upf",
    # p-block: valence only
    "Al": "Al.upf", "B": "B.upf", "C": "C.upf", "N": "N.upf", "P": "P.upf", "S": "S.upf", "Si": "Si.upf",
}
UNAVAILABLE = {"Li": "the PseudoDojo v0.4 table has no Li file without core correction",
               "Be": "the PseudoDojo v0.4 table has no Be file without core correction"}


class PseudopotentialError(InputError):
    """No usable norm-conserving pseudopotential for an element, or a file that is not norm-conserving."""

    code = "pseudopotential"


@dataclass(frozen=True)
class Pseudopotential:
    """A pseudopotential file ready for pw.x (``path`` unpacked, ``name`` as written in the input)."""

    path: Path
    name: str
    source: str  # "debian", "ld1.x", "shipped", "file" or "ELFSCREEN_PSEUDO_DIR"
    origin: str  # where it came from
    sha256: str
    kind: str = "norm-conserving PBE"
    element: str = "H"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def supported_elements() -> list[str]:
    """The elements the DFT driver has a norm-conserving pseudopotential for."""
    return sorted(SPECIES_FILES)


def upf_kind(text: str) -> str:
    """``"NC"``, ``"US"`` or ``"PAW"`` from a UPF file's header (UPF v2 attributes or v1 header line)."""
    m = re.search(r'pseudo_type\s*=\s*"\s*(\w+)\s*"', text)
    if m:
        kind = m.group(1).upper()
    else:  # UPF v1: "<PP_HEADER>" then a version line, the element, then "NC"/"US"/"PAW"
        m = re.search(r"<PP_HEADER>\s*\n(?:.*\n){2}\s*(\w+)", text)
        kind = m.group(1).upper() if m else "UNKNOWN"
    if re.search(r'is_paw\s*=\s*"\s*[TtYy.]', text):
        kind = "PAW"
    elif re.search(r'is_ultrasoft\s*=\s*"\s*[TtYy.]', text):
        kind = "US"
    return {"SL": "NC", "USPP": "US"}.get(kind, kind)


def require_norm_conserving(text: str, name: str) -> None:
    """Raise :class:`PseudopotentialError` unless the UPF text is norm-conserving."""
    kind = upf_kind(text)
    if kind != "NC":
        raise PseudopotentialError(name, f"is a {kind} pseudopotential; the ELF needs norm-conserving "
                                         "potentials for every species (QE's ELF is wrong near atoms with "
                                         "PAW/ultrasoft data)")


def species_pseudopotential(element: str, directory: str | Path) -> Pseudopotential:
    """The norm-conserving pseudopotential of ``element``, unpacked into ``directory`` (a cache folder).

    ``$ELFSCREEN_PSEUDO_DIR/<file>`` (or ``.gz``) wins over the shipped file. Raises
    :class:`PseudopotentialError` naming the element (and the supported list) when there is none, or
    when the file found is PAW/ultrasoft.
    """
    if element not in SPECIES_FILES:
        why = UNAVAILABLE.get(element, "it is not in elfscreen's pseudopotential table")
        raise PseudopotentialError(element, f"no norm-conserving pseudopotential for {element} ({why}); "
                                            f"supported: {', '.join(supported_elements())}")
    fname = SPECIES_FILES[element]
    candidates = []
    if os.environ.get("ELFSCREEN_PSEUDO_DIR"):
        user = Path(os.environ["ELFSCREEN_PSEUDO_DIR"])
        candidates += [(user / fname, "ELFSCREEN_PSEUDO_DIR"), (user / (fname + ".gz"), "ELFSCREEN_PSEUDO_DIR")]
    candidates.append((SHIPPED_DIR / (fname + ".gz"), "shipped"))
    for src, source in candidates:
        if src.is_file():
            raw = src.read_bytes()
            data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            require_norm_conserving(data.decode(errors="replace"), str(src))
            target = Path(directory) / fname
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != data:
                tmp = target.with_suffix(f".part{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            origin = f"{TABLE}: {fname}" if source == "shipped" else str(src)
            return Pseudopotential(target, fname, source, origin, hashlib.sha256(data).hexdigest(),
                                   "norm-conserving PBE (ONCVPSP)", element)
    raise PseudopotentialError(element, f"the pseudopotential file {fname} for {element} is missing "
                                        f"(looked in {', '.join(str(c[0].parent) for c in candidates)})")


def pseudopotentials_for(elements, directory: str | Path) -> dict[str, Pseudopotential]:
    """One :class:`Pseudopotential` per element of ``elements`` (symbols); every missing element is
    named in one :class:`PseudopotentialError`."""
    elements = sorted(set(elements))
    missing = [e for e in elements if e not in SPECIES_FILES]
    if missing:
        why = "; ".join(f"{e}: {UNAVAILABLE.get(e, 'not in the table')}" for e in missing)
        raise PseudopotentialError(", ".join(missing), f"no norm-conserving pseudopotential ({why}); "
                                                       f"supported: {', '.join(supported_elements())}")
    return {e: species_pseudopotential(e, directory) for e in elements}
