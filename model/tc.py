"""Tc estimates from the networking value (Belli et al. 2021; TcESTIME, Novoa et al. 2025).

φ_DOS = φ · H_f · H_DOS^(1/3), with H_f the hydrogen fraction of the atoms and H_DOS the hydrogen
share of the density of states at the Fermi level (1 for pure hydrogen). Tc in K. A negative raw Tc
means "not superconducting" and is reported as 0 K with the raw value kept.
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


@dataclass
class TcEstimate:
    """``value_k`` = max(raw, 0); ``h_dos_assumed`` is true when H_DOS was not given for a compound."""

    model: str
    formula: str
    value_k: float | None
    raw_k: float | None
    phi_dos: float | None
    h_dos: float
    h_dos_assumed: bool
    note: str | None = None


def estimate_tc(phi: float | None, h_fraction: float, h_dos: float | None = None, model: str = "belli2021",
                phi_star: float | None = None) -> TcEstimate:
    """Tc from φ (and φ* for ``sr2``/``sr5``). Without ``h_dos``, pure hydrogen takes the exact 1 and a
    compound the assumed 1, an upper bound since every relation grows with H_DOS."""
    if model not in TC_MODELS:
        raise ValueError(f"unknown Tc model {model!r}; use one of {', '.join(TC_MODELS)}")
    if h_dos is not None and not 0.0 < h_dos <= 1.0:
        raise ValueError(f"H_DOS must lie in (0, 1], got {h_dos}")
    func, formula = TC_MODELS[model]
    assumed = h_dos is None and h_fraction < 1.0
    note = "H_DOS not given: assumed 1, so Tc is an upper bound" if assumed else None
    hd = 1.0 if h_dos is None else float(h_dos)
    if phi is None or (model in NEEDS_PHI_STAR and phi_star is None):
        return TcEstimate(model, formula, None, None, None, hd, assumed, "φ (or φ*) undefined: no Tc")
    raw = float(func(phi, phi_star, h_fraction, hd))
    phi_dos = float(phi * h_fraction * hd ** (1 / 3))
    return TcEstimate(model, formula, max(raw, 0.0), raw, phi_dos, hd, assumed, note)
