"""Wall time of one DFT verification (model/verify.py) at the default dataset settings, per cell.

Cells: 8-, 16-, 32-atom metallic H crystals (2×2×2, 2×2×4, 2×4×4 simple-cubic blocks, 1.3 Å spacing,
one atom displaced) and H3S Im-3m (a = 3.073 Å). One process, the thread count of the environment
(run with OMP_NUM_THREADS=1 for one pw.x per core). Prints a table; `--cells 8,16` picks a subset.

    OMP_NUM_THREADS=1 nice -n 10 python bench/verify.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from pymatgen.core import Lattice, Structure

from elfscreen.model.verify import verify


def h_block(n1: int, n2: int, n3: int, spacing: float = 1.3) -> Structure:
    frac = np.array([[i / n1, j / n2, k / n3] for i in range(n1) for j in range(n2) for k in range(n3)], dtype=float)
    frac[0] += 0.04 / max(n1, n2, n3)
    return Structure(Lattice.orthorhombic(n1 * spacing, n2 * spacing, n3 * spacing), ["H"] * len(frac), frac)


def cells() -> dict[str, Structure]:
    h3s = Structure.from_spacegroup("Im-3m", Lattice.cubic(3.073), ["S", "H"], [[0, 0, 0], [0.5, 0, 0]])
    return {"8": h_block(2, 2, 2), "16": h_block(2, 2, 4), "32": h_block(2, 4, 4), "H3S": h3s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="8,16,32,H3S")
    args = ap.parse_args()
    print(f"{'cell':>5} {'atoms':>5} {'settings':>10} {'wall_s':>8} {'cpu_s':>8} {'phi':>7} {'h_dos':>6}", flush=True)
    for key in args.cells.split(","):
        s = cells()[key]
        t = time.monotonic()
        try:
            _, out = verify(s, name=f"bench-{key}")
        except Exception as exc:  # report and go on with the next cell
            print(f"{key:>5} {len(s):>5} failed after {time.monotonic() - t:.0f} s: {exc}", flush=True)
            continue
        d = out["dft"]
        print(f"{key:>5} {len(s):>5} {d['settings']['name']:>10} {time.monotonic() - t:8.1f} {d['cpu_seconds']:8.1f} "
              f"{d['phi']:7.3f} {d['h_dos']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
