"""What the cell's orientation costs pw.x: the hydride dataset's ELF run (SCF + ELF + H_DOS, no relaxation)
of primitive prototype cells, with the cell put as before 0.9.1 (a along x, b in the xy plane) and as
``model.dft.standard_orientation`` puts it now (its symmetry operations among those pw.x tries), side by side.

Per cell: symmetry operations and irreducible k-points pw.x found, QE CPU seconds, the largest ELF
difference between the two grids (same fractional grid: the rotation leaves it unchanged), φ of each
(``model.topology.analyze``) and H_DOS. Cells: H3S (Im-3m), CaH6 (Im-3m sodalite), YH4 (I4/mmm),
LaH10 (Fm-3m), as ``model.prototypes`` builds them at 200 GPa (unrelaxed).

    OMP_NUM_THREADS=1 python bench/dft_symmetry.py [--cells H3S,CaH6] [--ecutwfc 100]
"""
from __future__ import annotations

import argparse

import numpy as np
from pymatgen.core import Lattice, Structure

from elfscreen.model import dft
from elfscreen.model.prototypes import PROTOTYPES
from elfscreen.model.topology import analyze

CELLS = {"H3S": ("H3X-Im-3m", ("S",)), "CaH6": ("MH6-Im-3m", ("Ca",)), "YH4": ("MH4-I4/mmm", ("Y",)),
         "LaH10": ("MH10-Fm-3m", ("La",))}


def a_along_x(structure: Structure, symprec: float = 1e-3) -> Structure:
    """The orientation before 0.9.1: a along x, b in the xy plane."""
    lat = Lattice.from_parameters(*structure.lattice.abc, *structure.lattice.angles)
    return Structure(lat, structure.species, structure.frac_coords)


def run(structure: Structure, settings: dft.DftSettings, orientation) -> tuple:
    kept = dft.standard_orientation
    dft.standard_orientation = orientation  # elf_of orients the cell through this module attribute
    try:
        grid, record = dft.elf_of(structure, settings, name="bench")
    finally:
        dft.standard_orientation = kept
    return grid, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--ecutwfc", type=float, default=dft.HYDRIDE_SETTINGS.ecutwfc,
                    help="Ry (density cutoff 4×); the dataset's 100 by default")
    args = ap.parse_args()
    settings = dft.with_settings(dft.HYDRIDE_SETTINGS, ecutwfc=args.ecutwfc, ecutrho=4 * args.ecutwfc)
    print(f"# hydride dataset ELF settings, ecutwfc {settings.ecutwfc} Ry, k-spacing {settings.kspacing} Å⁻¹; "
          "QE CPU s of pw.x + pp.x + projwfc.x\n")
    print("| cell | atoms | ops before → now | k-points before → now | CPU s before | CPU s now | × | "
          "max |ΔELF| | φ before | φ now | H_DOS before | H_DOS now |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in args.cells.split(","):
        name, sub = CELLS[key]
        s = PROTOTYPES[name].build(sub, 200.0)
        rows = [run(s, settings, f) for f in (a_along_x, dft.standard_orientation)]
        (g0, r0), (g1, r1) = rows
        diff = float(np.abs(g0.values - g1.values).max()) if g0.values.shape == g1.values.shape else float("nan")
        phis = [analyze(g).phi for g, _ in rows]
        print(f"| {key} | {len(s)} | {r0['scf']['symmetry_ops']} → {r1['scf']['symmetry_ops']} | "
              f"{r0['scf']['n_kpoints_irreducible']} → {r1['scf']['n_kpoints_irreducible']} | {r0['cpu_s']:.0f} | "
              f"{r1['cpu_s']:.0f} | {r0['cpu_s'] / r1['cpu_s']:.1f} | {diff:.1e} | {phis[0]:.4f} | {phis[1]:.4f} | "
              f"{r0['h_dos']['value']:.4f} | {r1['h_dos']['value']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
