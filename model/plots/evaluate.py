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
