"""The paper's Fig. 2 numbers on our fluid data: residual analysis of every snapshot, grouped by pressure.

    python bench/residual_fluid.py --data data/fluid-md [--model CKPT] [--out residual-fluid] [--kmax-scan 0:20:0.5]

For every snapshot of a ``fluid-md`` dataset (``elfscreen dataset generate --kind fluid-md``) it runs
``model.residual.run`` twice, on the plane z = 0 (as the paper) and on the whole 3D grid, and prints a
table per nominal pressure (mean ± standard deviation over the snapshots): baseline MAE/RMSE of the
local model, the plateau k_max and its cutoff in 1/Å, ΔMAE and the corrected MAE/RMSE at the plateau,
the size of the correction in ELF and logit space, the share of Fourier modes the fit keeps, and the
same at the paper's 76 GPa cutoff in 1/Å (1.8 Å⁻¹: small cells hold few modes below it). Writes ``OUT/summary.json``, the full analysis
of every snapshot (``OUT/<id>/slice|volume/residual.json``, figures for the first snapshot of each
pressure) and the pressures overlaid (``OUT/compare/``: the paper's Fig. 2E–F, with the scan curves
averaged over each pressure's snapshots). The numbers in docs/REPRODUCTION.md come from this script.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from elfscreen.model.dataset import read_manifest
from elfscreen.model.pipeline import load_model
from elfscreen.model.plots.residual import write_comparison
from elfscreen.model.residual import plateau_of, run

QUANTITIES = {  # summary key → (where in residual.json, label)
    "baseline_mae": (("baseline", "mae"), "baseline MAE"),
    "baseline_rmse": (("baseline", "rmse"), "baseline RMSE"),
    "plateau_k_max": (("plateau", "k_max"), "plateau k_max"),
    "plateau_k_cut_inv_A": (None, "plateau k_cut (1/Å)"),
    "plateau_delta_mae": (("plateau", "delta_mae"), "ΔMAE at plateau"),
    "plateau_mae": (("plateau", "mae"), "corrected MAE"),
    "plateau_rmse": (("plateau", "rmse"), "corrected RMSE"),
    "plateau_fraction_elf": (("plateau", "fraction_elf"), "correction, ELF space (%)"),
    "plateau_fraction_logit": (("plateau", "fraction_logit"), "correction, logit space (%)"),
    "plateau_modes_share": (None, "modes kept at plateau (% of analysed points)"),
    "at_kcut_mae": (None, "MAE at the paper's k_cut"),
    "at_kcut_fraction_elf": (None, "correction at the paper's k_cut, ELF space (%)"),
    "at_kcut_modes_share": (None, "modes kept at the paper's k_cut (%)"),
}
PAPER_KCUT_INV_A = 1.8  # the paper's 76 GPa plateau, k_max ≈ 20 on its ≈ 11 Å cell (docs/REPRODUCTION.md)


def _row(result: dict, k_max) -> dict | None:
    return next((r for r in result["per_kmax"] if r["k_max"] == k_max), None)


def _at_kcut(result: dict) -> dict:
    """The scan row with the largest cutoff not above the paper's 76 GPa plateau (1/Å)."""
    rows = [r for r in result["per_kmax"] if r["k_cut_inv_A"] <= PAPER_KCUT_INV_A + 1e-9]
    return max(rows, key=lambda r: r["k_cut_inv_A"])


def _value(result: dict, key: str):
    path, _ = QUANTITIES[key]
    n_points = result["baseline"]["n_points"]
    if key == "plateau_k_cut_inv_A":  # k_cut = k_max / L of the analysed domain
        k = result["plateau"]["k_max"]
        return None if k is None else k / result["k_units"]["L_A"]
    if key == "plateau_modes_share":
        row = _row(result, result["plateau"]["k_max"])
        return None if row is None else 100.0 * row["n_basis"] / n_points
    if key.startswith("at_kcut"):
        row = _at_kcut(result)
        return {"at_kcut_mae": row["mae"], "at_kcut_fraction_elf": 100.0 * row["fraction_elf"],
                "at_kcut_modes_share": 100.0 * row["n_basis"] / n_points}[key]
    value = result[path[0]][path[1]]
    return 100.0 * value if key.startswith("plateau_fraction") and value is not None else value


def _mean_curve(results: list[dict]) -> dict:
    """One pseudo-result whose scan is the mean of the snapshots' scans (for the overlaid figures)."""
    rows = []
    for i, row in enumerate(results[0]["per_kmax"]):
        rows.append({"k_max": row["k_max"], **{q: float(np.mean([r["per_kmax"][i][q] for r in results]))
                                               for q in ("delta_mae", "delta_rmse", "mae", "rmse",
                                                         "fraction_logit", "fraction_elf")}})
    return {"per_kmax": rows, "plateau": plateau_of(rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="fluid-md dataset folders")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--out", default="residual-fluid")
    p.add_argument("--kmax-scan", default="0:20:0.5")
    args = p.parse_args(argv)
    model = load_model(args.model)
    out = Path(args.out)
    by_pressure: dict[float, dict[str, list[dict]]] = {}
    for folder in args.data:
        for e in sorted(read_manifest(folder), key=lambda e: e["index"]):
            pressure = e["generator"].get("pressure_nominal_gpa")
            if pressure is None:
                continue
            group = by_pressure.setdefault(pressure, {"slice": [], "volume": [], "ids": [], "md_pressure": []})
            first = not group["ids"]
            for mode in ("slice", "volume"):
                run(Path(folder) / e["file"], model=model, slice="z=0.0", volume=mode == "volume",
                    kmax_scan=args.kmax_scan, out_dir=out / e["id"] / mode, figures=first and mode == "slice")
                group[mode].append(json.loads((out / e["id"] / mode / "residual.json").read_text()))
            group["ids"].append(e["id"])
            group["md_pressure"].append(e["generator_result"].get("trajectory_mean_pressure_gpa"))
            print(f"{e['id']}: {pressure:g} GPa done", file=sys.stderr, flush=True)
    summary = {"model_version": model.model_version, "kmax_scan": args.kmax_scan, "pressures": {}}
    for pressure, g in sorted(by_pressure.items()):
        entry = {"snapshots": g["ids"], "md_mean_static_pressure_gpa": g["md_pressure"][0],
                 "grid_shape": g["slice"][0]["grid"]}
        for mode in ("slice", "volume"):
            entry[mode] = {}
            for key in QUANTITIES:
                vals = [v for v in (_value(r, key) for r in g[mode]) if v is not None]
                entry[mode][key] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals)), "n": len(vals)} if vals else None
        summary["pressures"][f"{pressure:g}"] = entry
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for mode in ("slice", "volume"):
        write_comparison({f"{p:g} GPa": _mean_curve(g[mode]) for p, g in sorted(by_pressure.items())},
                         out / "compare" / mode)
    pressures = list(summary["pressures"])
    for mode in ("slice", "volume"):
        print(f"\n{mode} (mean ± sd over snapshots), model {model.model_version}")
        print("| quantity | " + " | ".join(f"{p} GPa" for p in pressures) + " |")
        print("|---|" + "---:|" * len(pressures))
        for key, (_, label) in QUANTITIES.items():
            cells = []
            for p_ in pressures:
                s = summary["pressures"][p_][mode][key]
                cells.append("—" if s is None else f"{s['mean']:.4g} ± {s['sd']:.2g} (n={s['n']})")
            print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
