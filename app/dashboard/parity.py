"""The parity plot's data: every DFT-verified job as a point (ML φ, DFT φ, the model's σφ) and how far the
model is from DFT on them — its real-world error on the structures users actually screened."""
from __future__ import annotations

import numpy as np

from elfscreen.app.store import merged_result
from elfscreen.model.calibration import coverage


def parity_point(row: dict, base: str) -> dict:
    """One verified job (a :func:`~elfscreen.app.dashboard.queries.verified_rows` row) as a point: φ, φ* and Tc
    of the model and of DFT, ``phi_std`` the σφ the screening reported (calibrated, ``result.uncertainty``),
    the model version, the DFT settings name and the structure page's permalink."""
    r = merged_result(row)
    dft = r["dft"]
    return {"id": row["id"], "batch_id": row["batch_id"], "name": row["name"],
            "reduced_formula": r.get("reduced_formula"), "spacegroup": r.get("spacegroup"),
            "model_version": (r.get("provenance") or {}).get("model_version"),
            "dft_settings": (dft.get("settings") or {}).get("name"),
            "phi_ml": r.get("phi"), "phi_dft": dft.get("phi"), "phi_std": (r.get("uncertainty") or {}).get("phi_std"),
            "phi_star_ml": r.get("phi_star"), "phi_star_dft": dft.get("phi_star"),
            "tc_ml_k": (r.get("tc") or {}).get("value_k"), "tc_dft_k": (dft.get("tc") or {}).get("value_k"),
            "delta_phi": r.get("delta_phi"), "permalink": f"{base}/ui/screenings/{row['id']}"}


def parity_summary(points: list[dict]) -> dict:
    """Over the points with φ on both sides: count, φ MAE, RMSE and bias (ML − DFT); over those that also carry
    σφ, the share with |φ_ML − φ_DFT| ≤ 1σ and ≤ 2σ and the median σ (:func:`elfscreen.model.calibration.coverage`;
    the calibration's target is ≥ 90 % within 2σ); and the model versions the points come from."""
    both = [p for p in points if p["phi_ml"] is not None and p["phi_dft"] is not None]
    out: dict = {"structures": len(both), "without_phi": len(points) - len(both),
                 "model_versions": sorted({str(p["model_version"]) for p in points})}
    if both:
        err = np.array([p["phi_ml"] - p["phi_dft"] for p in both])
        out.update(phi_mae=float(np.abs(err).mean()), phi_rmse=float(np.sqrt((err**2).mean())),
                   phi_bias=float(err.mean()))
    with_sigma = [p for p in both if p["phi_std"] is not None]
    if with_sigma:
        cov = coverage(with_sigma, None)
        out["coverage"] = {k: cov[k] for k in ("structures", "within_1sigma", "within_2sigma", "median_sigma")}
    return out
