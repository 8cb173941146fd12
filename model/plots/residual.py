"""The figures of the residual analysis (:mod:`elfscreen.model.residual`): the paper's Fig. 2 panels A–I,
the corrected-residual map (Fig. S3 style), an overview of all panels, and panels E–F compared across
analyses. Each panel draws from a ``residual.json`` result and the fields :func:`~elfscreen.model.residual.fields_at`
recomputes; matplotlib (Agg) is imported only here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elfscreen.model.residual import AXIS_LABELS, PLATEAU_FRACTION, correction_weight, fields_at

if TYPE_CHECKING:
    from elfscreen.model.volumetric import ElfGrid

FIGURES = {
    "A": "fig2A_reference_elf.png",
    "B": "fig2B_residual.png",
    "C": "fig2C_residual_spectrum_2d.png",
    "D": "fig2D_radial_amplitude.png",
    "E": "fig2E_delta_mae_vs_kmax.png",
    "F": "fig2F_fraction_vs_kmax.png",
    "G": "fig2G_correction_vs_elf.png",
    "H": "fig2H_weight_map_logit.png",
    "I": "fig2I_weight_map_elf.png",
    "S3": "figS3_corrected_residual.png",
    "overview": "fig2_overview.png",
}


def _plane_frame(vectors: np.ndarray) -> np.ndarray:
    """2×2 rows: the two in-plane cell vectors in an in-plane Cartesian frame (x along the first), Å."""
    u, v = np.asarray(vectors, dtype=float)
    e1 = u / np.linalg.norm(u)
    v_perp = v - (v @ e1) * e1
    e2 = v_perp / np.linalg.norm(v_perp)
    return np.array([[np.linalg.norm(u), 0.0], [v @ e1, v @ e2]])


def _mesh(frame: np.ndarray, shape, centres) -> tuple[np.ndarray, np.ndarray]:
    """Corner coordinates (X, Y) of pixels centred on ``centres[a] · frame_row_a``."""
    c0 = np.concatenate([centres[0] - 0.5 * _step(centres[0]), [centres[0][-1] + 0.5 * _step(centres[0])]])
    c1 = np.concatenate([centres[1] - 0.5 * _step(centres[1]), [centres[1][-1] + 0.5 * _step(centres[1])]])
    f0, f1 = np.meshgrid(c0, c1, indexing="ij")
    xy = f0[..., None] * frame[0] + f1[..., None] * frame[1]
    return xy[..., 0], xy[..., 1]


def _step(c):
    return (c[1] - c[0]) if len(c) > 1 else 1.0


def _real_mesh(vectors, shape):
    frame = _plane_frame(vectors)
    return _mesh(frame, shape, [np.arange(n) / n for n in shape])


def _plane_axes(ax, result):
    axis = result["plane"]["axis_index"]
    p, q = [AXIS_LABELS[a] for a in range(3) if a != axis]
    ax.set_xlabel(f"x along {p} (Å)")
    ax.set_ylabel(f"y ⊥ {p}, in the {p}{q} plane (Å)")
    ax.set_aspect("equal")


def _plane_title(result) -> str:
    pl = result["plane"]
    return f"plane {pl['axis']} = {pl['frac']:.3f} (index {pl['index']})"


def _colorbar(fig, mappable, ax, label):
    cb = fig.colorbar(mappable, ax=ax, shrink=0.85)
    cb.set_label(label)
    return cb


def _panel_A(fig, ax, result, f):
    X, Y = _real_mesh(f["vectors"], f["y_ref"].shape)
    m = ax.pcolormesh(X, Y, f["y_ref"], cmap="coolwarm", vmin=0, vmax=1, shading="flat")
    _colorbar(fig, m, ax, "ELF (reference)")
    _plane_axes(ax, result)
    ax.set_title(f"A  Reference ELF, {_plane_title(result)}", fontsize=9)


def _residual_limit(r) -> float:
    hi = float(np.percentile(np.abs(r), 99)) if r.size else 0.0
    return max(0.2, hi)


def _panel_B(fig, ax, result, f, corrected: bool = False):
    r = (f["y_corr"] if corrected else f["y_loc"]) - f["y_ref"]
    lim = _residual_limit(f["y_loc"] - f["y_ref"])
    X, Y = _real_mesh(f["vectors"], r.shape)
    m = ax.pcolormesh(X, Y, r, cmap="bwr", vmin=-lim, vmax=lim, shading="flat")
    _colorbar(fig, m, ax, "ELF predicted − reference")
    _plane_axes(ax, result)
    if corrected:
        ax.set_title(f"S3  Residual after the k_max = {f['k_max']:g} correction\nMAE {np.abs(r).mean():.4f}", fontsize=9)
    else:
        ax.set_title(f"B  Residual (local model − DFT)\nMAE {np.abs(r).mean():.4f}, RMSE {np.sqrt((r**2).mean()):.4f}",
                     fontsize=9)


def _panel_C(fig, ax, result, f):
    from matplotlib.colors import LogNorm

    r = f["y_loc"] - f["y_ref"]
    amp = np.fft.fftshift(np.abs(np.fft.fft2(r)) / r.size)
    freqs = [np.fft.fftshift(np.fft.fftfreq(n, 1.0 / n)) for n in r.shape]
    recip = np.linalg.inv(_plane_frame(f["vectors"])).T  # rows: 2D reciprocal vectors (1/Å, no 2π)
    X, Y = _mesh(recip, r.shape, freqs)
    positive = amp[amp > 0]
    lo = max(float(positive.min()) if positive.size else 1e-12, float(amp.max()) * 1e-6, 1e-300)
    m = ax.pcolormesh(X, Y, np.maximum(amp, lo), cmap="magma", norm=LogNorm(vmin=lo, vmax=max(float(amp.max()), lo * 10)),
                      shading="flat")
    _colorbar(fig, m, ax, "|FFT| / N (ELF units)")
    k_plateau = result["plateau"]["k_max"]
    if k_plateau:
        L = result["k_units"]["L_A"]  # k_cut (1/Å) = k_max / L of the analysed domain
        t = np.linspace(0, 2 * np.pi, 200)
        rad = k_plateau / L
        ax.plot(rad * np.cos(t), rad * np.sin(t), "c--", lw=1, label=f"plateau k_max = {k_plateau:g}")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("k_x (1/Å, |k| = |G|/2π)")
    ax.set_ylabel("k_y (1/Å)")
    ax.set_aspect("equal")
    ax.set_title("C  2D Fourier amplitude of the ELF residual\n(Γ at the centre)", fontsize=9)


def _panel_D(fig, ax, result):
    spec = result["spectrum"]
    L = result["k_units"]["L_A"]
    for key, label, style in (("elf_residual", "ELF residual (ELF units)", "o-"),
                              ("logit_residual", "logit residual (logit units)", "s--")):
        s = spec[key]
        amp = np.array([a if a is not None else np.nan for a in s["amplitude"]], float)
        ok = amp > 0
        ax.semilogy(np.array(s["kappa"])[ok], amp[ok], style, ms=3, lw=1, label=label)
    ax.set_xlabel(f"|k|·L  (L = {L:.2f} Å; k_max units)")
    ax.set_ylabel("radially averaged |FFT| / N")
    sec = ax.secondary_xaxis("top", functions=(lambda x: x / L, lambda x: x * L))
    sec.set_xlabel("|k| (1/Å)", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title("D  Radial amplitude of the residual", fontsize=9)


def _scan(result, key):
    rows = result["per_kmax"]
    return np.array([r["k_max"] for r in rows], float), np.array([np.nan if r[key] is None else r[key] for r in rows], float)


def _panel_E(fig, ax, results: dict):
    for label, res in results.items():
        k, d = _scan(res, "delta_mae")
        line, = ax.plot(k, d, "o-", ms=3, lw=1, label=f"ΔMAE {label}".strip())
        _, dr = _scan(res, "delta_rmse")
        ax.plot(k, dr, "--", lw=0.8, color=line.get_color(), label=f"ΔRMSE {label}".strip())
        kp = res["plateau"]["k_max"]
        if kp is not None:
            ax.axvline(kp, color=line.get_color(), ls=":", lw=1)
            ax.annotate(f"plateau {kp:g}", (kp, res["plateau"]["delta_mae"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("Fourier cutoff k_max (|k|·L)")
    ax.set_ylabel("change of error vs local model (ELF)")
    ax.legend(fontsize=7)
    ax.set_title(f"E  ΔMAE, ΔRMSE vs k_max (plateau: {PLATEAU_FRACTION:.0%} of max gain)", fontsize=9)


def _panel_F(fig, ax, results: dict):
    for label, res in results.items():
        k, fl = _scan(res, "fraction_logit")
        _, fe = _scan(res, "fraction_elf")
        line, = ax.plot(k, 100 * fe, "o-", ms=3, lw=1, label=f"ELF space {label}".strip())
        ax.plot(k, 100 * fl, "s--", ms=3, lw=1, color=line.get_color(), label=f"logit space {label}".strip())
    ax.set_xlabel("Fourier cutoff k_max (|k|·L)")
    ax.set_ylabel("correction / field (%)")
    ax.legend(fontsize=7)
    ax.set_title("F  Size of the correction: Σ|u_lr|/Σ|u_tot|, Σ|Δy|/Σ|y|", fontsize=9)


def _panel_G(fig, ax, result, f):
    w = correction_weight(f["u_lr"], f["u_tot"]).ravel()
    y = f["y_ref"].ravel()
    ok = w > 0
    if ok.sum() > 1 and np.ptp(np.log10(w[ok])) > 0:
        hb = ax.hexbin(y[ok], w[ok], yscale="log", gridsize=40, bins="log", cmap="viridis", extent=None, mincnt=1)
        _colorbar(fig, hb, ax, "points per cell (log)")
    elif ok.any():
        ax.scatter(y[ok], w[ok], s=3)
        ax.set_yscale("log")
    d = result["distribution"]
    edges = np.array(d["elf_bin_edges"])
    mid = 0.5 * (edges[1:] + edges[:-1])
    med = np.array([np.nan if v is None else v for v in d["weight_logit_pct_median"]], float)
    good = med > 0
    if good.any():
        ax.plot(mid[good], med[good], "r.-", lw=1.2, label="median per ELF bin")
        ax.legend(fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("reference ELF")
    ax.set_ylabel("|u_lr| / |u_tot| (%)")
    ax.set_title(f"G  Correction weight vs ELF (k_max = {d['k_max']:g})", fontsize=9)


def _panel_weight(fig, ax, result, f, space: str):
    from matplotlib.colors import LogNorm

    if space == "logit":
        w = correction_weight(f["u_lr"], f["u_tot"])
        title, label = "H  Weight |u_lr|/|u_tot| (logit space)", "|u_lr| / |u_tot| (%)"
    else:
        w = 100.0 * np.abs(f["y_corr"] - f["y_loc"]) / np.maximum(f["y_corr"], 1e-300)
        title, label = "I  Weight |Δy|/y_corr (ELF space)", "|y_corr − y_loc| / y_corr (%)"
    X, Y = _real_mesh(f["vectors"], w.shape)
    m = ax.pcolormesh(X, Y, np.clip(w, 0.1, 25), cmap="inferno", norm=LogNorm(vmin=0.1, vmax=25), shading="flat")
    _colorbar(fig, m, ax, label + ", log scale 0.1–25")
    frame = _plane_frame(f["vectors"])
    n1, n2 = f["y_ref"].shape
    f0, f1 = np.meshgrid(np.arange(n1) / n1, np.arange(n2) / n2, indexing="ij")
    xy = f0[..., None] * frame[0] + f1[..., None] * frame[1]
    if np.ptp(f["y_ref"]) > 0 and f["y_ref"].min() < 0.5 < f["y_ref"].max():
        ax.contour(xy[..., 0], xy[..., 1], f["y_ref"], levels=[0.5], colors="red", linewidths=0.7)
    _plane_axes(ax, result)
    ax.set_title(f"{title}\nk_max = {f['k_max']:g}; red: reference ELF = 0.5", fontsize=9)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figures(result: dict, out_dir: str | Path, reference: ElfGrid, predicted: np.ndarray,
                  overview: bool = True, dpi: int = 110) -> list[Path]:
    """The PNG panels (names in :data:`FIGURES`) of ``result`` into ``out_dir``."""
    plt = _plt()
    out = Path(out_dir)
    f = fields_at(result, reference, predicted)
    one = {"": result}
    draw = {
        "A": lambda fig, ax: _panel_A(fig, ax, result, f),
        "B": lambda fig, ax: _panel_B(fig, ax, result, f),
        "C": lambda fig, ax: _panel_C(fig, ax, result, f),
        "D": lambda fig, ax: _panel_D(fig, ax, result),
        "E": lambda fig, ax: _panel_E(fig, ax, one),
        "F": lambda fig, ax: _panel_F(fig, ax, one),
        "G": lambda fig, ax: _panel_G(fig, ax, result, f),
        "H": lambda fig, ax: _panel_weight(fig, ax, result, f, "logit"),
        "I": lambda fig, ax: _panel_weight(fig, ax, result, f, "elf"),
        "S3": lambda fig, ax: _panel_B(fig, ax, result, f, corrected=True),
    }
    written = []
    for key, paint in draw.items():
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        paint(fig, ax)
        fig.tight_layout()
        path = out / FIGURES[key]
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)
    if overview:
        fig, axes = plt.subplots(3, 3, figsize=(15, 13))
        for ax, key in zip(axes.ravel(), "ABCDEFGHI"):
            draw[key](fig, ax)
        fig.suptitle(f"Residual analysis of {result['reference']} ({result['mode']}, {_plane_title(result)}; "
                     f"baseline MAE {result['baseline']['mae']:.4f})", fontsize=11)
        fig.tight_layout()
        path = out / FIGURES["overview"]
        fig.savefig(path, dpi=max(40, int(dpi * 0.75)))
        plt.close(fig)
        written.append(path)
    return written


def write_comparison(results: dict, out_dir: str | Path, dpi: int = 110) -> list[Path]:
    """Panels E and F overlaid for several analyses, e.g. ``{"76 GPa": r76, "115 GPa": r115, ...}``
    (each a ``residual.json`` loaded as a dict), as the paper's Fig. 2E–F compare pressures."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, paint in (("E", _panel_E), ("F", _panel_F)):
        fig, ax = plt.subplots(figsize=(5.6, 4.4))
        paint(fig, ax, results)
        fig.tight_layout()
        path = out / FIGURES[key].replace("fig2", "compare_fig2")
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)
    return written
