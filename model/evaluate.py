"""Evaluating an ELF model against DFT grids: per-structure errors, φ_ML vs φ_DFT, the paper's plots.

For each structure the ELF is predicted on exactly its DFT grid; the report gives MAE, RMSE, identity
R² and correlated R² (squared Pearson r, as the paper's Fig. 3) over every grid point, and φ, φ* from
the predicted grid next to those from the DFT grid, grouped by crystal family.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from elfscreen.model.network import ElfModel
from elfscreen.model.predict import predict_grid
from elfscreen.model.topology import analyze
from elfscreen.model.train import Entry, point_metrics


def crystal_family(entry: Entry) -> str:
    """The crystal system (pymatgen, symprec 0.1 Å) of a crystal entry; ``fluid`` for fluid snapshots."""
    if str(entry.meta.get("kind", "")).startswith("fluid"):
        return "fluid"
    try:
        return SpacegroupAnalyzer(entry.structure, symprec=0.1).get_crystal_system()
    except Exception:
        return "unknown"


def evaluate_entry(model: ElfModel, entry: Entry, device: str | None = None) -> tuple[dict, np.ndarray]:
    """Metrics of one structure (pointwise errors over the whole DFT grid, φ/φ* ML vs DFT) and the
    predicted ELF on that grid."""
    pred = predict_grid(entry.structure, model, shape=entry.grid.shape, device=device, name=entry.id)
    metrics = point_metrics(pred.grid.values.ravel(), entry.grid.values.ravel())
    ml, dft = analyze(pred.grid), analyze(entry.grid)
    row = {"id": entry.id, "family": crystal_family(entry), "kind": entry.meta.get("kind"), **metrics,
           "phi_ml": ml.phi, "phi_dft": dft.phi, "phi_star_ml": ml.phi_star, "phi_star_dft": dft.phi_star,
           "elf_spread_mean": float(pred.spread.mean())}
    return row, pred.grid.values


def summarise(rows: Sequence[dict]) -> dict:
    """φ MAE, bias (ML − DFT) and R², median identity and correlated R², mean MAE and RMSE: overall and
    per crystal family (fluid snapshots form their own group)."""
    def block(rs):
        phi_ml = np.array([r["phi_ml"] for r in rs], float)
        phi_dft = np.array([r["phi_dft"] for r in rs], float)
        out = {"structures": len(rs), "elf_mae_mean": float(np.mean([r["mae"] for r in rs])),
               "elf_rmse_mean": float(np.mean([r["rmse"] for r in rs])),
               "elf_r2_identity_median": float(np.median([r["r2_identity"] for r in rs])),
               "elf_r2_correlated_median": float(np.median([r["r2_correlated"] for r in rs])),
               "phi_mae": float(np.abs(phi_ml - phi_dft).mean()), "phi_bias": float((phi_ml - phi_dft).mean())}
        if len(rs) > 1 and phi_dft.std() > 0:
            out["phi_r2"] = float(1 - ((phi_ml - phi_dft) ** 2).sum() / ((phi_dft - phi_dft.mean()) ** 2).sum())
        return out

    families = sorted({r["family"] for r in rows})
    return {"all": block(rows), **{f: block([r for r in rows if r["family"] == f]) for f in families}} if rows else {}


def evaluate(model: ElfModel, entries: Sequence[Entry], out_dir: str | Path, device: str | None = None,
             progress=None) -> dict:
    """Evaluate on ``entries``; write ``report.json``, ``report.md`` (:func:`markdown`) and the plots
    (PNG) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, pooled = [], []
    rng = np.random.default_rng(0)
    for n, e in enumerate(entries):
        row, pred = evaluate_entry(model, e, device)
        rows.append(row)
        pred = pred.ravel()
        pick = rng.choice(pred.size, min(pred.size, 20000), replace=False)
        pooled.append((pred[pick], e.grid.values.ravel()[pick]))
        if progress:
            progress(n + 1, len(entries), e.id)
    report = {"model_version": model.model_version, "summary": summarise(rows), "structures": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    if rows:
        from elfscreen.model.plots.evaluate import write_plots  # matplotlib only here

        write_plots(rows, pooled, out)
    return report


def markdown(report: dict, worst: int = 5) -> str:
    """The report as Markdown: one row per group (all, then each family) and the largest φ errors."""
    def num(block, key, fmt):
        return format(block[key], fmt) if block.get(key) is not None else "—"

    lines = [f"Model `{report['model_version']}`, {len(report['structures'])} structures (whole DFT grids).", "",
             "| group | structures | ELF MAE (mean) | ELF RMSE (mean) | identity R² (median) | correlated R² (median) "
             "| φ MAE | φ bias | φ R² |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group, b in report["summary"].items():
        lines.append(f"| {group} | {b['structures']} | {num(b, 'elf_mae_mean', '.4f')} | {num(b, 'elf_rmse_mean', '.4f')} "
                     f"| {num(b, 'elf_r2_identity_median', '.3f')} | {num(b, 'elf_r2_correlated_median', '.3f')} "
                     f"| {num(b, 'phi_mae', '.3f')} | {num(b, 'phi_bias', '+.3f')} | {num(b, 'phi_r2', '.2f')} |")
    rows = sorted(report["structures"], key=lambda r: -abs(r["phi_ml"] - r["phi_dft"]))[:worst]
    if rows:
        lines += ["", "Largest φ errors:"]
        lines += [f"- `{r['id']}` ({r['family']}): φ_ML {r['phi_ml']:.3f} vs φ_DFT {r['phi_dft']:.3f}, "
                  f"identity R² {r['r2_identity']:.3f}" for r in rows]
    return "\n".join(lines) + "\n"
