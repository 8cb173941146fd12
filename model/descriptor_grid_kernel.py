"""The numba kernels of the full-grid descriptor on the CPU (:mod:`elfscreen.model.descriptor_grid` says
what they compute; its torch path does the same on other devices and is tested against these).

All arrays are point-major: the coefficients of one grid point are one contiguous row (``rows`` real
values in the order (basis channel, n, lm)), so every kernel writes contiguous memory per point or per
reciprocal vector. Two real rows 2q and 2q + 1 are packed as the real and imaginary part of one complex
field, so one complex FFT gives both; the spectra are built from the half-space of reciprocal vectors
(F(−G) = conj F(G) for a real field) and written to both G and −G.
Compiled once per machine (``cache=True``, the per-user cache as for the sweep kernel).
"""
from __future__ import annotations

import os

from elfscreen.model import cache_root

os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))

import numba as nb  # noqa: E402 - after NUMBA_CACHE_DIR
import numpy as np  # noqa: E402

if nb.config.CACHE_DIR != os.environ["NUMBA_CACHE_DIR"]:  # numba was imported before us: re-read it
    nb.core.config.reload_config()


@nb.njit(cache=True, nogil=True, inline="always")
def _harmonics(ux, uy, uz, mono_exp, mono_w, out):
    """out[lm] = Σ_k mono_w[k, lm]·ux^a uy^b uz^c (exponents mono_exp[k]): the real harmonics of a unit vector
    (``model.descriptor._harmonics_from_monomials``); the zero vector gives l = 0 only."""
    out[:] = 0.0
    for k in range(mono_exp.shape[0]):
        v = ux ** mono_exp[k, 0] * uy ** mono_exp[k, 1] * uz ** mono_exp[k, 2]
        for lm in range(out.shape[0]):
            out[lm] += mono_w[k, lm] * v


@nb.njit(cache=True, nogil=True)
def fold_spectra(s_half, reach, recip, shape, table, table_step, cuts, l_of, phase, mono_exp, mono_w,
                 n_basis, out):
    """Add to ``out`` (n_points, rows_padded // 2) complex64 the folded spectra of the packed real rows.

    s_half (b1, b2, b3, n_basis) complex: S_k(G) for h = (0 … reach0, −reach1 … reach1, −reach2 … reach2);
    recip (3, 3): G = h @ recip (Å⁻¹); table (n_G, l_max + 1, n_radial): H_nl at |G| = i·table_step;
    cuts (n_radial): |G| kept per radial function; l_of, phase (n_lm): l and 4π i^l / V per harmonic.
    Row (k, n, lm) of the real field gets S_k(G)·phase[lm]·Y_lm(Ĝ)·H_nl(|G|) at G and the conjugate at −G.
    """
    n_radial = table.shape[2]
    n_lm = l_of.shape[0]
    half = out.shape[1]
    n_g = table.shape[0]
    gmax = cuts.max()
    ylm = np.empty(n_lm)
    hval = np.zeros((l_of.max() + 1, n_radial))
    vals = np.zeros(2 * half, dtype=np.complex128)
    n1, n2, n3 = shape[0], shape[1], shape[2]
    for i0 in range(reach[0] + 1):
        for i1 in range(2 * reach[1] + 1):
            h1 = i1 - reach[1]
            if i0 == 0 and h1 < 0:
                continue
            for i2 in range(2 * reach[2] + 1):
                h2 = i2 - reach[2]
                if i0 == 0 and h1 == 0 and h2 < 0:
                    continue
                gx = i0 * recip[0, 0] + h1 * recip[1, 0] + h2 * recip[2, 0]
                gy = i0 * recip[0, 1] + h1 * recip[1, 1] + h2 * recip[2, 1]
                gz = i0 * recip[0, 2] + h1 * recip[1, 2] + h2 * recip[2, 2]
                g = np.sqrt(gx * gx + gy * gy + gz * gz)
                if g > gmax:
                    continue
                if g > 0:
                    _harmonics(gx / g, gy / g, gz / g, mono_exp, mono_w, ylm)
                else:
                    _harmonics(0.0, 0.0, 0.0, mono_exp, mono_w, ylm)
                # cubic (4-point Lagrange) interpolation of the table at g
                x = g / table_step
                j = min(max(int(np.floor(x)), 1), n_g - 3)
                t = x - j
                w0 = -t * (t - 1) * (t - 2) / 6
                w1 = (t + 1) * (t - 1) * (t - 2) / 2
                w2 = -(t + 1) * t * (t - 2) / 2
                w3 = (t + 1) * t * (t - 1) / 6
                for n in range(n_radial):
                    for l in range(hval.shape[0]):
                        hval[l, n] = 0.0
                        if g <= cuts[n]:
                            hval[l, n] = (w0 * table[j - 1, l, n] + w1 * table[j, l, n]
                                          + w2 * table[j + 1, l, n] + w3 * table[j + 2, l, n])
                row = 0
                for k in range(n_basis):
                    s = complex(s_half[i0, i1, i2, k])
                    for n in range(n_radial):
                        for lm in range(n_lm):
                            vals[row] = s * phase[lm] * (ylm[lm] * hval[l_of[lm], n])
                            row += 1
                plus = ((i0 % n1) * n2 + (h1 % n2)) * n3 + (h2 % n3)
                minus = (((-i0) % n1) * n2 + ((-h1) % n2)) * n3 + ((-h2) % n3)
                for q in range(half):
                    a = vals[2 * q]
                    b = vals[2 * q + 1]
                    out[plus, q] += a + 1j * b
                    if g > 0:
                        out[minus, q] += a.conjugate() + 1j * b.conjugate()


@nb.njit(cache=True, nogil=True)
def add_core(c, pos, weights, offsets, step, shape, mu, sigma, r_cut, core_a, mono_exp, mono_w, n_radial):
    """c (n_points, rows) float32 += Σ_j weights[j, k]·g_n(r)·(1 − s(r))·Y_lm(r̂) in row (k, n, lm), for the
    grid points within core_a of each atom (all images) and the first len(mu) radial functions.

    pos (atoms, 3): atom positions in grid units (fractional × shape); offsets (m, 3) int: grid steps
    around the atom's lower grid corner to try; step (3, 3): Cartesian step of one grid index per axis.
    """
    n_core = mu.shape[0]
    n_lm = mono_w.shape[1]
    n_basis = weights.shape[1]
    ylm = np.empty(n_lm)
    g = np.empty(n_core)
    n1, n2, n3 = shape[0], shape[1], shape[2]
    for j in range(pos.shape[0]):
        b0, b1, b2 = np.floor(pos[j, 0]), np.floor(pos[j, 1]), np.floor(pos[j, 2])
        d0, d1, d2 = pos[j, 0] - b0, pos[j, 1] - b1, pos[j, 2] - b2
        for q in range(offsets.shape[0]):
            e0, e1, e2 = d0 - offsets[q, 0], d1 - offsets[q, 1], d2 - offsets[q, 2]
            dx = e0 * step[0, 0] + e1 * step[1, 0] + e2 * step[2, 0]
            dy = e0 * step[0, 1] + e1 * step[1, 1] + e2 * step[2, 1]
            dz = e0 * step[0, 2] + e1 * step[1, 2] + e2 * step[2, 2]
            r = np.sqrt(dx * dx + dy * dy + dz * dz)
            if r >= core_a:
                continue
            t = (r / core_a) ** 2
            sw = t**4 * (35 + t * (-84 + t * (70 - 20 * t)))
            envelope = 0.5 * (np.cos(np.pi * r / r_cut) + 1) * (1 - sw)
            for n in range(n_core):
                g[n] = np.exp(-((r - mu[n]) ** 2) / (2 * sigma * sigma)) * envelope
            if r >= 1e-8:
                _harmonics(dx / r, dy / r, dz / r, mono_exp, mono_w, ylm)
            else:
                _harmonics(0.0, 0.0, 0.0, mono_exp, mono_w, ylm)
            p = ((int(b0 + offsets[q, 0]) % n1) * n2 + (int(b1 + offsets[q, 1]) % n2)) * n3 \
                + int(b2 + offsets[q, 2]) % n3
            for k in range(n_basis):
                w = weights[j, k]
                if w == 0:
                    continue
                base = k * n_radial * n_lm
                for n in range(n_core):
                    gw = w * g[n]
                    for lm in range(n_lm):
                        c[p, base + n * n_lm + lm] += gw * ylm[lm]


@nb.njit(cache=True, nogil=True)
def power_spectrum(c, mix, n_radial, n_lm, l_max, pairs, out):
    """out (p, n_features) = ``descriptor_grid.power_spectrum_channels`` of the channels mix @ basis:
    channel a's c_nlm = Σ_k mix[a, k]·c[point, (k, n, lm)]; pairs (n_pairs, 2) the channel pairs."""
    n_ch, n_basis = mix.shape
    cc = np.zeros((n_ch, n_radial, n_lm), dtype=c.dtype)
    used = np.zeros(n_ch, dtype=np.bool_)
    for a in range(n_ch):
        for k in range(n_basis):
            if mix[a, k] != 0:
                used[a] = True
    for p in range(c.shape[0]):
        for a in range(n_ch):
            if not used[a]:
                continue
            for n in range(n_radial):
                for lm in range(n_lm):
                    v = 0.0
                    for k in range(n_basis):
                        v += mix[a, k] * c[p, (k * n_radial + n) * n_lm + lm]
                    cc[a, n, lm] = v
        f = 0
        for l in range(l_max + 1):
            for q in range(pairs.shape[0]):
                a, b = pairs[q, 0], pairs[q, 1]
                if not (used[a] and used[b]):
                    for i in range(n_radial):
                        for jj in range(i if a == b else 0, n_radial):
                            out[p, f] = 0.0
                            f += 1
                    continue
                for i in range(n_radial):
                    for jj in range(i if a == b else 0, n_radial):
                        v = 0.0
                        for m in range(l * l, (l + 1) * (l + 1)):
                            v += cc[a, i, m] * cc[b, jj, m]
                        out[p, f] = v
                        f += 1
