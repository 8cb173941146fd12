"""Adaptive evaluation (model/adaptive.py) against the full 0.05 Å grid: time and φ, φ*, φ_1D, φ_2D per cell.

Per cell, three full screenings with the shipped model (``model.pipeline.screen_structure``, one process,
the thread count of the environment): ``coarse`` (the whole 0.1 Å grid, Fourier refinement: what the
adaptive run starts from, and the default of ``elfscreen screen``), ``adaptive`` (``--adaptive``: the 0.05 Å
answer) and ``fine`` (the whole 0.05 Å grid, Fourier refinement: the reference). Prints a table with the
largest |adaptive − fine| and |coarse − fine| over the four values, and appends each row to ``--out``
(JSON lines) as it finishes.

Cells: crystals of 16 and 20 atoms (data/crystal-test), a 32-atom MD snapshot of the dense fluid
(data/fluid-md) and its 2×1×1 and 2×2×1 supercells of another snapshot (64, 128 atoms), a 35-atom
random fluid mixture (data/fluid), 64 H at random positions (bench/descriptor.py's fluid64) and the
64-atom H block of ``--qe``.

    ELFSCREEN_THREADS=1 nice -n 10 python bench/adaptive.py                 # ~10 min on a loaded 2-core machine
    ELFSCREEN_THREADS=1 python bench/adaptive.py --cells crystal16,fluid32

``--qe``: also the 64-atom H block of bench/verify.py (4×4×4 simple cubic, 1.3 Å) — QE's norm-conserving
ELF at the dataset settings (``model.verify.verify``) against the screening of the same cell, side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from elfscreen.model.dataset import load_entry
from elfscreen.model.pipeline import load_model, screen_structure
from elfscreen.model.threads import configure_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
KEYS = ("phi", "phi_star", "phi_1d", "phi_2d")


def cells() -> dict:
    def entry(path, supercell=None):
        s, _ = load_entry(ROOT / path)
        return s.make_supercell(supercell, in_place=False) if supercell else s

    def fluid64():
        from descriptor import make_cell

        return make_cell("fluid64")

    return {
        "crystal16": lambda: entry("data/crystal-test/crystal-s1-000025.npz"),
        "crystal20": lambda: entry("data/crystal-test/crystal-s1-000000.npz"),
        "fluid32": lambda: entry("data/fluid-md/fluid-md-s0-000003.npz"),
        "fluid35": lambda: entry("data/fluid/" + _first(ROOT / "data/fluid", 35)),
        "fluid64": fluid64,
        "fluid-md64": lambda: entry("data/fluid-md/fluid-md-s0-000010.npz", [2, 1, 1]),
        "fluid-md128": lambda: entry("data/fluid-md/fluid-md-s0-000016.npz", [2, 2, 1]),
        "h-block64": lambda: __import__("verify").h_block(4, 4, 4),
    }


def _first(folder: Path, n_atoms: int) -> str:
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        d = json.loads(line)
        if d["generator"].get("n_atoms") == n_atoms:
            return d["id"] + ".npz"
    raise SystemExit(f"no {n_atoms}-atom cell in {folder}")


def screen(structure, name, model, **options):
    start = time.perf_counter()
    result = screen_structure(structure, name, model, **options)
    return time.perf_counter() - start, result


def run_cell(name: str, structure, model) -> dict:
    t_c, coarse = screen(structure, name, model, spacing_a=0.1)
    t_a, adaptive = screen(structure, name, model, adaptive=True, spacing_a=0.05)
    t_f, fine = screen(structure, name, model, spacing_a=0.05)
    row = {"cell": name, "atoms": len(structure), "fine_shape": fine.grid.shape,
           "time_s": {"coarse": t_c, "adaptive": t_a, "fine": t_f},
           "coarse": {k: getattr(coarse, k) for k in KEYS}, "adaptive": {k: getattr(adaptive, k) for k in KEYS},
           "fine": {k: getattr(fine, k) for k in KEYS}, "adaptive_info": adaptive.provenance.topology["adaptive"]}
    row["max_dev_adaptive"] = max(abs(row["adaptive"][k] - row["fine"][k]) for k in KEYS)
    row["max_dev_coarse"] = max(abs(row["coarse"][k] - row["fine"][k]) for k in KEYS)
    return row


def qe_row(model) -> dict:
    from elfscreen.model.verify import verify

    structure = cells()["h-block64"]()
    t_d, default = screen(structure, "h64", model)
    t_a, adaptive = screen(structure, "h64", model, adaptive=True)
    start = time.perf_counter()
    _, out = verify(structure, name="bench-adaptive-h64")
    t_q = time.perf_counter() - start
    return {"cell": "h-block64", "atoms": 64, "time_s": {"screen_0.1": t_d, "screen_adaptive": t_a, "qe": t_q},
            "ratio": {"screen_0.1": t_q / t_d, "screen_adaptive": t_q / t_a},
            "phi": {"screen_0.1": default.phi, "screen_adaptive": adaptive.phi, "qe": out["dft"]["phi"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=",".join(cells()))
    ap.add_argument("--out", default=str(ROOT / "bench/results/adaptive.jsonl"))
    ap.add_argument("--qe", action="store_true", help="also the 64-atom cell against QE (minutes)")
    args = ap.parse_args()
    configure_threads()  # $ELFSCREEN_THREADS or the cores this process may use, as the CLI does
    model = load_model()
    known = cells()
    out = Path(args.out)
    print("| cell | atoms | fine grid | t coarse 0.1 Å | t adaptive | t fine 0.05 Å | exact share | "
          "φ c/a/f | φ* c/a/f | φ1D c/a/f | φ2D c/a/f | max dev adaptive | max dev coarse |", flush=True)
    print("|" + "---|" * 13, flush=True)
    for name in filter(None, args.cells.split(",")):
        row = run_cell(name, known[name](), model)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        t = row["time_s"]
        vals = " | ".join("/".join(f"{row[m][k]:.4f}" for m in ("coarse", "adaptive", "fine")) for k in KEYS)
        print(f"| {name} | {row['atoms']} | {'×'.join(map(str, row['fine_shape']))} | {t['coarse']:.1f} | "
              f"{t['adaptive']:.1f} | {t['fine']:.1f} | {row['adaptive_info']['exact_share']:.3f} | {vals} | "
              f"{row['max_dev_adaptive']:.4f} | {row['max_dev_coarse']:.4f} |", flush=True)
    if args.qe:
        row = qe_row(model)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        t, r, p = row["time_s"], row["ratio"], row["phi"]
        print(f"\n64-atom H block: QE {t['qe']:.1f} s (φ {p['qe']:.4f}); screen 0.1 Å {t['screen_0.1']:.1f} s "
              f"(×{r['screen_0.1']:.0f}, φ {p['screen_0.1']:.4f}); screen --adaptive {t['screen_adaptive']:.1f} s "
              f"(×{r['screen_adaptive']:.0f}, φ {p['screen_adaptive']:.4f})", flush=True)


if __name__ == "__main__":
    main()
