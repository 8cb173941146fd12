"""Calibrated uncertainty of φ (and φ*, Tc): the ensemble spread turned into an error bar.

The spread of the ensemble members' φ is not an error bar: the members share their training data and
their blind spots, so it is often 10× smaller than the error against DFT. A calibration maps the raw
spread σ_ens (and, for ``error-model``, a few more numbers of the prediction) to σ such that on
structures the model never saw |φ_ML − φ_DFT| ≤ ``TARGET_Z``·σ for a fraction ``TARGET_COVERAGE`` of
them. It is fitted on the validation split only (structure ids hashed by
:func:`~elfscreen.model.train.split_of`), with split-conformal quantiles (the ⌈(n+1)·p⌉-th smallest of n
scores), and stored as plain numbers in the checkpoint's ``meta["calibration"]``.

Methods (all map σ_ens in the units of φ, ELF):

- ``scale``: σ = k·max(σ_ens, ``SIGMA_MIN``); k the conformal quantile of |e| / (z·σ_ens).
- ``additive``: σ = √(a² + (k·σ_ens)²): the shape (a : k) of largest Gaussian likelihood on validation,
  then scaled by the conformal quantile of |e| / (z·√(a² + (k·σ_ens)²)).
- ``error-model``: σ = c·exp(β·x), x = (1, log σ_ens, log elf_std_mean, feature distance) fitted by least
  squares to log |e|, then c the conformal quantile of |e| / (z·exp(β·x)). Measured by ``elfscreen
  evaluate`` for comparison; the pipeline cannot apply it (results do not carry the feature distance).

Outside the training domain (density, shortest H–H, species the training data did not hold) σ is
multiplied by ``OOD_FACTOR`` and the result says so in ``warnings``. The factor is a stated choice,
not a fit: the validation split holds no structure outside the domain.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

TARGET_Z = 2.0
TARGET_COVERAGE = 0.90
OOD_FACTOR = 2.0
DISTANCE_TOLERANCE_A = 1e-6  # a training cell's own shortest contact, computed again, is not "shorter" than itself
SIGMA_MIN = 1e-3  # ELF: the smallest ensemble spread a score is divided by (members that agree exactly)
METHODS = ("scale", "additive", "error-model")
ERROR_MODEL_FEATURES = ("log_phi_std", "log_elf_std_mean", "feature_z_rms_bottleneck")
CALIBRATION_FORMAT = 1


def conformal_quantile(scores: Sequence[float], level: float = TARGET_COVERAGE) -> float:
    """The ⌈(n+1)·level⌉-th smallest score (split-conformal; ``inf`` when n is too small for ``level``)."""
    s = np.sort(np.asarray(scores, dtype=float))
    rank = math.ceil((len(s) + 1) * level)
    return float(s[rank - 1]) if 1 <= rank <= len(s) else math.inf


def _raw(row: dict) -> float:
    std = row.get("phi_std")
    return max(float(std), SIGMA_MIN) if std is not None and np.isfinite(std) else SIGMA_MIN


def _features(row: dict) -> np.ndarray:
    """The error model's inputs of one row: 1, log σ_ens, log elf_std_mean, the bottleneck's feature distance."""
    missing = [k for k in ("elf_std_mean", "feature_z_rms_bottleneck") if row.get(k) is None]
    if missing:
        raise ValueError(f"the error-model calibration needs {', '.join(missing)}; screening results do not carry "
                         "the bottleneck's feature distance, so it is measured in evaluate only")
    return np.array([1.0, math.log(_raw(row)), math.log(max(float(row["elf_std_mean"]), SIGMA_MIN)),
                     float(row["feature_z_rms_bottleneck"])])


def fit(rows: Sequence[dict], method: str = "additive", z: float = TARGET_Z, level: float = TARGET_COVERAGE) -> dict:
    """Fit ``method`` on ``rows`` (each with ``phi_ml``, ``phi_dft``, ``phi_std`` and, for ``error-model``,
    ``elf_std_mean`` and ``feature_z_rms_bottleneck``): the dict stored in ``meta["calibration"]``.
    Rows without φ on either side are left out."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    rows = [r for r in rows if r.get("phi_ml") is not None and r.get("phi_dft") is not None]
    if len(rows) < math.ceil(1 / (1 - level)):
        raise ValueError(f"{len(rows)} validation structures with φ: at least {math.ceil(1 / (1 - level))} are needed "
                         f"for a {level:.0%} conformal quantile")
    err = np.array([abs(r["phi_ml"] - r["phi_dft"]) for r in rows])
    raw = np.array([_raw(r) for r in rows])
    if method == "scale":
        params = {"k": conformal_quantile(err / (z * raw), level)}
    elif method == "additive":
        a, k = _additive_shape(err, raw)
        c = conformal_quantile(err / (z * np.sqrt(a**2 + (k * raw) ** 2)), level)
        params = {"k": c * k, "a": c * a}
    else:
        x = np.stack([_features(r) for r in rows])
        beta, *_ = np.linalg.lstsq(x, np.log(np.maximum(err, 1e-6)), rcond=None)
        base = np.exp(x @ beta)
        params = {"beta": [float(b) for b in beta], "features": list(ERROR_MODEL_FEATURES),
                  "c": conformal_quantile(err / (z * base), level)}
    ids = sorted(str(r.get("id", "")) for r in rows)
    out = {"format": CALIBRATION_FORMAT, "method": method, "params": params, "target": {"z": z, "coverage": level},
           "sigma_min": SIGMA_MIN, "ood_factor": OOD_FACTOR,
           "fitted_on": {"split": "validation", "structures": len(rows), "ids": ids,
                         "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}}
    out["coverage_fit"] = float(np.mean(err <= z * np.array([sigma_phi(out, r) for r in rows])))
    return out


def _additive_shape(err: np.ndarray, raw: np.ndarray) -> tuple[float, float]:
    """(a, k) of the Gaussian error scale √(a² + (k·σ_ens)²) of largest likelihood (a grid over a ∈ 1e-4…0.5,
    k ∈ {0} ∪ 0.1…100, log-spaced); only its shape matters, the conformal factor sets its size."""
    a_grid = np.geomspace(1e-4, 0.5, 80)
    k_grid = np.concatenate([[0.0], np.geomspace(0.1, 100.0, 80)])
    s2 = a_grid[:, None, None] ** 2 + (k_grid[None, :, None] * raw[None, None, :]) ** 2
    nll = (0.5 * np.log(s2) + err[None, None, :] ** 2 / (2 * s2)).mean(-1)
    i, j = np.unravel_index(np.argmin(nll), nll.shape)
    return float(a_grid[i]), float(k_grid[j])


def sigma_phi(calibration: dict, row: dict) -> float:
    """Calibrated σ of φ for one prediction (``row``: ``phi_std`` and the error model's inputs), before any
    out-of-domain widening."""
    p, raw = calibration["params"], _raw(row)
    method = calibration["method"]
    if method == "scale":
        return p["k"] * raw
    if method == "additive":
        return math.sqrt(p["a"] ** 2 + (p["k"] * raw) ** 2)
    if method == "error-model":
        return p["c"] * math.exp(float(np.dot(p["beta"], _features(row))))
    raise ValueError(f"unknown calibration method {method!r}")


def calibrate(uncertainty: dict | None, calibration: dict | None, domain_flags: Sequence[str] = (),
              tc_slopes: dict | None = None, h_dos_std: float | None = None) -> dict | None:
    """The result's ``uncertainty`` with calibrated σ: ``phi_std`` (the error bar: |φ_ML − φ_DFT| ≤ 2σ on
    ≥ 90 % of held-out structures), ``phi_std_raw`` (the ensemble spread), ``phi_star_std`` scaled by the
    same factor, and ``tc_std_k`` = √((∂Tc/∂φ·σφ)² + (∂Tc/∂H_DOS·σ_H_DOS)²) from ``tc_slopes``
    (:func:`~elfscreen.model.tc.tc_sensitivity`) and ``h_dos_std`` (the members' Tc spread scaled by the φ
    factor when no slopes are given). ``domain_flags`` (the structure's out-of-domain warnings) widen the
    σ of φ by ``OOD_FACTOR``. Without a calibration (a checkpoint that has none) the raw spread is kept
    and ``calibrated`` is false; the widening still applies. Pure: the input is not changed."""
    if uncertainty is None:
        return None
    out = dict(uncertainty)
    raw = uncertainty.get("phi_std")
    widen = float((calibration or {}).get("ood_factor", OOD_FACTOR)) if domain_flags else 1.0
    out.update(phi_std_raw=raw, phi_star_std_raw=uncertainty.get("phi_star_std"), tc_std_k_raw=uncertainty.get("tc_std_k"),
               calibrated=bool(calibration))
    if calibration:
        sigma = sigma_phi(calibration, uncertainty)
        out["calibration"] = {"method": calibration["method"], "target": calibration["target"],
                              "fitted_on_structures": calibration["fitted_on"]["structures"]}
    else:
        sigma = raw
    if domain_flags:
        out["out_of_domain"] = list(domain_flags)
        out["widened_by"] = widen
    if sigma is None:
        return out
    # φ* (not calibrated on its own) and, without slopes, Tc: the same factor as φ
    factor = (sigma / _raw(uncertainty) if calibration else 1.0) * widen
    out["phi_std"] = sigma * widen
    if uncertainty.get("phi_star_std") is not None:
        out["phi_star_std"] = (max(uncertainty["phi_star_std"], SIGMA_MIN) if calibration else uncertainty["phi_star_std"]) * factor
    if tc_slopes is not None:
        out["tc_std_k"] = math.hypot(tc_slopes["phi"] * sigma * widen, tc_slopes["h_dos"] * (h_dos_std or 0.0))
    elif uncertainty.get("tc_std_k") is not None:
        out["tc_std_k"] = uncertainty["tc_std_k"] * factor
    return out


def element_pairs(symbols) -> set[str]:
    """The pairs of distinct elements other than H among ``symbols``, as ``"A-B"`` (alphabetical): the
    keys of a training range's ``element_pairs``."""
    others = sorted(set(symbols) - {"H"})
    return {f"{a}-{b}" for i, a in enumerate(others) for b in others[i + 1:]}


def shortest_hh(structure, reach_a: float = 1.5) -> float | None:
    """The shortest H–H distance (Å), periodic images included; None when no two H are within ``reach_a``."""
    h = structure.copy()
    h.remove_species([sp for sp in h.composition.elements if sp.symbol != "H"])
    dist = h.get_neighbor_list(r=reach_a)[3] if len(h) else []
    return float(min(dist)) if len(dist) else None


def shortest_xh(structure, reach_a: float = 3.5) -> dict[str, float]:
    """Each element other than H: its shortest distance (Å) to an H atom, periodic images included (only
    elements with an H within ``reach_a``: an element whose training cells hold no H that close has no
    entry in a training range's ``min_xh_a`` and is never flagged)."""
    symbols = [s.specie.symbol for s in structure]
    centres, points, _, dist = structure.get_neighbor_list(r=reach_a)
    out: dict[str, float] = {}
    for c, p, d in zip(centres, points, dist):
        if symbols[c] != "H" and symbols[p] == "H":
            out[symbols[c]] = min(float(d), out.get(symbols[c], float(d)))
    return out


def domain_flags(structure, meta: dict) -> list[str]:
    """Where ``structure`` lies outside the data the model was trained on (``meta["training_range"]``):
    density (Å³/atom), shortest H–H distance (Å), and, when the range lists them, an element closer to an
    H than in any training structure (``min_xh_a``: a contact no training cell had, such as a misplaced
    Wyckoff origin), elements the training structures did not hold (``species``), an H fraction outside
    theirs (``h_fraction``) and two other elements that never shared a training structure
    (``element_pairs``: a ternary whose metals were only seen apart). One message per finding, each
    ending in the widening."""
    rng = (meta or {}).get("training_range") or {}
    widen = float((meta or {}).get("calibration", {}).get("ood_factor", OOD_FACTOR))
    tail = f"; uncertainties widened ×{widen:g}"
    out = []
    vpa = structure.volume / len(structure)
    lo, hi = rng.get("volume_per_atom_a3", (None, None))
    if lo is not None and not lo <= vpa <= hi:
        out.append(f"density {vpa:.2f} Å³/atom is outside the training range {lo:.2f}–{hi:.2f} Å³/atom{tail}")
    min_hh = rng.get("min_hh_a")
    d_hh = shortest_hh(structure, reach_a=min_hh - DISTANCE_TOLERANCE_A) if min_hh is not None else None
    if d_hh is not None:
        out.append(f"H–H distance {d_hh:.3f} Å is shorter than any in the training data ({min_hh:.3f} Å){tail}")
    min_xh = rng.get("min_xh_a") or {}
    # only a contact shorter than a trained minimum is flagged, so none beyond the largest is looked for
    for element, d in sorted(shortest_xh(structure, reach_a=max(min_xh.values())).items() if min_xh else ()):
        if element in min_xh and d < min_xh[element] - DISTANCE_TOLERANCE_A:
            out.append(f"{element}–H distance {d:.3f} Å is shorter than any in the training data ({min_xh[element]:.3f} Å){tail}")
    trained = rng.get("species")
    new = sorted({s.specie.symbol for s in structure} - set(trained)) if trained else []
    if new:
        out.append(f"element(s) {', '.join(new)} appear in no training structure (trained on "
                   f"{', '.join(trained)}){tail}")
    lo, hi = rng.get("h_fraction", (None, None))
    x_h = structure.composition.get_atomic_fraction("H")
    if lo is not None and not lo - 1e-9 <= x_h <= hi + 1e-9:
        out.append(f"H fraction {x_h:.2f} is outside the training range {lo:.2f}–{hi:.2f}{tail}")
    if "element_pairs" in rng:  # a new element is named above, not again in its pairs
        unseen = sorted(element_pairs({s.specie.symbol for s in structure} - set(new)) - set(rng["element_pairs"]))
        if unseen:
            out.append(f"element pair(s) {', '.join(p.replace('-', '–') for p in unseen)} share no training structure{tail}")
    return out


def coverage(rows: Sequence[dict], calibration: dict | None, z_values: Sequence[float] = (1.0, 2.0)) -> dict:
    """Fraction of ``rows`` with |φ_ML − φ_DFT| ≤ z·σ for each z, with σ the calibrated one (widened where a
    row carries ``domain_flags``) or, without a calibration, the raw ensemble spread. Rows without φ on
    either side are counted in ``without_phi``; ``median_z`` is the median |e|/σ."""
    usable = [r for r in rows if r.get("phi_ml") is not None and r.get("phi_dft") is not None]
    if not usable:
        return {"structures": 0, "without_phi": len(rows)}
    err = np.array([abs(r["phi_ml"] - r["phi_dft"]) for r in usable])
    sig = np.array([row_sigma(r, calibration) for r in usable])
    out = {"structures": len(usable), "without_phi": len(rows) - len(usable),
           "median_sigma": float(np.median(sig)), "median_z": float(np.median(err / sig)), "max_z": float((err / sig).max())}
    for zv in z_values:
        out[f"within_{zv:g}sigma"] = float(np.mean(err <= zv * sig))
    return out


def row_sigma(row: dict, calibration: dict | None) -> float:
    """σφ of an evaluation row (:func:`~elfscreen.model.evaluate.evaluate_entry`) as a screening result
    would carry it: calibrated (or raw without ``calibration``) and widened by the row's ``domain_flags``."""
    spread = {k: row.get(k) for k in ("phi_std", "elf_std_mean", "feature_z_rms_bottleneck")}
    return calibrate(spread, calibration, row.get("domain_flags", ()))["phi_std"] or SIGMA_MIN
