"""Convergence of φ, φ* and H_DOS in k-spacing, cutoff and valence convention for three hydrides.

    python bench/dft_convergence.py [--out bench/results/dft_convergence.jsonl] [--quick]

Systems (not relaxed): H3S Im-3m (a = 3.073 Å, the H3S type), CaH6 Im-3m (sodalite clathrate,
a = 3.52 Å) and YH4 I4/mmm (low H fraction, model/prototypes.py at its 150 GPa volume guess) for k and
cutoff; H3S, MgH6 (Im-3m, 3.30 Å) and PH3 (Im-3m, 2.98 Å) for the valence convention.
Each run is one line of the JSONL file as it finishes; a rerun skips the lines already there. The
valence rows swap a p-block or metal file for its semicore (or valence-only) variant from the shared
PseudoDojo table (``../shared/pseudo``), so they need that folder; the rest needs only QE.
Prints one table: φ, φ*, H_DOS, change against the reference settings (100/400 Ry, 0.3 Å⁻¹), CPU s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pymatgen.core import Lattice, Structure

from elfscreen.model.dft import HYDRIDE_SETTINGS, DftError, elf_of, with_settings
from elfscreen.model.prototypes import PROTOTYPES
from elfscreen.model.topology import analyze

SHARED_TABLE = Path(__file__).resolve().parents[2] / "shared" / "pseudo" / "pseudodojo-nc-sr-0.4-pbe"


def systems() -> dict[str, Structure]:
    def cubic(a: float, el: str, h_site: list[float]) -> Structure:
        return Structure.from_spacegroup("Im-3m", Lattice.cubic(a), [el, "H"], [[0, 0, 0], h_site]).get_primitive_structure()

    return {"H3S": cubic(3.073, "S", [0, 0.5, 0.5]), "CaH6": cubic(3.52, "Ca", [0.25, 0, 0.5]),
            "YH4": PROTOTYPES["MH4-I4/mmm"].build(("Y",), 150.0),
            "MgH6": cubic(3.30, "Mg", [0.25, 0, 0.5]), "PH3": cubic(2.98, "P", [0, 0.5, 0.5])}


def runs(quick: bool) -> list[tuple[str, str, dict, dict]]:
    """(system, label, settings changes, swapped pseudopotential files {table file: replacement})."""
    out = []
    ks = (0.6, 0.3) if quick else (0.6, 0.4, 0.3, 0.2)
    cuts = () if quick else (80.0, 120.0)
    for name in ("H3S", "CaH6", "YH4"):
        out += [(name, f"k={k}", {"kspacing": k}, {}) for k in ks]
        out += [(name, f"ecut={c:.0f}/{4 * c:.0f}", {"ecutwfc": c, "ecutrho": 4 * c}, {}) for c in cuts]
    # valence convention: the table's choice (k=0.3 rows) against the other file of the same element
    out += [("H3S", "S-sp (semicore S)", {}, {"S.upf": "S-sp.upf"}),
            ("MgH6", "k=0.3", {}, {}), ("MgH6", "Mg (no semicore)", {}, {"Mg-sp.upf": "Mg.upf"}),
            ("PH3", "k=0.3", {}, {}), ("PH3", "P-sp (semicore P)", {}, {"P.upf": "P-sp.upf"})]
    # the relaxation's cheaper settings (80/320 Ry, 0.4/Å) against the ELF's own (100/400 Ry, 0.3/Å)
    full = {"relax_ecutwfc": 100.0, "relax_ecutrho": 400.0, "relax_kspacing": 0.3}
    for name, p in (("H3S", 200.0), ("CaH6", 150.0)):
        out += [(name, f"vc-relax {p:.0f} GPa, relax settings", {"relax_gpa": p}, {}),
                (name, f"vc-relax {p:.0f} GPa, ELF settings", {"relax_gpa": p, **full}, {})]
    # cheaper still? the relaxation's k-spacing and SCF threshold, against the relax settings, in one run
    for name, p in (("H3S", 200.0), ("CaH6", 150.0), ("YH4", 150.0)):
        for label, change in (("relax settings", {}), ("relax k=0.5", {"relax_kspacing": 0.5}),
                              ("relax conv_thr 1e-7/atom", {"relax_conv_thr_per_atom": 1e-7}),
                              ("relax k=0.5, conv_thr 1e-7/atom", {"relax_kspacing": 0.5, "relax_conv_thr_per_atom": 1e-7})):
            out.append((name, f"relax cost {p:.0f} GPa: {label}", {"relax_gpa": p, **change}, {}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/dft_convergence.jsonl")
    ap.add_argument("--quick", action="store_true", help="two k-spacings, no cutoff scan")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["system"], r["label"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    structures = systems()
    for name, label, changes, swaps in runs(args.quick):
        if (name, label) in done:
            continue
        relax_gpa = changes.get("relax_gpa")
        settings = with_settings(HYDRIDE_SETTINGS, **{k: v for k, v in changes.items() if k != "relax_gpa"})
        tmp = None
        env_before = os.environ.get("ELFSCREEN_PSEUDO_DIR")
        if swaps:
            if not SHARED_TABLE.is_dir():
                print(f"skip {name} {label}: needs {SHARED_TABLE}", file=sys.stderr)
                continue
            tmp = Path(tempfile.mkdtemp(prefix="elfscreen-pseudo-"))
            for table_file, replacement in swaps.items():
                shutil.copyfile(SHARED_TABLE / replacement, tmp / table_file)
            os.environ["ELFSCREEN_PSEUDO_DIR"] = str(tmp)
        try:
            grid, rec = elf_of(structures[name], settings, relax_pressure_gpa=relax_gpa, name=f"{name} {label}")
            topo = analyze(grid)
            row = {"system": name, "label": label, "changes": changes, "swaps": swaps, "phi": topo.phi,
                   "phi_star": topo.phi_star, "h_dos": rec["h_dos"]["value"], "kmesh": rec["kmesh"],
                   "grid": list(grid.shape), "cpu_s": rec["cpu_s"],
                   "relax_cpu_s": (rec.get("relax") or {}).get("cpu_s"),
                   "ionic_steps": (rec.get("relax") or {}).get("ionic_steps"),
                   "volume_per_atom_a3": round(grid.structure.volume / len(grid.structure), 4)}
        except DftError as exc:
            row = {"system": name, "label": label, "changes": changes, "swaps": swaps, "error": str(exc),
                   "cpu_s": exc.record.get("cpu_s")}
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
                if env_before is None:
                    os.environ.pop("ELFSCREEN_PSEUDO_DIR", None)
                else:
                    os.environ["ELFSCREEN_PSEUDO_DIR"] = env_before
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ref = {r["system"]: r for r in rows if r["label"] == "k=0.3" and "phi" in r}
    print(f"{'system':6s} {'settings':26s} {'k-mesh':10s} {'phi':>7s} {'dphi':>7s} {'phi*':>7s} {'H_DOS':>6s} "
          f"{'dH_DOS':>7s} {'CPU s':>7s}")
    for r in rows:
        if "phi" not in r:
            print(f"{r['system']:6s} {r['label']:26s} failed: {r['error']}")
            continue
        base = ref.get(r["system"])
        dphi = f"{r['phi'] - base['phi']:+.4f}" if base else "-"
        dh = f"{r['h_dos'] - base['h_dos']:+.3f}" if base else "-"
        print(f"{r['system']:6s} {r['label']:26s} {'x'.join(map(str, r['kmesh'])):10s} {r['phi']:7.4f} {dphi:>7s} "
              f"{r['phi_star']:7.4f} {r['h_dos']:6.3f} {dh:>7s} {r['cpu_s']:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
