"""Residual analysis of a predicted ELF against a DFT reference: the logit-space band-limited Fourier
correction of the paper (its Eqs. 6–9 and Fig. 2), as pure functions plus a report writer
(``residual.json``; the figures are drawn by :mod:`elfscreen.model.plots.residual`, the command is
``elfscreen analyze residual`` in :mod:`elfscreen.app.cli`).

Conventions (used by every function here and in ``residual.json``):

* **Grid.** ``values[i, j, k]`` sits at fractional ``(i/N1, j/N2, k/N3)`` (see :mod:`elfscreen.model.volumetric`);
  the grid is complete and periodic, with no repeated boundary plane.
* **Residual.** Always *predicted − reference*, in ELF space ``y_loc − y_ref`` and in logit space
  ``logit(y_loc) − logit(y_ref)`` with ``logit(y) = ln[y/(1−y)]`` of ``y`` clipped to ``[ε, 1−ε]``.
  The default ``ε = 1e-4`` (:data:`DEFAULT_EPS`) bounds logits to ±9.21, far beyond the ELF range of
  interest (0.01–0.99 ↔ ±4.6) but finite where an ELF of exactly 0 or 1 is written.
* **Correction.** ``u_lr`` is the least-squares fit of the logit target ``u_ref − u_loc`` by
  ``Σ_{|k|<k_cut} a_k cos 2πk·r + b_k sin 2πk·r`` (paper Eq. 7, strict ``<``: a shell lying exactly at
  ``k_cut`` is left out). ``u_tot = u_loc + u_lr`` and the corrected ELF is ``1/(1+e^−u_tot)`` (Eq. 9).
  Errors of the corrected field are measured against the *unclipped* reference ELF.
* **Wave vectors.** ``k = h b1 + k b2 + l b3`` with integer ``(h, k, l)`` and ``b_i`` the reciprocal
  vectors *without* 2π (``b_i·a_j = δ_ij``), so ``|k| = |G|/(2π)`` in 1/Å. On a 2D slice the two
  in-plane lattice vectors define a 2D cell and ``b1, b2`` are its own 2D reciprocal vectors (in the
  plane). In both cases ``|k|² = mᵀ (A Aᵀ)⁻¹ m`` with ``A`` the rows of the cell vectors (Å) and ``m``
  the integer indices: the reciprocal metric of the actual cell, not an integer norm.
* **k_max (dimensionless).** The paper's cutoffs (plateaus at k_max ≈ 20/24/27 on a 192² slice of an
  ≈11 Å, apparently cubic, 500-atom cell) cannot be in 1/Å (the grid's Nyquist limit is ≈ 8.7 Å⁻¹); they are wave
  numbers in cycles per cell. We define ``k_max = |k| · L`` with ``L = V^{1/3}`` in 3D and
  ``L = √(area)`` of the in-plane cell on a slice, i.e. ``k_cut = k_max / L`` in 1/Å. For a cubic (or
  square-slice) cell of side ``a``, ``L = a`` and ``k_max`` is exactly the integer norm
  ``√(h²+k²+l²)`` the paper's numbers imply; for any other cell it stays a true length in
  reciprocal space. ``k_max = 0`` is the uncorrected baseline; on a cubic cell ``k_max = 1`` keeps only the mean.
  k_max scales with the cell; compare cells of different size through ``k_cut = k_max/L`` (1/Å).
* **Aliasing.** On a grid of ``N`` points per axis only ``|h| ≤ N/2`` is resolvable; for even ``N``
  the Nyquist bin ``h = N/2`` and ``h = −N/2`` are the same function on the grid, so that bin counts
  as inside the cutoff when either representative is (``|k|`` of a bin is the smaller one). This
  keeps the kept set symmetric under ``k → −k`` and makes the FFT low-pass exactly the least-squares
  fit on the complete grid (the modes are orthogonal there).
* **Plateau.** With gain ``g(k_max) = −ΔMAE(k_max)``, the plateau k_max is the smallest scanned
  ``k_max`` with ``g ≥ 0.95 · max g`` (:data:`PLATEAU_FRACTION`); ``None`` when no cutoff lowers the MAE.
* **Fraction of the field.** ``Σ|u_lr| / Σ|u_tot|`` (logit space) and ``Σ|y_corr − y_loc| / Σ|y_corr|``
  (ELF space), L1 ratios over the analysed points; L2 (RMS) ratios are reported beside them. The
  pointwise weight ``|u_lr|/|u_tot|`` (in %) is what the paper's Fig. 2G–I show.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elfscreen.model import __version__
from elfscreen.model.errors import GridError, InputError

if TYPE_CHECKING:  # only for annotations: keeps `import model.residual` (and the CLI parser) light
    from elfscreen.model.volumetric import ElfGrid

DEFAULT_EPS = 1e-4
PLATEAU_FRACTION = 0.95
DEFAULT_KMAX_SCAN = (0, 40)
ELF_BINS = 20
SCHEMA = "elfscreen.residual/1"
AXIS_NAMES = {"x": 0, "y": 1, "z": 2, "a": 0, "b": 1, "c": 2}
AXIS_LABELS = ("a", "b", "c")  # lattice vector of each grid axis
_TOL = 1e-9  # k_max units: a shell at |k|·L = k_max ± 1e-9 counts as on the cutoff (excluded)



# --------------------------------------------------------------------------------------------------
# logit space


def logit(y, eps: float = DEFAULT_EPS) -> np.ndarray:
    """``ln[y/(1−y)]`` of ``y`` clipped to ``[eps, 1−eps]`` (dimensionless)."""
    _check_eps(eps)
    y = np.clip(np.asarray(y, dtype=float), eps, 1.0 - eps)
    return np.log(y) - np.log1p(-y)


def inv_logit(u) -> np.ndarray:
    """The logistic function ``1/(1+e^−u)``, numerically stable for any real ``u``."""
    u = np.asarray(u, dtype=float)
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def residuals(reference, predicted, eps: float = DEFAULT_EPS) -> dict:
    """Predicted − reference in ELF space (``"elf"``) and in clipped logit space (``"logit"``)."""
    ref = np.asarray(reference, dtype=float)
    pred = np.asarray(predicted, dtype=float)
    return {"elf": pred - ref, "logit": logit(pred, eps) - logit(ref, eps)}


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise InputError("--plateau-fraction", f"must lie in (0, 1], got {fraction}")


def _check_eps(eps: float) -> None:
    if not 0 < eps < 0.5:
        raise InputError("--eps", f"the logit clipping ε must lie in (0, 0.5), got {eps}")


# --------------------------------------------------------------------------------------------------
# wave vectors in the reciprocal metric of the cell


def cell_vectors(lattice: np.ndarray, mode: str = "volume", slice_axis: int = 2) -> np.ndarray:
    """Rows of the cell vectors (Å) that span the analysed grid: all three for ``volume``, the two
    in-plane ones (in increasing axis order) for a ``slice`` normal to axis ``slice_axis``."""
    lattice = np.asarray(lattice, dtype=float)
    if mode == "volume":
        return lattice
    return lattice[[a for a in range(3) if a != slice_axis]]


def reference_length(vectors: np.ndarray) -> float:
    """``L`` of the dimensionless k_max (Å): ``V^{1/3}`` for three vectors, ``√area`` for two."""
    vectors = np.asarray(vectors, dtype=float)
    measure = math.sqrt(abs(np.linalg.det(vectors @ vectors.T)))
    return measure ** (1.0 / len(vectors))


def _axis_freqs(n: int, half: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequencies of the FFT bins along an axis and their Nyquist-flipped aliases."""
    m = np.arange(n // 2 + 1) if half else np.fft.fftfreq(n, 1.0 / n).round().astype(int)
    alias = m.copy()
    if n % 2 == 0:
        alias[np.abs(m) == n // 2] *= -1
    return m.astype(float), alias.astype(float)


def k_magnitude(shape: Sequence[int], vectors: np.ndarray, half: bool = False) -> np.ndarray:
    """``|k|`` (1/Å, no 2π) of every FFT bin of a grid of ``shape`` on the cell ``vectors`` (d×3 rows).

    Layout of ``np.fft.fftn`` (``half=False``) or ``np.fft.rfftn`` (``half=True``: last axis holds
    ``0 … N/2``). A Nyquist bin takes the smaller ``|k|`` of its two representatives ``±N/2``.
    """
    shape = tuple(int(n) for n in shape)
    vectors = np.asarray(vectors, dtype=float)
    if vectors.shape[0] != len(shape):
        raise ValueError(f"{len(shape)}-dimensional grid needs {len(shape)} cell vectors, got {vectors.shape[0]}")
    metric = np.linalg.inv(vectors @ vectors.T)
    d = len(shape)
    per_axis = [_axis_freqs(n, half and a == d - 1) for a, n in enumerate(shape)]
    best = None
    for choice in np.ndindex(*([2] * d)):
        ms = []
        for a, c in enumerate(choice):
            m = per_axis[a][c]
            ms.append(m.reshape([-1 if b == a else 1 for b in range(d)]))
        q = sum(metric[a, b] * ms[a] * ms[b] for a in range(d) for b in range(d))
        best = q if best is None else np.minimum(best, q)
    return np.sqrt(np.maximum(best, 0.0))


def k_index(shape: Sequence[int], vectors: np.ndarray, half: bool = False) -> np.ndarray:
    """Dimensionless ``|k|·L`` of every FFT bin (the unit of ``k_max``; see the module docstring)."""
    return k_magnitude(shape, vectors, half) * reference_length(vectors)


def _half_weights(shape: Sequence[int]) -> np.ndarray:
    """How many full-spectrum bins each ``rfftn`` bin stands for (1 on self-conjugate planes, else 2)."""
    n = int(shape[-1])
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w


def band_limited_fit(field: np.ndarray, vectors: np.ndarray, k_max: float, kappa: np.ndarray | None = None) -> np.ndarray:
    """Least-squares fit of ``field`` (2D or 3D periodic grid) by cos/sin modes with ``|k|·L < k_max``.

    On a complete periodic grid this is the FFT low-pass: keep the bins with ``|k|·L < k_max`` and
    transform back. ``kappa`` (``k_index(field.shape, vectors, half=True)``) may be passed to reuse it.
    Returns an array of ``field``'s shape and units.
    """
    field = np.asarray(field, dtype=float)
    if kappa is None:
        kappa = k_index(field.shape, vectors, half=True)
    spectrum = np.fft.rfftn(field)
    keep = kappa < k_max - _TOL
    if not keep.any():
        return np.zeros_like(field)
    return np.fft.irfftn(spectrum * keep, s=field.shape, axes=tuple(range(field.ndim)))


def n_basis(kappa_half: np.ndarray, shape: Sequence[int], k_max: float) -> int:
    """Number of real basis functions (cos and sin counted separately) below ``k_max``."""
    return round(float((_half_weights(shape) * (kappa_half < k_max - _TOL)).sum()))


def radial_spectrum(field: np.ndarray, vectors: np.ndarray) -> dict:
    """Radially averaged Fourier amplitude of ``field``.

    Amplitude per bin is ``|F_k| / N_points`` (a mode ``A cos 2πk·r`` shows ``A/2`` at ``±k``),
    averaged over shells ``round(|k|·L) = s`` of unit width in k_max units. Returns the shell index
    ``kappa``, ``k_inv_A = kappa/L``, ``amplitude`` and bin ``count`` (empty shells dropped).
    """
    field = np.asarray(field, dtype=float)
    kappa = k_index(field.shape, vectors, half=True)
    amp = np.abs(np.fft.rfftn(field)) / field.size
    w = np.broadcast_to(_half_weights(field.shape), amp.shape)
    shell = np.rint(kappa).astype(int).ravel()
    count = np.bincount(shell, weights=w.ravel())
    total = np.bincount(shell, weights=(w * amp).ravel())
    keep = count > 0
    s = np.flatnonzero(keep)
    L = reference_length(vectors)
    return {"kappa": s.tolist(), "k_inv_A": (s / L).tolist(), "amplitude": (total[keep] / count[keep]).tolist(),
            "count": count[keep].astype(int).tolist()}


# --------------------------------------------------------------------------------------------------
# the analysis


def kmax_values(scan) -> list[float]:
    """k_max values of a scan: ``"A:B"`` or ``"A:B:S"`` (inclusive, step S, default 1), ``"a,b,c"``,
    a tuple ``(A, B)``/``(A, B, S)`` (inclusive range) or a list of values. Sorted, unique, ≥ 0."""
    try:
        if isinstance(scan, str):
            text = scan.strip()
            if ":" in text:
                scan = tuple(float(t) for t in text.split(":"))
            else:
                scan = [float(t) for t in text.split(",") if t.strip()]
        if isinstance(scan, tuple):
            if len(scan) not in (2, 3):
                raise ValueError("a range needs start:stop or start:stop:step")
            start, stop = float(scan[0]), float(scan[1])
            step = float(scan[2]) if len(scan) == 3 else 1.0
            if step <= 0 or stop < start:
                raise ValueError("needs start ≤ stop and a positive step")
            n = math.floor((stop - start) / step + 1e-9) + 1
            values = [start + i * step for i in range(n)]
        else:
            values = [float(v) for v in scan]
    except (TypeError, ValueError) as exc:
        raise InputError("--kmax-scan", f"cannot read the k_max scan {scan!r} ({exc}); write e.g. 0:40 or 0,10,20") from None
    values = sorted({_tidy(v) for v in values})
    if not values or values[0] < 0 or len(values) > 2000:
        raise InputError("--kmax-scan", f"needs 1–2000 k_max values ≥ 0, got {len(values)} starting at {values[:1]}")
    return values


def _tidy(v: float):
    v = float(v)
    return int(v) if v.is_integer() else v


def _domain(reference: ElfGrid, predicted, mode: str, slice_axis: int, slice_index: int):
    """(y_ref, y_loc, vectors) of the analysed domain, and the plane shown in the figures."""
    if mode not in ("slice", "volume"):
        raise InputError("mode", f"must be 'slice' or 'volume', got {mode!r}")
    pred = np.asarray(predicted, dtype=float)
    ref = np.asarray(reference.values, dtype=float)
    if pred.shape != ref.shape:
        raise GridError(reference.name, f"the prediction's grid {pred.shape} is not the reference grid {ref.shape}")
    if not np.isfinite(pred).all():
        raise GridError(reference.name, "the prediction holds NaN or infinite values")
    if slice_axis not in (0, 1, 2):
        raise InputError("--slice", f"slice axis must be 0, 1 or 2, got {slice_axis}")
    n = ref.shape[slice_axis]
    if not -n <= slice_index < n:
        raise InputError("--slice", f"plane index {slice_index} is outside the grid's {n} planes along {AXIS_LABELS[slice_axis]}")
    slice_index %= n
    lattice = reference.structure.lattice.matrix
    vectors = cell_vectors(lattice, mode, slice_axis)
    if mode == "slice":
        ref, pred = np.take(ref, slice_index, slice_axis), np.take(pred, slice_index, slice_axis)
    return ref, pred, vectors, slice_index


def _correction(y_loc, u_loc, spectrum, kappa, k_max, shape):
    """u_lr, u_tot and the corrected ELF for one k_max, from the rfft ``spectrum`` of the logit target."""
    keep = kappa < k_max - _TOL
    if not keep.any():  # no mode kept: no correction, the local prediction itself (exactly)
        return np.zeros(shape), u_loc, y_loc
    u_lr = np.fft.irfftn(spectrum * keep, s=shape, axes=tuple(range(len(shape))))
    u_tot = u_loc + u_lr
    return u_lr, u_tot, inv_logit(u_tot)


def _ratio(num, den):
    den = float(np.sum(den))
    return float(np.sum(num) / den) if den > 0 else None


def analyze_residual(reference: ElfGrid, predicted: np.ndarray, kmax_values: Iterable[float] = range(41),
                     mode: str = "slice", slice_axis: int = 2, slice_index: int = 0, eps: float = DEFAULT_EPS,
                     plateau_fraction: float = PLATEAU_FRACTION, elf_bins: int = ELF_BINS) -> dict:
    """The residual analysis of ``predicted`` (array of ``reference``'s grid shape) against ``reference``.

    ``mode="slice"``: the 2D lattice plane ``slice_index`` normal to grid axis ``slice_axis`` (0, 1, 2 =
    a, b, c), analysed as a 2D periodic grid in its own 2D reciprocal metric (as the paper);
    ``mode="volume"``: the whole 3D grid. Returns a JSON-serialisable dict (see ``docs/REPRODUCTION.md``):
    baseline errors, one ``per_kmax`` entry per k_max, the plateau, the radial residual spectra and the
    binned distribution of the correction against the reference ELF (at the plateau k_max, else the
    largest scanned).
    """
    _check_eps(eps)
    _check_fraction(plateau_fraction)
    ks = _validated(kmax_values)
    y_ref, y_loc, vectors, slice_index = _domain(reference, predicted, mode, slice_axis, slice_index)
    shape = y_ref.shape
    L = reference_length(vectors)
    u_ref, u_loc = logit(y_ref, eps), logit(y_loc, eps)
    target = u_ref - u_loc
    spectrum = np.fft.rfftn(target)
    kappa = k_index(shape, vectors, half=True)
    kappa_max = float(kappa.max())

    err0 = y_loc - y_ref
    mae0, rmse0 = float(np.abs(err0).mean()), float(np.sqrt((err0**2).mean()))
    baseline = {"mae": mae0, "rmse": rmse0, "mae_logit": float(np.abs(target).mean()),
                "rmse_logit": float(np.sqrt((target**2).mean())), "bias": float(err0.mean()),
                "n_points": int(y_ref.size)}
    rows = []
    for k in ks:
        u_lr, u_tot, y_corr = _correction(y_loc, u_loc, spectrum, kappa, k, shape)
        err = y_corr - y_ref
        mae, rmse = float(np.abs(err).mean()), float(np.sqrt((err**2).mean()))
        dy = y_corr - y_loc
        rows.append({
            "k_max": k, "k_cut_inv_A": k / L, "n_basis": n_basis(kappa, shape, k),
            "mae": mae, "rmse": rmse, "delta_mae": mae - mae0, "delta_rmse": rmse - rmse0,
            "mae_logit": float(np.abs(u_tot - u_ref).mean()), "rmse_logit": float(np.sqrt(((u_tot - u_ref) ** 2).mean())),
            "fraction_logit": _ratio(np.abs(u_lr), np.abs(u_tot)),
            "fraction_elf": _ratio(np.abs(dy), np.abs(y_corr)),
            "fraction_logit_rms": _sqrt(_ratio(u_lr**2, u_tot**2)),
            "fraction_elf_rms": _sqrt(_ratio(dy**2, y_corr**2)),
        })
    plateau = plateau_of(rows, plateau_fraction)
    k_dist = plateau["k_max"] if plateau["k_max"] is not None else ks[-1]
    u_lr, u_tot, y_corr = _correction(y_loc, u_loc, spectrum, kappa, k_dist, shape)
    axis_name = AXIS_LABELS[slice_axis]
    result = {
        "schema": SCHEMA,
        "elfscreen_version": __version__,
        "reference": reference.name,
        "grid": list(reference.shape),
        "mode": mode,
        "plane": {"axis": axis_name, "axis_index": slice_axis, "index": slice_index,
                  "frac": slice_index / reference.shape[slice_axis],
                  "role": "analysed slice" if mode == "slice" else "plane shown in the figures (the fit is 3D)"},
        "domain_shape": list(shape),
        "cell_vectors_A": np.asarray(vectors).tolist(),
        "k_units": {"k_max": "dimensionless |k|·L (cycles per L); |k| = |G|/2π in the cell's reciprocal metric",
                    "L_A": L, "L_definition": "V^(1/3)" if mode == "volume" else "sqrt(in-plane cell area)",
                    "k_cut_inv_A": "k_max / L", "largest_kmax_on_grid": kappa_max,
                    "cutoff": "strict |k|·L < k_max (paper Eq. 7)"},
        "eps": eps,
        "clipped_points": {"reference": int(((y_ref < eps) | (y_ref > 1 - eps)).sum()),
                           "predicted": int(((y_loc < eps) | (y_loc > 1 - eps)).sum())},
        "baseline": baseline,
        "per_kmax": rows,
        "plateau": plateau,
        "spectrum": {"elf_residual": radial_spectrum(err0, vectors),
                     "logit_residual": radial_spectrum(u_loc - u_ref, vectors)},
        "distribution": distribution_vs_elf(y_ref, y_loc, u_lr, u_tot, y_corr, k_dist, elf_bins),
    }
    return json_ready(result)


def _validated(values) -> list:
    if isinstance(values, (str, tuple)):
        return kmax_values(values)
    return kmax_values(list(values))


def _sqrt(x):
    return None if x is None else math.sqrt(x)


def plateau_of(rows: Sequence[dict], fraction: float = PLATEAU_FRACTION) -> dict:
    """The smallest scanned k_max whose gain −ΔMAE reaches ``fraction`` of the largest gain."""
    _check_fraction(fraction)
    gains = [-r["delta_mae"] for r in rows]
    best = max(gains, default=0.0)
    out = {"criterion": f"smallest scanned k_max with -ΔMAE ≥ {fraction:g} × max(-ΔMAE)", "fraction": fraction,
           "k_max": None, "delta_mae": None, "delta_rmse": None, "mae": None, "rmse": None,
           "fraction_logit": None, "fraction_elf": None, "max_gain": best,
           "k_max_of_max_gain": rows[int(np.argmax(gains))]["k_max"] if rows else None}
    if best <= 0:
        return out
    for r, g in zip(rows, gains):
        if g >= fraction * best:
            out.update({key: r[key] for key in ("k_max", "delta_mae", "delta_rmse", "mae", "rmse",
                                                 "fraction_logit", "fraction_elf")})
            break
    return out


def distribution_vs_elf(y_ref, y_loc, u_lr, u_tot, y_corr, k_max, bins: int = ELF_BINS) -> dict:
    """Binned (reference ELF, ``bins`` equal bins on [0, 1]) size of the correction at ``k_max``.

    Per bin: ``count``; ``mean_abs_u_lr`` (logit units); ``weight_logit_pct`` = median and mean of
    ``100·|u_lr|/|u_tot|`` (the paper's u_r/u_tot of Fig. 2G; it grows where u_tot → 0, i.e. ELF → ½);
    ``mean_abs_delta_elf`` = mean ``|y_corr − y_loc|``; ``weight_elf_pct`` = mean ``100·|y_corr − y_loc|/y_corr``;
    ``mae_baseline`` and ``mae_corrected``. Empty bins hold ``None``.
    """
    y_ref = np.ravel(y_ref)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(y_ref, edges) - 1, 0, bins - 1)
    w_logit = correction_weight(u_lr, u_tot).ravel()
    dy = np.abs(np.ravel(y_corr) - np.ravel(y_loc))
    w_elf = 100.0 * dy / np.maximum(np.ravel(y_corr), 1e-300)
    cols = {k: [] for k in ("count", "mean_abs_u_lr", "weight_logit_pct_median", "weight_logit_pct_mean",
                            "mean_abs_delta_elf", "weight_elf_pct_mean", "mae_baseline", "mae_corrected")}
    e0 = np.abs(np.ravel(y_loc) - y_ref)
    e1 = np.abs(np.ravel(y_corr) - y_ref)
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        cols["count"].append(n)
        stats = (np.abs(np.ravel(u_lr))[sel].mean(), np.median(w_logit[sel]), w_logit[sel].mean(), dy[sel].mean(),
                 w_elf[sel].mean(), e0[sel].mean(), e1[sel].mean()) if n else (None,) * 7
        for key, v in zip(list(cols)[1:], stats):
            cols[key].append(None if v is None else float(v))
    return {"k_max": k_max, "elf_bin_edges": edges.tolist(), **cols}


def correction_weight(u_lr, u_tot) -> np.ndarray:
    """Pointwise ``100·|u_lr|/|u_tot|`` (%); capped at 1e6 % where ``u_tot`` vanishes."""
    return np.minimum(100.0 * np.abs(u_lr) / np.maximum(np.abs(u_tot), 1e-300), 1e6)


def json_ready(obj):
    """Replace NaN/inf by None and numpy scalars by Python ones, so ``json.dumps(allow_nan=False)`` works."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# --------------------------------------------------------------------------------------------------
# report: residual.json and the figures


def fields_at(result: dict, reference: ElfGrid, predicted: np.ndarray, k_max: float | None = None) -> dict:
    """The arrays behind the figures for ``result``'s domain, on the shown plane: reference and
    predicted ELF, residuals, ``u_lr``, ``u_tot``, corrected ELF at ``k_max`` (default: the
    distribution's k_max), and the cell vectors of that plane."""
    mode, axis, index, eps = result["mode"], result["plane"]["axis_index"], result["plane"]["index"], result["eps"]
    k_max = result["distribution"]["k_max"] if k_max is None else k_max
    y_ref, y_loc, vectors, index = _domain(reference, predicted, mode, axis, index)
    u_ref, u_loc = logit(y_ref, eps), logit(y_loc, eps)
    kappa = k_index(y_ref.shape, vectors, half=True)
    u_lr, u_tot, y_corr = _correction(y_loc, u_loc, np.fft.rfftn(u_ref - u_loc), kappa, k_max, y_ref.shape)
    out = {"y_ref": y_ref, "y_loc": y_loc, "u_lr": u_lr, "u_tot": u_tot, "y_corr": y_corr}
    if mode == "volume":
        out = {k: np.take(v, index, axis) for k, v in out.items()}
        vectors = cell_vectors(reference.structure.lattice.matrix, "slice", axis)
    out["vectors"] = vectors
    out["k_max"] = k_max
    return out


def write_report(result: dict, out_dir: str | Path, reference: ElfGrid, predicted: np.ndarray,
                 figures: bool = True, overview: bool = True, dpi: int = 110) -> list[Path]:
    """Write ``out_dir/residual.json`` and (``figures``) the PNG panels of the paper's Fig. 2 (A–I),
    the corrected-residual map (Fig. S3 style) and, with ``overview``, all panels in one PNG
    (:func:`elfscreen.model.plots.residual.write_figures`). Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "residual.json"
    path.write_text(json.dumps(json_ready(result), indent=2, allow_nan=False))
    written = [path]
    if figures:
        from elfscreen.model.plots.residual import write_figures  # matplotlib only when figures are asked for

        written += write_figures(result, out, reference, predicted, overview=overview, dpi=dpi)
    return written


# --------------------------------------------------------------------------------------------------
# the command


def parse_slice(text: str | tuple | None) -> tuple[int, float]:
    """``"z=0.0"`` (axis x|y|z or a|b|c = lattice vector 1|2|3, fractional position along it in
    [0, 1)) or a tuple ``("z", 0.0)`` → (grid axis, fractional position)."""
    if text is None:
        return 2, 0.0
    try:
        if isinstance(text, str):
            name, value = text.split("=", 1)
        else:
            name, value = text
        axis = AXIS_NAMES[str(name).strip().lower()]
        frac = float(value)
    except (ValueError, KeyError, TypeError):
        raise InputError("--slice", f"cannot read {text!r}; write AXIS=FRAC, e.g. z=0.0 (AXIS: x, y, z or a, b, c; "
                         "FRAC: fractional position along that lattice vector)") from None
    if not 0.0 <= frac <= 1.0:
        raise InputError("--slice", f"the fractional position must lie in [0, 1], got {frac}")
    return axis, frac


def run(reference_path, model_path=None, slice=None, volume: bool = False, kmax_scan=DEFAULT_KMAX_SCAN,
        out_dir="residual", *, prediction_path=None, fmt: str | None = None, rescale_qe: bool = False,
        device: str | None = None, eps: float = DEFAULT_EPS, plateau_fraction: float = PLATEAU_FRACTION,
        figures: bool = True, model=None) -> dict:
    """Read the reference (cube or ELFCAR), predict on exactly its grid, analyse, write the report.

    ``slice``: ``None`` (plane z = 0), ``"z=0.25"`` or ``("z", 0.25)``; the plane is the grid plane
    nearest that fractional position. ``volume=True`` fits the whole 3D grid (the plane is then only
    shown). ``kmax_scan``: see :func:`kmax_values`. ``prediction_path``: a predicted ELF grid file on
    the same grid, used instead of running a model; ``model``: an :class:`~elfscreen.model.network.ElfModel`
    already loaded. Returns a summary dict (baseline, plateau, written files).
    """
    from elfscreen.model.volumetric import read_grid

    ks = kmax_values(kmax_scan)
    axis, frac = parse_slice(slice)
    _check_eps(eps)
    _check_fraction(plateau_fraction)
    if prediction_path is None and model is None:  # fail before reading a large grid
        from elfscreen.model.pipeline import load_model

        model = load_model(model_path, device)
    reference = read_grid(reference_path, fmt, rescale_qe=rescale_qe)
    index = math.floor(frac * reference.shape[axis] + 0.5) % reference.shape[axis]  # nearest plane, ties up
    if prediction_path is not None:
        pred_grid = read_grid(prediction_path)
        if pred_grid.shape != reference.shape:
            raise GridError(pred_grid.name, f"its grid {pred_grid.shape} is not the reference grid {reference.shape}")
        diff = np.abs(pred_grid.structure.lattice.matrix - reference.structure.lattice.matrix).max()
        if diff > 1e-3:
            raise GridError(pred_grid.name, f"its cell differs from the reference cell by up to {diff:.3g} Å")
        predicted = pred_grid.values
        source = {"prediction": str(prediction_path)}
    else:
        from elfscreen.model.pipeline import check_model_species
        from elfscreen.model.predict import predict_grid

        check_model_species(reference.structure, model, reference.name)
        pred = predict_grid(reference.structure, model, shape=reference.shape, device=device, name=reference.name)
        predicted = pred.grid.values
        source = {"model": str(model_path) if model_path else "default", "model_version": model.model_version,
                  "members": len(model.members), "device": pred.device}
    result = analyze_residual(reference, predicted, ks, mode="volume" if volume else "slice", slice_axis=axis,
                              slice_index=index, eps=eps, plateau_fraction=plateau_fraction)
    result["source"] = source
    written = write_report(result, out_dir, reference, predicted, figures=figures)
    return {"out": str(out_dir), "files": [str(p) for p in written], "reference": reference.name,
            "mode": result["mode"], "plane": result["plane"], "baseline": result["baseline"],
            "plateau": result["plateau"], "source": source}
