"""The descriptor on every point of a full grid, by periodic convolution: FFT + a short real-space core.

The coefficients of ``model.descriptor`` are a periodic convolution of the atomic densities with the
kernels K_nlm(r) = g_n(|r|)·Y_lm(r̂): c^a_nlm(x) = Σ_j w_a(j) K_nlm(r_j − x) over all images. On the grid
point (i, j, k) at fractional (i/N1, j/N2, k/N3) this is, exactly,

    c(x) = (1/V) Σ_G  S_a(G) · 4π i^l Y_lm(Ĝ) H_nl(|G|) · e^{iG·x},   S_a(G) = Σ_j w_a(j) e^{−iG·r_j},
    H_nl(G) = ∫_0^r_cut g_n(r) j_l(G r) r² dr   (a 1-D Hankel transform, tabulated once, cubic interpolation)

summed over every reciprocal vector; S is computed exactly for atoms anywhere (not spread on the grid),
and the terms beyond the grid's own frequencies are folded onto it (aliasing is exact on grid points),
so one inverse FFT of the grid's size per channel gives c everywhere. The sum must be cut at |G| ≤ G_cut,
and K is not smooth: at r = 0 (Y_lm(r̂) has no limit when g_n(0) ≠ 0, so K̂ decays only as G⁻³) and at
r_cut (the cutoff is C¹). The kernel is therefore split with a switch s(r) (C³, s = O(r⁸) at 0, 1 beyond
CORE_RADIUS_A): K·s goes through the FFT, K·(1 − s), non-zero only within CORE_RADIUS_A of an atom, is
added directly on the grid points near each atom (~3 atoms per point against ~45 for the direct method). What is
left is the r_cut kink, whose tail beyond G_CUT is below 1e-4 of the largest feature
(``tests/test_descriptor_grid.py``, docs/DESCRIPTOR.md). That is paper-v1's spec kernel ("gaussian"); the
"solid" kernels of hydride-v2 are smooth everywhere, so they need no core and every radial function is
cut far below G_CUT at the same truncation error (``radial_cuts``: ≤ 23 Å⁻¹). Costs: S for |G| ≤ G_cut (atoms × reciprocal
vectors, as matrix products), per channel one product and fold over those vectors and one FFT of the
grid, then the core; it does not grow with the number of neighbours, the direct method does.

On the CPU the same sums run as compiled kernels (:func:`compiled_coefficients`,
``model.descriptor_grid_kernel``): half the reciprocal vectors written to G and −G of a real-to-complex
spectrum, one real inverse FFT per row, one density field per species where that is fewer than the
channels (:func:`density_basis`); torch (:func:`grid_coefficients`) runs them on other devices.

The whole grid's coefficients are held (n_channels·n_radial·(l_max+1)² float32 per point: 360 bytes for
paper-v1, and as much again for their spectra while the FFTs run), features are produced chunk by chunk;
:func:`grid_memory_mb` gives the peak, so callers can fall back to the direct method for grids too large
to hold.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from typing import Iterator

import numpy as np
import scipy.fft
import torch
from pymatgen.core import Structure
from scipy.special import spherical_jn

from elfscreen.model.descriptor import (PAPER_V1, DescriptorParams, atom_channels, pick_device, radial_functions,
                                        real_spherical_harmonics, smooth_step, solid_scale)

CORE_RADIUS_A = 1.2  # the kernel's part within this radius of an atom is summed in real space
G_CUT = 60.0  # Å⁻¹: reciprocal vectors kept (measured: max error ≤ 1e-4 of the largest feature, docs/DESCRIPTOR.md)
CORE_THRESHOLD = 1e-6  # g_n(0) below which a radial function needs no core
TABLE_REACH = 1.6  # the tables reach 1.6·G_CUT, for the tails that set the per-function cuts
TABLE_STEP = 0.02  # Å⁻¹ between tabulated |G| of the Hankel transforms (cubic interpolation)
# largest block of features per chunk, so that it stays in cache while it is written and read: torch's
# power spectrum reads and writes its block once per m (hydride-v1, La4H40: 16,384 points (36 MiB) 0.145 s,
# 8,192 points 0.042 s); the compiled one writes each feature once, but a block beyond the cache still
# costs the memory traffic (hydride-v1, the whole La4H40 grid: 16 MiB 0.048 s, 4 MiB 0.032 s, 1 MiB 0.030 s)
FEATURE_BLOCK_MB = {"torch": 16.0, "compiled": 4.0}


def _radial_np(r: np.ndarray, params: DescriptorParams) -> np.ndarray:
    """g_nl(r) (len(r), l_max + 1, n_radial) in float64: ``radial_functions`` times (r/ρ_n)^l for "solid"."""
    g = radial_functions(torch.as_tensor(r, dtype=torch.float64), params).numpy()
    if params.kernel != "solid":
        return np.repeat(g[:, None, :], params.l_max + 1, axis=1)
    powers = r[:, None] ** np.arange(params.l_max + 1)[None, :]  # (len(r), l_max + 1)
    return g[:, None, :] * powers[:, :, None] * solid_scale(params).T[None]


def core_count(params: DescriptorParams) -> int:
    """Radial functions that get the real-space core: those with g_n(0) ≥ CORE_THRESHOLD (μ_n near 0; the
    μ_n are ascending, so they are the first ones). The others vanish at r = 0 to that accuracy, so their
    kernel is smooth there and goes through the FFT whole; so do all of a "solid" kernel's (smooth by design)."""
    if params.kernel == "solid":
        return 0
    mu = np.linspace(0.0, params.r_cut_a, params.n_radial)
    return int(np.sum(np.exp(-(mu**2) / (2 * params.sigma**2)) >= CORE_THRESHOLD))


@lru_cache(maxsize=8)
def _hankel_table(params: DescriptorParams, core_a: float, g_cut: float) -> np.ndarray:
    """H_nl(G) of the FFT part (g_nl·s for the first core_count(params) functions, g_nl for the others) at
    G = 0, TABLE_STEP, … ≥ g_cut + 2 steps: (n_G, l_max + 1, n_radial)."""
    nodes, wts = np.polynomial.legendre.leggauss(256)
    parts = []
    inner = params.r_cut_a / 3 if params.kernel == "solid" else core_a  # the kernel is smooth on each piece
    for lo, hi, count in ((0.0, inner, 1), (inner, params.r_cut_a, 3)):
        for k in range(count):
            a, b = lo + (hi - lo) * k / count, lo + (hi - lo) * (k + 1) / count
            parts.append(((nodes + 1) * (b - a) / 2 + a, wts * (b - a) / 2))
    r = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    smooth = _radial_np(r, params) * (w * r * r)[:, None, None]
    smooth[:, :, : core_count(params)] *= smooth_step((r / core_a) ** 2)[:, None, None]
    g = np.arange(int(math.ceil(TABLE_REACH * g_cut / TABLE_STEP)) + 3) * TABLE_STEP
    return np.stack([spherical_jn(l, np.outer(g, r)) @ smooth[:, l] for l in range(params.l_max + 1)], axis=1)


def _tails(params: DescriptorParams, core_a: float, g_cut: float) -> np.ndarray:
    """(n_G, n_radial): each radial function's spectral tail from the table's G upwards,
    ∫_G^∞ Σ_l (2l+1) H_nl(G')² G'² dG' (the mean square of its truncation error)."""
    table = _hankel_table(params, core_a, g_cut)
    g = np.arange(len(table)) * TABLE_STEP
    density = (table**2 * (2 * np.arange(params.l_max + 1) + 1)[None, :, None]).sum(1) * (g**2)[:, None]
    return np.cumsum(density[::-1], axis=0)[::-1] * TABLE_STEP


@lru_cache(maxsize=8)
def radial_cuts(params: DescriptorParams, core_a: float, g_cut: float) -> np.ndarray:
    """|G| cut per radial function (Å⁻¹): the smallest at which its spectral tail (``_tails``) is no larger
    than the worst tail of the "gaussian" kernels of the same r_cut, n_radial and σ at ``g_cut`` (measured:
    ≤ 1e-4 of the largest feature). Functions that are smooth in space (small μ, no kink at r_cut, every
    function of a "solid" kernel) need far fewer G."""
    tail = _tails(params, core_a, g_cut)
    at_cut = int(round(g_cut / TABLE_STEP))
    reference = tail if params.kernel == "gaussian" else _tails(replace(params, kernel="gaussian"), core_a, g_cut)
    first = np.argmax(tail <= reference[at_cut].max(), axis=0)  # tail is decreasing in G
    return np.minimum(first * TABLE_STEP, g_cut)


def _interpolate(table: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Cubic (4-point Lagrange) interpolation of ``table`` (n_G, …) at |G| values ``g`` (TABLE_STEP apart)."""
    x = g / TABLE_STEP
    i = x.floor().long().clamp(1, table.shape[0] - 3)
    t = (x - i).to(table.dtype)
    w = torch.stack([-t * (t - 1) * (t - 2) / 6, (t + 1) * (t - 1) * (t - 2) / 2,
                     -(t + 1) * t * (t - 2) / 2, (t + 1) * t * (t - 1) / 6], dim=-1)
    flat = table.reshape(table.shape[0], -1)
    out = w[:, :1] * flat[i - 1]
    for k in range(1, 4):
        out.addcmul_(w[:, k:k + 1], flat[i - 1 + k])
    return out.view(len(g), *table.shape[1:])


def grid_memory_mb(shape: tuple[int, int, int], params: DescriptorParams = PAPER_V1) -> float:
    """Peak float32 size (MiB) the grid path holds for a grid of ``shape``: the coefficients and, while the
    FFTs run, their spectra (about as large)."""
    return 2 * math.prod(shape) * params.n_channels * params.n_radial * (params.l_max + 1) ** 2 * 4 / 2**20


def reciprocal_count(structure: Structure, params: DescriptorParams = PAPER_V1) -> int:
    """About how many reciprocal vectors the grid path sums over (|G| up to the largest radial cut; its
    cost besides the FFTs)."""
    g_max = float(radial_cuts(params, CORE_RADIUS_A, G_CUT).max())
    return int(structure.lattice.volume * g_max**3 / (6 * math.pi**2))


def _cell(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams, g_cut: float):
    """What both paths start from: (shape as ints, points, lattice rows (Å), volume (Å³), atoms' fractional
    positions, their channel weights (atoms, n_channels; one channel of 1 for paper-v1), the reciprocal
    basis (rows, Å⁻¹; G = 2π h·B) and reach: |h_d| ≤ g_cut·|a_d| / 2π holds every |G| ≤ g_cut)."""
    shape = tuple(int(n) for n in shape)
    lattice = structure.lattice.matrix
    sites, weights = atom_channels(structure, params)
    weights = np.ones((len(sites), 1)) if weights is None else weights
    recip = 2 * np.pi * np.linalg.inv(lattice).T
    reach = np.floor(g_cut * np.linalg.norm(lattice, axis=1) / (2 * np.pi)).astype(np.int64)
    return shape, math.prod(shape), lattice, abs(float(np.linalg.det(lattice))), sites, weights, recip, reach


def grid_coefficients(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams = PAPER_V1,
                      device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                      max_chunk_mb: float = 256.0, core_a: float = CORE_RADIUS_A,
                      g_cut: float = G_CUT) -> torch.Tensor:
    """c (n_channels·n_radial·(l_max+1)², N1·N2·N3) on ``device``: row (a·n_radial + n)·(l_max+1)² + lm
    is channel a's c_nlm, column the grid point (i, j, k) in C order, at fractional (i/N1, j/N2, k/N3)."""
    dev = pick_device(str(device) if device is not None else None)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    g_max = float(radial_cuts(params, core_a, g_cut).max())
    shape, n_points, lattice, volume, sites, weights, recip, reach = _cell(structure, shape, params, g_max)
    n, n_ch, n_lm = params.n_radial, params.n_channels, (params.l_max + 1) ** 2
    c = torch.zeros((n_ch * n * n_lm, n_points), dtype=dtype, device=dev)
    if not len(sites):
        return c

    # reciprocal vectors G = 2π h·B with |G| ≤ g_max
    hs = [torch.arange(-m, m + 1, device=dev) for m in reach]
    h = torch.stack(torch.meshgrid(*hs, indexing="ij"), -1).reshape(-1, 3)
    gvec = h.to(torch.float64) @ torch.as_tensor(recip, device=dev)
    gnorm = gvec.norm(dim=1)
    keep = gnorm <= g_max
    # structure factors S_a(G) = Σ_j w_a(j) e^{−iG·r_j}, as products of per-axis phases over the box
    frac = torch.as_tensor(sites, dtype=torch.float64, device=dev)
    ph = [torch.exp(-2j * math.pi * frac[:, d, None] * hs[d].to(torch.float64)).to(cdtype) for d in range(3)]
    w_t = torch.as_tensor(weights, device=dev).to(cdtype)
    pair = (ph[0][:, :, None] * ph[1][:, None, :]).reshape(len(sites), -1)  # (atoms, b1·b2)
    third = (ph[2][:, :, None] * w_t[:, None, :]).reshape(len(sites), -1)  # (atoms, b3·A)
    s_g = (pair.T @ third).reshape(-1, n_ch)[keep]  # (n_G, A)
    del pair, third
    gnorm = gnorm[keep]
    order = torch.argsort(gnorm)  # by |G|: each radial function uses a prefix (its own cut)
    unit = (gvec[keep] / gnorm.clamp(min=1e-300)[:, None]).to(dtype)[order]  # G = 0: H_l>0(0) = 0 anyway
    s_g, h, gnorm = s_g[order], h[keep][order], gnorm[order]
    cuts = torch.as_tensor(radial_cuts(params, core_a, g_cut), device=dev)
    counts = torch.searchsorted(gnorm, cuts, right=True).tolist()

    table = torch.as_tensor(_hankel_table(params, core_a, g_cut), dtype=dtype, device=dev)
    ylm = real_spherical_harmonics(unit, params.l_max)  # (n_G, n_lm)
    ls = torch.as_tensor([l for l in range(params.l_max + 1) for _ in range(2 * l + 1)], device=dev)
    phase = torch.tensor([(1j) ** l * 4 * math.pi / volume for l in ls.tolist()], dtype=cdtype, device=dev)
    # channels no atom of this structure weighs (a pure-H cell's metal channels) stay zero
    active = [a for a in range(n_ch) if np.any(weights[:, a] != 0)]
    angular = (s_g.T[active, None, :] * (ylm.T * phase[:, None])[None]).contiguous()  # (active, n_lm, n_G)
    fold = ((h % torch.as_tensor(shape, device=dev)) * torch.as_tensor([shape[1] * shape[2], shape[2], 1],
                                                                         device=dev)).sum(1)
    view = c.view(n_ch, n, n_lm, n_points)
    # two radial functions with similar cuts per complex FFT (their real channels as real and imaginary part)
    by_cut = sorted(range(n), key=lambda k: -counts[k])
    for pair in (by_cut[i:i + 2] for i in range(0, n, 2)):
        m = max(counts[k] for k in pair)
        rad = _interpolate(table[:, :, pair], gnorm[:m].to(dtype))  # (m, l_max + 1, 1 or 2)
        packed = torch.complex(rad[:, :, 0], rad[:, :, 1]) if len(pair) == 2 else rad[:, :, 0].to(cdtype)
        spectra = angular[:, :, :m] * packed[:, ls].T  # (active, n_lm, m)
        folded = torch.zeros((len(active) * n_lm, n_points), dtype=cdtype, device=dev)
        folded.index_add_(1, fold[:m], spectra.reshape(len(active) * n_lm, m))
        values = torch.fft.ifftn(folded.view(-1, *shape), dim=(1, 2, 3), norm="forward")
        values = values.view(len(active), n_lm, n_points)
        for k, a in enumerate(active):
            view[a, pair[0]] = values[k].real
            if len(pair) == 2:
                view[a, pair[1]] = values[k].imag
        del spectra, folded, values
    if core_count(params):
        _add_core(c, lattice, sites, weights, active, shape, params, core_a, dev, dtype, max_chunk_mb)
    return c


def _core_offsets(lattice: np.ndarray, shape: tuple[int, int, int], core_a: float) -> tuple[np.ndarray, np.ndarray]:
    """The Cartesian step of one grid index per axis (rows, Å) and the integer offsets from an atom's lower
    grid corner that can hold a grid point within core_a of it."""
    step = lattice / np.array(shape)[:, None]
    reach = np.ceil(core_a * np.linalg.norm(np.linalg.inv(step), axis=0)).astype(int) + 1
    off = np.stack(np.meshgrid(*[np.arange(-m, m + 2) for m in reach], indexing="ij"), -1).reshape(-1, 3)
    voxel = np.abs(step).sum(0)
    return step, off[np.linalg.norm(off @ step, axis=1) <= core_a + np.linalg.norm(voxel) + 1e-9]


def _add_core(c: torch.Tensor, lattice: np.ndarray, sites: np.ndarray, weights: np.ndarray, active: list[int],
              shape: tuple[int, int, int], params: DescriptorParams, core_a: float, dev: torch.device,
              dtype: torch.dtype, max_chunk_mb: float) -> None:
    """c += Σ_j w_a(j) g_n(r)·(1 − s(r))·Y_lm(r̂) for the grid points within core_a of each atom (all images),
    for the ``active`` channels a."""
    n_all = weights.shape[1]
    weights = weights[:, active]
    step, off = _core_offsets(lattice, shape, core_a)
    pos = sites * np.array(shape)
    base = np.floor(pos)
    delta = torch.as_tensor(pos - base, dtype=dtype, device=dev)
    base_t = torch.as_tensor(base.astype(np.int64), device=dev)
    off_t = torch.as_tensor(off, device=dev)
    off_d = off_t.to(dtype)
    step_t = torch.as_tensor(step, dtype=dtype, device=dev)
    w_t = torch.as_tensor(weights, dtype=dtype, device=dev)
    n_vec = torch.as_tensor(shape, device=dev)
    strides = torch.as_tensor([shape[1] * shape[2], shape[2], 1], device=dev)
    n_core = core_count(params)
    n_lm, n_ch = (params.l_max + 1) ** 2, weights.shape[1]
    n_rows = n_ch * n_core * n_lm
    core = torch.zeros((n_rows, c.shape[1]), dtype=dtype, device=dev)  # contiguous: index_add is 3× faster
    per_atom_mb = len(off) * (8 + n_rows) * torch.finfo(dtype).bits / 8 / 2**20
    batch = max(1, int(max_chunk_mb // max(per_atom_mb, 1e-9)))
    for a in range(0, len(sites), batch):
        d = ((delta[a:a + batch, None, :] - off_d[None]) @ step_t)  # atom − point, (atoms, offsets, 3)
        r = d.norm(dim=-1)
        atom, k = torch.nonzero(r < core_a, as_tuple=True)
        rr, dd = r[atom, k], d[atom, k]
        point = (((base_t[a + atom] + off_t[k]) % n_vec) * strides).sum(1)
        g = radial_functions(rr, params)[:, :n_core] * (1 - smooth_step((rr / core_a) ** 2))[:, None]
        unit = torch.where(rr[:, None] >= 1e-8, dd / rr.clamp(min=1e-30)[:, None], torch.zeros_like(dd))
        ylm = real_spherical_harmonics(unit, params.l_max)
        ylm[rr < 1e-8, 1:] = 0  # an atom on the point: l = 0 only
        vals = g.T[:, None, :] * ylm.T[None, :, :]  # (n_core, n_lm, pairs)
        if n_ch > 1 or not bool((w_t == 1).all()):
            vals = w_t[a + atom].T[:, None, None, :] * vals[None]
        core.index_add_(1, point, vals.reshape(n_rows, -1))
    rows = torch.as_tensor(active, device=dev)
    c.view(n_all, params.n_radial, n_lm, -1)[rows, :n_core] += core.view(n_ch, n_core, n_lm, -1)


def iter_describe_grid(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams = PAPER_V1,
                       device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                       max_chunk_mb: float = 256.0, chunk_points: int = 16384, compiled: bool | None = None
                       ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, features)`` chunks covering every point of the grid once, as
    ``model.descriptor.iter_describe`` does for the points ``(i/N1, j/N2, k/N3)`` in C order of (i, j, k).
    A chunk's features are overwritten by the next chunk's: copy them to keep them.
    On the CPU the compiled kernels do the work (``compiled`` None or True; :func:`compiled_coefficients`),
    elsewhere (or with ``compiled=False``) torch does (:func:`grid_coefficients`); the two agree to rounding."""
    dev = pick_device(str(device) if device is not None else None)
    use_compiled = dev.type == "cpu" if compiled is None else compiled
    if use_compiled and dev.type != "cpu":
        raise ValueError(f"the compiled grid path runs on the CPU, not on {dev}")
    if use_compiled:
        c, field, scale = compiled_coefficients(structure, shape, params, dtype)
        c = torch.from_numpy(c)
    else:
        c, field, scale = grid_coefficients(structure, shape, params, dev, dtype, max_chunk_mb), None, None
    rows, n_points = c.shape
    size = torch.finfo(dtype).bits // 8
    step = max(1, min(chunk_points, int(max_chunk_mb * 2**20 // ((rows + 3 * params.n_features) * size)),
                      int(FEATURE_BLOCK_MB["compiled" if use_compiled else "torch"] * 2**20
                          // (params.n_features * size))))
    view = c.view(-1, params.n_radial, (params.l_max + 1) ** 2, n_points)
    # one buffer for the chunks' features: fresh memory each chunk costs the kernel's page faults and
    # zeroing (~0.03 s of 0.22 s for H64); the consumer uses a chunk before it asks for the next
    buffer = torch.empty((params.n_features, step), dtype=c.dtype, device=c.device) if n_points >= step else None
    if use_compiled:
        from elfscreen.model.descriptor_grid_kernel import power_spectrum

        plan = _power_spectrum_plan(params, field, scale, dtype)
    for a in range(0, n_points, step):
        b = min(n_points, a + step)
        out = buffer if b - a == step else None
        if not use_compiled:
            yield np.arange(a, b), power_spectrum_channels(view[..., a:b], params, out=out).T
            continue
        out = torch.empty((params.n_features, b - a), dtype=c.dtype) if out is None else out
        power_spectrum(c.numpy(), a, b, *plan, out.numpy())
        yield np.arange(a, b), out.T


def density_basis(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fewest density fields the channels are multiples of: (basis weights (atoms, k), field (n_channels,)
    int, scale (n_channels,)) with channel a = scale[a]·field field[a] (field −1: a channel no atom weighs).
    The channels are linear in the atoms' weights: when fewer species (distinct weight vectors) than non-zero
    channels occur and each channel is weighed by one species only — La4H40 under hydride-v2: H, χ·La,
    r_cov·La from 2 fields; a pure-H cell: 1 — one field per species is transformed; otherwise the non-zero
    channels themselves are the fields."""
    active = np.flatnonzero(np.any(weights != 0, axis=0))
    species, index = np.unique(weights, axis=0, return_inverse=True)
    field = np.full(weights.shape[1], -1)
    scale = np.zeros(weights.shape[1])
    if len(species) < len(active) and (np.count_nonzero(species, axis=0) <= 1).all():
        for a in active:
            k = int(np.flatnonzero(species[:, a])[0])
            field[a], scale[a] = k, species[k, a]
        return np.eye(len(species))[index.reshape(-1)], field, scale
    field[active], scale[active] = np.arange(len(active)), 1.0
    return weights[:, active], field, scale


def compiled_coefficients(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams = PAPER_V1,
                          dtype: torch.dtype = torch.float32, core_a: float = CORE_RADIUS_A, g_cut: float = G_CUT
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coefficients on the CPU by the compiled kernels (``model.descriptor_grid_kernel``):
    (c (rows, N1·N2·N3), field, scale), row (b·n_radial + n)·(l_max+1)² + lm holding basis field b's c_nlm;
    channel a is scale[a]·field field[a] (:func:`density_basis`). The same sums as
    :func:`grid_coefficients`: structure factors as a matrix product over half the box of reciprocal
    vectors, the spectra built and folded per vector in one compiled loop into the stored half of a
    real-to-complex spectrum, one real inverse FFT per row, the real-space core per atom."""
    from elfscreen.model import descriptor_grid_kernel as kernel
    from elfscreen.model.descriptor import _harmonics_from_monomials, _monomials

    real = np.float64 if dtype == torch.float64 else np.float32
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    cuts = radial_cuts(params, core_a, g_cut)
    shape, n_points, lattice, volume, sites, weights, recip, reach = _cell(structure, shape, params, float(cuts.max()))
    n, n_lm = params.n_radial, (params.l_max + 1) ** 2
    if not len(sites):
        return np.zeros((n * n_lm, n_points), dtype=real), np.full(params.n_channels, -1), np.zeros(params.n_channels)
    basis, field, scale = density_basis(weights)
    rows = basis.shape[1] * n * n_lm
    # S_k(G) over h0 ≥ 0 (the other half is its conjugate), per-axis phases multiplied as matrices
    hs = [torch.arange(0 if d == 0 else -reach[d], reach[d] + 1, dtype=torch.float64) for d in range(3)]
    frac = torch.as_tensor(sites, dtype=torch.float64)
    ph = [torch.exp(-2j * math.pi * frac[:, d, None] * hs[d]).to(cdtype) for d in range(3)]
    pair = (ph[0][:, :, None] * ph[1][:, None, :]).reshape(len(sites), -1)
    third = (ph[2][:, :, None] * torch.as_tensor(basis).to(cdtype)[:, None, :]).reshape(len(sites), -1)
    s_half = (pair.T @ third).reshape(len(hs[0]), len(hs[1]), len(hs[2]), basis.shape[1]).numpy()
    del pair, third
    mono_exp = np.array(_monomials(params.l_max), dtype=np.int64)
    mono_w = _harmonics_from_monomials(params.l_max)
    harm_at = np.argwhere(np.abs(mono_w) > 1e-12)  # (monomial, harmonic) of the non-zero entries
    harm_w = mono_w[harm_at[:, 0], harm_at[:, 1]]
    l_of = np.array([l for l in range(params.l_max + 1) for _ in range(2 * l + 1)], dtype=np.int64)
    phase = np.array([(1j) ** l * 4 * math.pi / volume for l in l_of], dtype=np.complex128)
    spectrum = np.zeros((rows, *shape[:2], shape[2] // 2 + 1), dtype=np.complex128 if real == np.float64
                        else np.complex64)
    # the spectra's terms in their own precision (float32: twice the vector width; 1e-7 relative)
    kernel.fold_spectra(s_half, reach, recip, np.array(shape, dtype=np.int64),
                        _hankel_table(params, core_a, g_cut).astype(real), TABLE_STEP,
                        cuts, l_of, phase.astype(spectrum.dtype), mono_exp, harm_at,
                        harm_w.astype(real), spectrum)
    del s_half
    c = _inverse_fft(spectrum, shape, cuts, np.linalg.norm(lattice, axis=1),
                     n_lm).reshape(rows, n_points)
    del spectrum
    if core_count(params):
        step, off = _core_offsets(lattice, shape, core_a)
        kernel.add_core(c, sites * np.array(shape), basis, off.astype(np.int64), step, np.array(shape, dtype=np.int64),
                        core_count(params), params.sigma, params.r_cut_a, core_a, mono_exp, harm_at, harm_w, n)
    return c, field, scale


def _inverse_fft(spectrum: np.ndarray, shape: tuple[int, int, int], cuts: np.ndarray, edges: np.ndarray,
                 n_lm: int) -> np.ndarray:
    """The real fields (rows, N1, N2, N3) of the stored-half spectra (rows, N1, N2, N3//2 + 1), rows in blocks
    of n_lm per (field, radial function), by scipy's
    pocketfft (~2× torch's irfftn here; workers=1: one thread, as torch is told), overwriting the spectra.

    Pruned: row (b, n, lm) is non-zero only where |h_d| ≤ K_d = cut_n·|a_d| / 2π, so when 2K_d + 1 ≤ N_d
    for d = 2, 3 (no bins wrapped) its axis-1 transforms run only on the lines with k2 ∈ [−K_2, K_2] and
    k3 ≤ K_3, and its axis-2 transforms only on k3 ≤ K_3; the last (real) pass runs on every line. For
    paper-v1 at 0.1 Å, 6 of 10 radial functions are cut at 18–22 Å⁻¹, below the grid's 31 Å⁻¹: measured
    0.077 → 0.043 s for the 90 rows of H64."""
    def inverse(view: np.ndarray, axes: tuple[int, ...]) -> None:
        out = scipy.fft.ifftn(view, axes=axes, norm="forward", workers=1, overwrite_x=True)
        if not np.may_share_memory(out, view):  # pocketfft works in place on a complex view; else copy back
            view[...] = out

    n_radial = len(cuts)
    reach = np.floor(np.outer(cuts, edges[1:]) / (2 * np.pi) + 1e-9).astype(int)  # (n_radial, 2): K_2, K_3
    for block in range(spectrum.shape[0] // n_lm):
        rows = spectrum[block * n_lm:(block + 1) * n_lm]
        k2, k3 = reach[block % n_radial]
        if 2 * k2 + 1 <= shape[1] and 2 * k3 + 1 <= shape[2]:
            for lines in (slice(0, k2 + 1), slice(shape[1] - k2, shape[1])):
                inverse(rows[:, :, lines, :k3 + 1], (1,))
            inverse(rows[:, :, :, :k3 + 1], (2,))
        else:
            inverse(rows, (1, 2))
    return scipy.fft.irfft(spectrum, n=shape[2], axis=3, norm="forward", workers=1)


def _power_spectrum_plan(params: DescriptorParams, field: np.ndarray, scale: np.ndarray, dtype: torch.dtype
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The products the compiled power spectrum computes and the feature rows each one gives (features in
    ``power_spectrum_channels``'s order): products (k, 3) (first coefficient row of (field a, n), of
    (field b, n'), l); first (k + 1,), targets, factors: the rows of product p are
    targets[first[p]:first[p + 1]], each that product times its factor (scale[a]·scale[b], dimensionless;
    a block whose channels are multiples of the same fields as an earlier one reuses its products). Rows of
    a channel no atom weighs (field −1) are in no list."""
    n, n_lm = params.n_radial, (params.l_max + 1) ** 2
    products: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    row = 0
    for l in range(params.l_max + 1):
        for a, b in params.channel_pairs:
            fa, fb, factor = int(field[a]), int(field[b]), float(scale[a] * scale[b])
            for i in range(n):
                for j in range(i if a == b else 0, n):
                    if fa >= 0 and fb >= 0:
                        products.setdefault(((fa * n + i) * n_lm, (fb * n + j) * n_lm, l), []).append((row, factor))
                    row += 1
    first = np.cumsum([0] + [len(t) for t in products.values()])
    targets = np.array([r for t in products.values() for r, _ in t], dtype=np.int64)
    factors = np.array([f for t in products.values() for _, f in t],
                       dtype=np.float64 if dtype == torch.float64 else np.float32)
    return np.array(list(products), dtype=np.int64).reshape(-1, 3), first.astype(np.int64), targets, factors


def power_spectrum_channels(c: torch.Tensor, params: DescriptorParams, out: torch.Tensor | None = None
                            ) -> torch.Tensor:
    """``model.descriptor.power_spectrum`` for point-last coefficients c (n_channels, n_radial, n_lm, p):
    features (n_features, p), the same order, accumulated as rows × rows products over m (no tiny matrices;
    the torch path's, on any device: the compiled path's kernel is ``descriptor_grid_kernel.power_spectrum``).
    ``out``: a contiguous (n_features, p) tensor to write into (every row is written), else a new one."""
    n, p = params.n_radial, c.shape[-1]
    if out is None:
        out = torch.empty((params.n_features, p), dtype=c.dtype, device=c.device)
    row = 0
    for l in range(params.l_max + 1):
        for a, b in params.channel_pairs:
            for i in range(n):
                first = i if a == b else 0  # same channel: n ≤ n' only
                block = out[row:row + n - first]
                torch.mul(c[a, i, l * l], c[b, first:, l * l], out=block)
                for m in range(l * l + 1, (l + 1) ** 2):
                    block.addcmul_(c[a, i, m], c[b, first:, m])
                row += n - first
    return out


def describe_grid(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams = PAPER_V1,
                  device: str | None = None, dtype: torch.dtype = torch.float32,
                  max_chunk_mb: float = 256.0, compiled: bool | None = None) -> np.ndarray:
    """Descriptor on every point of the grid: a numpy array (N1, N2, N3, n_features)."""
    out = np.empty((math.prod(shape), params.n_features), dtype=np.float64 if dtype == torch.float64 else np.float32)
    for idx, feats in iter_describe_grid(structure, shape, params, device, dtype, max_chunk_mb, compiled=compiled):
        out[idx] = feats.cpu().numpy()
    return out.reshape(*shape, -1)
