"""Tc estimates from the networking value (Belli et al. 2021; TcESTIME, Novoa et al. 2025).

φ_DOS = φ · H_f · H_DOS^(1/3), with H_f the hydrogen fraction of the atoms and H_DOS the hydrogen
share of the density of states at the Fermi level (1 for pure hydrogen). Tc in K. A negative raw Tc
means "not superconducting" and is reported as 0 K with the raw value kept.

H_DOS comes from one of four sources (``HDosEstimate.source``): ``user`` (given with the input),
``model`` (predicted from the geometry by :mod:`elfscreen.model.hdos_model`, with its σ), ``definition``
(pure hydrogen: exactly 1) or ``assumed`` (a compound with neither: 1, so Tc is an upper bound).
"""
from __future__ import annotations

from dataclasses import dataclass


def _belli2021(phi, phi_star, h_f, h_dos):
    return 750.0 * phi * h_f * h_dos ** (1 / 3) - 85.0


def _leastsq(phi, phi_star, h_f, h_dos):
    return 456.34 * phi * h_f * h_dos ** (1 / 3) - 9.46


def _sr4(phi, phi_star, h_f, h_dos):
    return 574.7 * phi * (h_dos * h_f**3) ** 0.5


def _sr2(phi, phi_star, h_f, h_dos):
    return 442.3 * (1.0 - (phi_star - phi)) * h_f**3 * h_dos**0.5


def _sr5(phi, phi_star, h_f, h_dos):
    return 422.2 * (27 / 4) * (phi_star**2 - phi_star**3) * h_f**3 * (phi * h_dos) ** (1 / 3) + 5.5


TC_MODELS = {
    "belli2021": (_belli2021, "Tc = 750·φ_DOS − 85 K (Belli et al., Nat. Commun. 12, 5381, 2021)"),
    "leastsq": (_leastsq, "Tc = 456.34·φ_DOS − 9.46 K (TcESTIME least squares)"),
    "sr4": (_sr4, "Tc = 574.7·φ·(H_DOS·H_f³)^½ (TcESTIME SR4)"),
    "sr2": (_sr2, "Tc = 442.3·(1 − (φ* − φ))·H_f³·H_DOS^½ (TcESTIME SR2)"),
    "sr5": (_sr5, "Tc = 422.2·(27/4)(φ*² − φ*³)·H_f³·(φ·H_DOS)^⅓ + 5.5 K (TcESTIME SR5)"),
}
NEEDS_PHI_STAR = {"sr2", "sr5"}


@dataclass(frozen=True)
class HDosEstimate:
    """An H_DOS with its origin: ``value`` in (0, 1], ``std`` (σ; None when unknown), ``source`` (``user``,
    ``model``, ``definition`` or ``assumed``) and, for ``model``, a note when the structure lies outside
    the H_DOS model's training domain."""

    value: float
    std: float | None
    source: str
    note: str | None = None


@dataclass
class TcEstimate:
    """``value_k`` = max(raw, 0); ``h_dos_assumed`` is true when H_DOS was neither given nor predicted for
    a compound (``h_dos_source`` ``assumed``)."""

    model: str
    formula: str
    value_k: float | None
    raw_k: float | None
    phi_dos: float | None
    h_dos: float
    h_dos_assumed: bool
    note: str | None = None
    h_dos_std: float | None = None
    h_dos_source: str = "definition"


def _h_dos(h_dos: float | HDosEstimate | None, h_fraction: float) -> HDosEstimate:
    if isinstance(h_dos, HDosEstimate):
        est = h_dos
    elif h_dos is not None:
        est = HDosEstimate(float(h_dos), None, "user")
    elif h_fraction < 1.0:
        est = HDosEstimate(1.0, None, "assumed", "H_DOS not given: assumed 1, so Tc is an upper bound")
    else:
        est = HDosEstimate(1.0, 0.0, "definition")
    if not 0.0 < est.value <= 1.0:
        raise ValueError(f"H_DOS must lie in (0, 1], got {est.value}")
    return est


def estimate_tc(phi: float | None, h_fraction: float, h_dos: float | HDosEstimate | None = None,
                model: str = "belli2021", phi_star: float | None = None) -> TcEstimate:
    """Tc from φ (and φ* for ``sr2``/``sr5``). ``h_dos``: a number (the user's), an :class:`HDosEstimate`
    (e.g. predicted) or None: then pure hydrogen takes the exact 1 and a compound the assumed 1, an
    upper bound since every relation grows with H_DOS."""
    if model not in TC_MODELS:
        raise ValueError(f"unknown Tc model {model!r}; use one of {', '.join(TC_MODELS)}")
    est = _h_dos(h_dos, h_fraction)
    func, formula = TC_MODELS[model]
    assumed, hd = est.source == "assumed", est.value
    extra = {"h_dos_std": est.std, "h_dos_source": est.source}
    if phi is None or (model in NEEDS_PHI_STAR and phi_star is None):
        return TcEstimate(model, formula, None, None, None, hd, assumed, "φ (or φ*) undefined: no Tc", **extra)
    raw = float(func(phi, phi_star, h_fraction, hd))
    phi_dos = float(phi * h_fraction * hd ** (1 / 3))
    return TcEstimate(model, formula, max(raw, 0.0), raw, phi_dos, hd, assumed, est.note, **extra)


def tc_sensitivity(phi: float | None, h_fraction: float, h_dos: float | HDosEstimate | None = None,
                   model: str = "belli2021", phi_star: float | None = None, step: float = 1e-4) -> dict[str, float] | None:
    """∂Tc_raw/∂φ and ∂Tc_raw/∂H_DOS (K per unit) by central differences, for propagating σ of φ and of
    H_DOS into σ of Tc; None when Tc is undefined."""
    est = _h_dos(h_dos, h_fraction)
    if phi is None or (model in NEEDS_PHI_STAR and phi_star is None):
        return None
    func = TC_MODELS[model][0]
    hd = est.value
    h_lo, h_hi = max(hd - step, step), min(hd + step, 1.0)
    return {"phi": float((func(phi + step, phi_star, h_fraction, hd) - func(phi - step, phi_star, h_fraction, hd)) / (2 * step)),
            "h_dos": float((func(phi, phi_star, h_fraction, h_hi) - func(phi, phi_star, h_fraction, h_lo)) / (h_hi - h_lo))}
