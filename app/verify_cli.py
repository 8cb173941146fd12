"""``elfscreen verify STRUCTURE…``: DFT verification of structure files (model/verify.py), one JSON line each.

Light to import: the DFT and topology modules load inside :func:`run`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("structures", nargs="+", help="structure files (POSCAR, CIF, …)")
    p.add_argument("--ml-phi", type=float, help="the ML φ to compare against (delta_phi = DFT φ − this)")
    p.add_argument("--grid-dir", help="folder to keep each DFT ELF grid in (NAME.dft.cube)")


def run(args: argparse.Namespace) -> int:
    from elfscreen.model.dft import DftError
    from elfscreen.model.structures import read_structure
    from elfscreen.model.verify import verify
    from elfscreen.model.volumetric import write_grid

    code = 0
    for path in args.structures:
        structure = read_structure(path)
        name = Path(path).name
        try:
            grid, out = verify(structure, args.ml_phi, name=name)
        except DftError as exc:
            print(json.dumps({"name": name, "error": str(exc)}), flush=True)
            code = 1
            continue
        if args.grid_dir:
            Path(args.grid_dir).mkdir(parents=True, exist_ok=True)
            out["dft"]["grid_file"] = str(write_grid(grid, Path(args.grid_dir) / f"{name}.dft.cube"))
        print(json.dumps({"name": name, **out}, ensure_ascii=False), flush=True)
    return code
