"""The shipped models side by side: seconds per screening and φ, on pure-H cells and hydrides.

    OMP_NUM_THREADS=1 ELFSCREEN_THREADS=1 python bench/models.py [--repeat 3] [--models elf-h,elf-mh]

For each cell, each model screens it (``screen_structure`` at the default 0.1 Å spacing, as
``elfscreen screen`` does) ``--repeat`` times, models alternating, after one warm-up screening per model
(compilation and first-call costs are not counted). Prints a Markdown table: wall seconds (best of the
repeats), φ, σφ, and the ratio of each model's time to the first model's. A model that refuses a cell
(elf-h and any element but H) is listed as refused. The cells: the two shipped pure-H examples, a 32-atom
fluid snapshot of ``data/fluid-md`` and two hydrides written from their space groups (H3S Im-3m,
a = 3.073 Å; LaH10 Fm-3m, a = 5.10 Å).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elfscreen.model.dataset import load_entry  # noqa: E402
from elfscreen.model.errors import UnsupportedElementError  # noqa: E402
from elfscreen.model.pipeline import load_model, screen_structure  # noqa: E402
from elfscreen.model.volumetric import read_grid  # noqa: E402


def cells() -> dict[str, Structure]:
    examples = ROOT / "model" / "examples"
    fluid, _ = load_entry(ROOT / "data" / "fluid-md" / "fluid-md-s0-000003.npz")
    return {
        "H2 molecular cubic (example)": read_grid(examples / "h2_molecular_cubic.ELF.cube.gz").structure,
        "H hexagonal (example)": read_grid(examples / "h_hexagonal.ELF.cube.gz").structure,
        "H32 fluid (fluid-md)": fluid,
        "H3S Im-3m": Structure.from_spacegroup("Im-3m", Lattice.cubic(3.073), ["S", "H"], [[0, 0, 0], [0.5, 0, 0]]),
        "LaH10 Fm-3m": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.10), ["La", "H", "H"],
                                                 [[0, 0, 0], [0.25, 0.25, 0.25], [0.38, 0.38, 0.38]]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--models", default="elf-h,elf-mh", help="comma-separated shipped names or checkpoint paths")
    args = p.parse_args()
    names = args.models.split(",")
    models = {n: load_model(n) for n in names}
    rows = []
    for cell, structure in cells().items():
        best: dict[str, float | None] = {}
        result = {}
        for n, model in models.items():  # warm-up, and the refusals
            try:
                result[n] = screen_structure(structure, cell, model)
                best[n] = float("inf")
            except UnsupportedElementError:
                best[n] = None
        for _ in range(args.repeat):
            for n, model in models.items():
                if best[n] is None:
                    continue
                t0 = time.perf_counter()
                screen_structure(structure, cell, model)
                best[n] = min(best[n], time.perf_counter() - t0)
        for n in names:
            if best[n] is None:
                rows.append(f"| {cell} | {len(structure)} | {models[n].model_version} | refused | | | |")
                continue
            r = result[n]
            base = best[names[0]]
            ratio = f"{best[n] / base:.2f}" if base else ""
            rows.append(f"| {cell} | {len(structure)} | {models[n].model_version} | {best[n]:.2f} | "
                        f"{r.phi:.3f} | {r.uncertainty['phi_std']:.3f} | {ratio} |")
    print(f"best of {args.repeat} screenings per cell and model, wall seconds (default spacing)\n")
    print("| cell | atoms | model | s | φ | σφ | ÷ first model |")
    print("|---|---:|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
