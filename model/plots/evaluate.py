"""The figures of ``elfscreen evaluate`` (:mod:`elfscreen.model.evaluate`): ELF parity, error against the
reference ELF, and φ parity."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_plots(rows: list[dict], pooled: list[tuple[np.ndarray, np.ndarray]], out: Path) -> None:
    """``parity.png`` (hexbin of predicted vs DFT ELF over ``pooled`` (predicted, reference) samples),
    ``error_vs_elf.png`` (mean |error| in 20 ELF bins) and ``phi_parity.png`` (φ_ML vs φ_DFT of ``rows``,
    by crystal family) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.concatenate([p for p, _ in pooled])
    ref = np.concatenate([r for _, r in pooled])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.hexbin(ref, pred, gridsize=60, bins="log", extent=(0, 1, 0, 1), cmap="viridis")
    ax.plot([0, 1], [0, 1], "w--", lw=1)
    ax.set(xlabel="ELF (DFT)", ylabel="ELF (predicted)", title="Parity, held-out grid points")
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=120)
    plt.close(fig)

    edges = np.linspace(0, 1, 21)
    which = np.clip(np.digitize(ref, edges) - 1, 0, 19)
    err = np.abs(pred - ref)
    means = [err[which == b].mean() if np.any(which == b) else np.nan for b in range(20)]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar((edges[:-1] + edges[1:]) / 2, means, width=0.045)
    ax.set(xlabel="ELF (DFT)", ylabel="mean |error|", title="Error against the reference ELF")
    fig.tight_layout()
    fig.savefig(out / "error_vs_elf.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for fam in sorted({r["family"] for r in rows}):
        rs = [r for r in rows if r["family"] == fam]
        ax.scatter([r["phi_dft"] for r in rs], [r["phi_ml"] for r in rs], s=14, label=fam)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="φ (DFT)", ylabel="φ (predicted)", xlim=(0, 1), ylim=(0, 1), title="Networking value")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "phi_parity.png", dpi=120)
    plt.close(fig)


def write_reliability(rows: list[dict], calibration: dict | None, path: Path) -> None:
    """Reliability plot of the φ uncertainty: for each nominal Gaussian coverage p, the share of held-out
    structures with |φ_ML − φ_DFT| ≤ z_p·σ (z_p the two-sided normal quantile), for the raw ensemble spread
    and the calibrated σ (all structures, thick; each group, thin); the diagonal is a perfect calibration,
    the marker the promise (≥ 90 % within 2σ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from elfscreen.model.calibration import row_sigma

    usable = [r for r in rows if r.get("phi_ml") is not None and r.get("phi_dft") is not None]
    p = np.linspace(0.01, 0.99, 50)
    zp = norm.ppf(0.5 + p / 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    cases = [("raw spread", None, "tab:red")] + ([("calibrated", calibration, "tab:blue")] if calibration else [])
    for label, cal, colour in cases:
        for group in ["all", *sorted({r.get("group", "all") for r in usable})]:
            rs = [r for r in usable if group == "all" or r.get("group") == group]
            if not rs:
                continue
            err = np.array([abs(r["phi_ml"] - r["phi_dft"]) for r in rs])
            sig = np.array([row_sigma(r, cal) for r in rs])
            frac = (err[None, :] <= zp[:, None] * sig[None, :]).mean(1)
            ax.plot(p, frac, color=colour, lw=2.2 if group == "all" else 0.7, alpha=1 if group == "all" else 0.5,
                    label=f"{label} (all {len(rs)})" if group == "all" else None)
    ax.axvline(norm.cdf(2) - norm.cdf(-2), color="grey", lw=0.6)
    ax.plot([norm.cdf(2) - norm.cdf(-2)], [0.9], "k^", ms=7, label="promise: ≥ 90 % within 2σ")
    ax.set(xlabel="nominal coverage (Gaussian, two-sided)", ylabel="observed share within z·σ", xlim=(0, 1), ylim=(0, 1),
           title="Reliability of σ(φ), held-out structures")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
