"""H_DOS: the hydrogen share of the electronic density of states at the Fermi level.

Defined as TcESTIME does (Belli et al. 2021 use it in φ_DOS = φ·H_f·H_DOS^(1/3)): the DOS at E_F
projected on the atomic orbitals of the H atoms, over the DOS at E_F projected on every atom's orbitals
(the sum of projections, projwfc.x's ``pdos_tot`` third column). For H3S (TcESTIME's example):
3 × 0.0846 / 0.519 = 0.489. Energies in eV, DOS in states/eV per cell.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from elfscreen.model.errors import InputError

PDOS_FILE = re.compile(r"\.pdos_atm#(\d+)\(([A-Za-z]+)\)_wfc#(\d+)\((\w+)\)$")
# Below this projected DOS at E_F (states/eV per atom) the cell is an insulator at the DFT level: H_DOS
# (a share of zero) is undefined and Belli's φ–Tc relation, fitted on metals, does not apply. Metallic
# hydrides have 0.05–1 per atom; the Gaussian tail of projwfc's broadening inside a gap of ≳1 eV is far
# below it.
INSULATOR_DOS_PER_ATOM = 1e-3


def h_share(projections: list[tuple[str, float]]) -> float:
    """Σ over H of the projected DOS at E_F / Σ over every atom. ``projections``: (element, ldos at E_F)
    per atom and orbital. Raises :class:`InputError` when the projected DOS at E_F is zero (an insulator:
    H_DOS is undefined there)."""
    total = sum(v for _, v in projections)
    if not total > 0:
        raise InputError("pdos", "the projected DOS at the Fermi level is zero (insulator): H_DOS is undefined")
    return sum(v for el, v in projections if el == "H") / total


def read_pdos_fermi(text: str) -> list[tuple[str, float]]:
    """(element, ldos at E_F) per atom and orbital from TcESTIME's ``pdos_fermi`` listing (lines
    ``<file>.pdos_atm#N(El)_wfc#M(l):  E_F  ldos  pdos…``; the ``pdos_tot`` line is skipped)."""
    rows = []
    for line in text.splitlines():
        name, _, numbers = line.partition(":")
        m = PDOS_FILE.search(name.strip())
        if m:
            rows.append((m.group(2), float(numbers.split()[1])))
    return rows


def projwfc_input(degauss_ry: float, delta_e_ev: float, prefix: str = "elf") -> str:
    """The projwfc.x input for the SCF in ``./tmp``: Gaussian broadening ``degauss_ry``, files ``pdos.*``."""
    return "\n".join([
        "&PROJWFC", f"  prefix = '{prefix}'", "  outdir = './tmp'", "  filpdos = 'pdos'",
        "  ngauss = 0", f"  degauss = {degauss_ry:.4f}", f"  DeltaE = {delta_e_ev:.4f}", "/",
    ]) + "\n"


def projections_at(folder: str | Path, fermi_ev: float) -> list[tuple[str, float]]:
    """(element, ldos at ``fermi_ev``) for every ``pdos.pdos_atm#N(El)_wfc#M(l)`` file projwfc.x wrote in
    ``folder`` (linear interpolation in the file's energy column, eV)."""
    rows = []
    for path in sorted(Path(folder).glob("*.pdos_atm#*")):
        m = PDOS_FILE.search(path.name)
        if not m:
            continue
        data = np.loadtxt(path, comments="#", ndmin=2)
        e, ldos = data[:, 0], data[:, 1]
        if not e[0] <= fermi_ev <= e[-1]:
            raise InputError(path.name, f"E_F = {fermi_ev} eV lies outside the file's energies ({e[0]}–{e[-1]} eV)")
        rows.append((m.group(2), float(np.interp(fermi_ev, e, ldos))))
    if not rows:
        raise InputError(str(folder), "projwfc.x wrote no projected-DOS files")
    return rows


def h_dos_from_projwfc(folder: str | Path, fermi_ev: float | None) -> dict:
    """H_DOS from projwfc.x's files in ``folder`` at the Fermi energy (eV, from pw.x): ``{value,
    fermi_ev, projected_dos_ef, h_projected_dos_ef, by_element, insulator}`` and, from ``pdos_tot``,
    ``total_dos_ef``, ``h_share_of_total_dos`` and ``spilling_ef`` (DOS in states/eV per cell). An
    insulator (projected DOS at E_F below :data:`INSULATOR_DOS_PER_ATOM` per atom) gets ``value`` None
    and ``insulator`` True instead of an error, so its ELF is kept."""
    if fermi_ev is None:
        raise InputError("pw.out", "pw.x printed no Fermi energy (fixed occupations?): H_DOS needs smearing")
    rows = projections_at(folder, fermi_ev)
    by_element: dict[str, float] = {}
    for el, v in rows:
        by_element[el] = by_element.get(el, 0.0) + v
    atoms = {PDOS_FILE.search(p.name).group(1) for p in Path(folder).glob("*.pdos_atm#*") if PDOS_FILE.search(p.name)}
    insulator = sum(by_element.values()) < INSULATOR_DOS_PER_ATOM * len(atoms)
    out = {"value": None if insulator else round(h_share(rows), 6), "insulator": insulator, "fermi_ev": fermi_ev,
           "projected_dos_ef": round(sum(by_element.values()), 6),
           "h_projected_dos_ef": round(by_element.get("H", 0.0), 6),
           "by_element": {k: round(v, 6) for k, v in sorted(by_element.items())}}
    # The projections miss what the pseudo-atomic orbitals cannot represent (e.g. Ca 3d: Ca-sp.upf has
    # no d orbital); the total DOS shows how much (spilling), and H over the total DOS is the other bound.
    tot = sorted(Path(folder).glob("*.pdos_tot"))
    if tot:
        data = np.loadtxt(tot[0], comments="#", ndmin=2)
        total = float(np.interp(fermi_ev, data[:, 0], data[:, 1]))
        if total > 0:
            out["total_dos_ef"] = round(total, 6)
            out["h_share_of_total_dos"] = round(by_element.get("H", 0.0) / total, 6)
            out["spilling_ef"] = round(1.0 - out["projected_dos_ef"] / total, 6)
    return out
