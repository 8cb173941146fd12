"""The numba kernels of the full-grid descriptor on the CPU (:mod:`elfscreen.model.descriptor_grid` says
what they compute; its torch path does the same on other devices and is tested against these).

The spectra are built from the half-space of reciprocal vectors (F(−G) = conj F(G) for a real field)
into the stored half of a real-to-complex spectrum (last axis 0 … N3//2), row-major (rows (basis field,
n, lm), N1, N2, N3//2 + 1): a line of reciprocal vectors along h3 is written row by row, as consecutive
bins. The coefficients after the inverse FFT are row-major too (rows, N1·N2·N3), and the core walks each
atom's neighbourhood row by row.
Real harmonics are sums of monomials of the unit vector (``model.descriptor._harmonics_from_monomials``):
Y_lm(u) = Σ harm_w[i]·u_x^a u_y^b u_z^c over the non-zero entries i, harm_at[i] = (monomial, lm), mono_exp
the exponents (a, b, c) of each monomial; the zero vector gives l = 0 only.
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


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _harmonics(unit, count, l_max, mono_exp, harm_at, harm_w, powers, ylm):
    """Real spherical harmonics ``ylm[lm, :count]`` of the unit vectors ``unit[:, :count]``, as sums of
    monomials x^a y^b z^c (``harm_at``: (monomial, lm) pairs, ``harm_w`` their weights; ``powers`` scratch)."""
    for a in range(3):
        for q in range(count):
            powers[a, 0, q] = 1.0
        for e in range(1, l_max + 1):
            for q in range(count):
                powers[a, e, q] = powers[a, e - 1, q] * unit[a, q]
    for lm in range(ylm.shape[0]):
        for q in range(count):
            ylm[lm, q] = 0.0
    for h in range(harm_w.shape[0]):
        k, lm, w = harm_at[h, 0], harm_at[h, 1], harm_w[h]
        ea, eb, ec = mono_exp[k, 0], mono_exp[k, 1], mono_exp[k, 2]
        for q in range(count):
            ylm[lm, q] += w * powers[0, ea, q] * powers[1, eb, q] * powers[2, ec, q]


@nb.njit(cache=True, nogil=True, fastmath=True)
def fold_spectra(s_half, reach, recip, shape, table, table_step, cuts, l_of, phase, mono_exp, harm_at, harm_w, out):
    """Add to ``out`` (rows, N1, N2, N3//2 + 1) complex the folded spectra of the real rows (k, n, lm).

    s_half (b1, b2, b3, n_basis) complex: S_k(G) for h = (0 … reach0, −reach1 … reach1, −reach2 … reach2);
    recip (3, 3): G = h @ recip (Å⁻¹); table (n_G, l_max + 1, n_radial): H_nl at |G| = i·table_step;
    cuts (n_radial): |G| kept per radial function; l_of, phase (n_lm): l and 4π i^l / V per harmonic;
    mono_exp, harm_at, harm_w: the harmonics as monomials (below).
    Row (k, n, lm) gets F = S_k(G)·phase[lm]·Y_lm(Ĝ)·H_nl(|G|) in the bin of G and conj F in that of −G,
    where those bins are stored (both on the planes k3 = 0 and k3 = N3/2). A line of vectors along h3 is
    computed term by term over the line (loops the compiler vectorizes), then written row by row:
    consecutive h3 fall on consecutive bins of a row.
    """
    n_radial = table.shape[2]
    n_lm = l_of.shape[0]
    l_max = l_of.max()
    n_basis = s_half.shape[3]
    rows = out.shape[0]
    n_g = table.shape[0]
    width = s_half.shape[2]
    gmax = cuts.max()
    at = np.empty(width, dtype=np.int64)  # i2 of the kept vectors of the line
    gl = np.empty(width)
    real = table.dtype  # the line's terms in the table's precision (float32 tables: twice the vector width)
    unit = np.empty((3, width), dtype=real)
    powers = np.empty((3, l_max + 1, width), dtype=real)
    ylm = np.empty((n_lm, width), dtype=real)
    hval = np.empty((l_max + 1, n_radial, width), dtype=real)
    amp = np.empty((n_lm, width), dtype=out.dtype)
    line = np.empty((rows, width), dtype=out.dtype)
    plus_q = np.empty(width, dtype=np.int64)  # vectors of the line whose bin (of G, of −G) is stored, and the bin
    plus_at = np.empty(width, dtype=np.int64)
    minus_q = np.empty(width, dtype=np.int64)
    minus_at = np.empty(width, dtype=np.int64)
    n1, n2, n3 = shape[0], shape[1], shape[2]
    stored = n3 // 2
    # the lines in the order of their bins, each bin (b0, b1) next to its mirror (−b0, −b1): a line writes
    # its G to the one and its −G to the other, so the two bins' rows (all aliases' writes) are read and
    # written while in cache instead of once per visit
    order = np.empty(((reach[0] + 1) * (2 * reach[1] + 1), 2), dtype=np.int64)
    n_lines = 0
    for b0 in range(n1 // 2 + 1):
        c0 = (-b0) % n1
        for b1 in range(n2):
            c1 = (-b1) % n2
            if c0 == b0 and c1 < b1:
                continue  # a bin of a self-mirror plane: taken with its mirror at (b0, c1)
            for side in range(1 if (c0 == b0 and c1 == b1) else 2):
                x0, x1 = (b0, b1) if side == 0 else (c0, c1)
                for i0 in range(x0, reach[0] + 1, n1):
                    for h1 in range(x1 - ((x1 + reach[1]) // n2) * n2, reach[1] + 1, n2):
                        order[n_lines, 0], order[n_lines, 1] = i0, h1
                        n_lines += 1
    for line_at in range(n_lines):
        i0, h1 = order[line_at, 0], order[line_at, 1]
        i1 = h1 + reach[1]
        if i0 == 0 and h1 < 0:
            continue
        count = n_plus = n_minus = 0
        for i2 in range(width):
            h2 = i2 - reach[2]
            if i0 == 0 and h1 == 0 and h2 < 0:
                continue
            gx = i0 * recip[0, 0] + h1 * recip[1, 0] + h2 * recip[2, 0]
            gy = i0 * recip[0, 1] + h1 * recip[1, 1] + h2 * recip[2, 1]
            gz = i0 * recip[0, 2] + h1 * recip[1, 2] + h2 * recip[2, 2]
            g = np.sqrt(gx * gx + gy * gy + gz * gz)
            if g > gmax:
                continue
            inv = 1.0 / g if g > 0 else 0.0  # G = 0: l = 0 only (H_l>0(0) = 0 anyway)
            unit[0, count], unit[1, count], unit[2, count] = gx * inv, gy * inv, gz * inv
            gl[count] = g
            at[count] = i2
            b2, m2 = h2 % n3, (-h2) % n3
            if b2 <= stored:
                plus_q[n_plus], plus_at[n_plus] = count, b2
                n_plus += 1
            if g > 0 and m2 <= stored:
                minus_q[n_minus], minus_at[n_minus] = count, m2
                n_minus += 1
            count += 1
        if count == 0:
            continue
        gmin = gl[0]
        for q in range(1, count):
            gmin = min(gmin, gl[q])  # radial functions cut below the line's smallest |G| are all zero on it
        # the line's harmonics, term by term over its vectors
        _harmonics(unit, count, l_max, mono_exp, harm_at, harm_w, powers, ylm)
        # cubic (4-point Lagrange) interpolation of the table, zero beyond each function's cut
        for q in range(count):
            x = gl[q] / table_step
            j = min(max(int(np.floor(x)), 1), n_g - 3)
            t = x - j
            w0 = -t * (t - 1) * (t - 2) / 6
            w1 = (t + 1) * (t - 1) * (t - 2) / 2
            w2 = -(t + 1) * t * (t - 2) / 2
            w3 = (t + 1) * t * (t - 1) / 6
            for l in range(l_max + 1):
                for n in range(n_radial):
                    if cuts[n] < gmin:
                        continue
                    v = 0.0
                    if gl[q] <= cuts[n]:
                        v = (w0 * table[j - 1, l, n] + w1 * table[j, l, n]
                             + w2 * table[j + 1, l, n] + w3 * table[j + 2, l, n])
                    hval[l, n, q] = v
        for k in range(n_basis):
            for lm in range(n_lm):
                for q in range(count):
                    amp[lm, q] = s_half[i0, i1, at[q], k] * phase[lm] * ylm[lm, q]
            for n in range(n_radial):
                if cuts[n] < gmin:
                    continue
                row = (k * n_radial + n) * n_lm
                for lm in range(n_lm):
                    l = l_of[lm]
                    for q in range(count):
                        line[row + lm, q] = amp[lm, q] * hval[l, n, q]
        b0, b1 = i0 % n1, h1 % n2
        m0, m1 = (-i0) % n1, (-h1) % n2
        for row in range(rows):
            if cuts[(row // n_lm) % n_radial] < gmin:
                continue
            for i in range(n_plus):
                out[row, b0, b1, plus_at[i]] += line[row, plus_q[i]]
            for i in range(n_minus):
                out[row, m0, m1, minus_at[i]] += line[row, minus_q[i]].conjugate()


@nb.njit(cache=True, nogil=True, fastmath=True)
def add_core(c, pos, weights, offsets, step, shape, n_core, sigma, r_cut, core_a, mono_exp, harm_at, harm_w,
             n_radial):
    """c (rows, n_points) += Σ_j weights[j, k]·g_n(r)·(1 − s(r))·Y_lm(r̂) in row (k, n, lm), for the grid
    points within core_a of each atom (all images) and the first n_core radial functions (centres
    μ_n = n·r_cut / (n_radial − 1): g_n = e^{−r²/2σ²}·(e^{rΔ/σ²})ⁿ·e^{−n²Δ²/2σ²}, two exponentials a point).

    pos (atoms, 3): atom positions in grid units (fractional × shape); offsets (m, 3) int: grid steps
    around the atom's lower grid corner to try; step (3, 3): Cartesian step of one grid index per axis.
    The points of an atom are gathered in blocks; each block's values are computed term by term over the
    block (loops the compiler vectorizes) and added row by row while they are in cache.
    """
    l_max = mono_exp.max()
    n_lm = (l_max + 1) ** 2
    delta = r_cut / (n_radial - 1)
    fixed = np.exp(-((np.arange(n_core) * delta) ** 2) / (2 * sigma * sigma))
    n_off = offsets.shape[0]
    block = 256
    unit = np.empty((3, block))
    radius = np.empty(block)
    powers = np.empty((3, l_max + 1, block))
    ylm = np.empty((n_lm, block))
    radial = np.empty((n_core, block))
    point = np.empty(block, dtype=np.int64)
    n1, n2, n3 = shape[0], shape[1], shape[2]
    for j in range(pos.shape[0]):
        b0, b1, b2 = np.floor(pos[j, 0]), np.floor(pos[j, 1]), np.floor(pos[j, 2])
        d0, d1, d2 = pos[j, 0] - b0, pos[j, 1] - b1, pos[j, 2] - b2
        m = 0
        for q in range(n_off):
            e0, e1, e2 = d0 - offsets[q, 0], d1 - offsets[q, 1], d2 - offsets[q, 2]
            dx = e0 * step[0, 0] + e1 * step[1, 0] + e2 * step[2, 0]
            dy = e0 * step[0, 1] + e1 * step[1, 1] + e2 * step[2, 1]
            dz = e0 * step[0, 2] + e1 * step[1, 2] + e2 * step[2, 2]
            r = np.sqrt(dx * dx + dy * dy + dz * dz)
            if r < core_a:
                inv = 1.0 / r if r >= 1e-8 else 0.0  # an atom on the point: l = 0 only
                unit[0, m], unit[1, m], unit[2, m] = dx * inv, dy * inv, dz * inv
                radius[m] = r
                point[m] = ((int(b0 + offsets[q, 0]) % n1) * n2 + (int(b1 + offsets[q, 1]) % n2)) * n3 \
                    + int(b2 + offsets[q, 2]) % n3
                m += 1
            if m == block or (q == n_off - 1 and m > 0):
                for i in range(m):
                    r = radius[i]
                    t = (r / core_a) ** 2
                    sw = t * t * t * t * (35 + t * (-84 + t * (70 - 20 * t)))
                    envelope = 0.5 * (np.cos(np.pi * r / r_cut) + 1) * (1 - sw)
                    radial[0, i] = np.exp(-r * r / (2 * sigma * sigma)) * envelope
                for i in range(m):
                    ratio = np.exp(radius[i] * delta / (sigma * sigma))
                    for n in range(1, n_core):
                        radial[n, i] = radial[n - 1, i] * ratio
                for n in range(n_core):
                    for i in range(m):
                        radial[n, i] *= fixed[n]
                _harmonics(unit, m, l_max, mono_exp, harm_at, harm_w, powers, ylm)
                for k in range(weights.shape[1]):
                    w = weights[j, k]
                    if w == 0:
                        continue
                    for n in range(n_core):
                        for lm in range(n_lm):
                            row = (k * n_radial + n) * n_lm + lm
                            for i in range(m):
                                c[row, point[i]] += w * radial[n, i] * ylm[lm, i]
                m = 0


@nb.njit(cache=True, nogil=True, fastmath=True)
def power_spectrum(c, start, stop, products, first, targets, factors, out):
    """out[t, q − start] = factors[t]·Σ_m c[row_a + l² + m, q]·c[row_b + l² + m, q] for the points
    start ≤ q < stop, each product computed once and written to every feature row it gives.

    c (rows, n_points), rows in blocks of n_lm = out's (l_max + 1)² per (field, radial function);
    products (k, 3) int: (row_a, row_b, l), the first rows of the two blocks and l; the feature rows of
    product p are targets[first[p]:first[p + 1]] with their factors (a row of a channel no atom weighs
    is in no list: it is written zero here); out (n_features, ≥ stop − start).
    The points run in blocks that keep their coefficients in cache; each product's sum over m is
    accumulated in a block-long vector and written once per feature (no read-back of the output).
    """
    block = 512
    listed = np.zeros(out.shape[0], dtype=np.bool_)
    for t in targets:
        listed[t] = True
    acc = np.empty(block, dtype=out.dtype)
    for a in range(start, stop, block):
        b = min(stop, a + block)
        m = b - a
        for t in range(out.shape[0]):
            if not listed[t]:
                out[t, a - start:b - start] = 0
        for p in range(products.shape[0]):
            ra, rb, l = products[p, 0], products[p, 1], products[p, 2]
            x, y = c[ra + l * l, a:b], c[rb + l * l, a:b]
            for q in range(m):
                acc[q] = x[q] * y[q]
            for lm in range(l * l + 1, (l + 1) * (l + 1)):
                x, y = c[ra + lm, a:b], c[rb + lm, a:b]
                for q in range(m):
                    acc[q] += x[q] * y[q]
            for k in range(first[p], first[p + 1]):
                o, f = out[targets[k], a - start:b - start], factors[k]
                for q in range(m):
                    o[q] = f * acc[q]
