"""The grid descriptor: a SOAP-like power spectrum of the H atoms around every point of a grid.

Pinned by ``../shared/notes/descriptor-spec.md`` ("paper-v1"). For a point v and every H atom i, of
every periodic image, within r_cut:
    g_n(r) = exp(−(r − μ_n)² / 2σ²) · ½(cos(π r / r_cut) + 1),   μ_n = linspace(0, r_cut, n_radial)
    c_nlm(v) = Σ_i g_n(r_vi) · Y_lm(r̂_vi)                       (real, orthonormal Y; l = 1 order y, z, x)
    P^l_nn'(v) = Σ_m c_nlm · c_n'lm,   n ≤ n', blocks l = 0 … l_max
Lengths in Å, points in fractional coordinates of ``structure.lattice``. The species-aware "hydride-v2"
adds element-property density channels and smooth kernels instead (``radial_functions``, ``solid_scale``;
docs/DESCRIPTOR.md).

Computation: points are grouped into small spatial cells; a k-d tree over the periodic images of the H
atoms gives each group its candidate neighbours (so the cost grows with neighbours, not with
atoms × points); each chunk of points becomes a few batched tensor operations in PyTorch, on the CPU
or on CUDA. Y_lm is not evaluated per pair: the radial functions are contracted with the monomials of
the unit vector, Σ_i g_n(r_i)·mono(r̂_i), and a constant matrix turns monomials into real harmonics.
Chunks are sized to a memory cap, so no grid is ever held whole as features.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
from pymatgen.core import Structure
from scipy.spatial import cKDTree

from elfscreen.model.elements import PROPERTIES, PROPERTY_NAMES, UnsupportedElementError, embedding

GROUP_A = 0.3  # edge of the spatial cells that group points (Å)
KERNELS = ("gaussian", "solid")  # the radial × angular kernels (``radial_functions``)


@dataclass(frozen=True)
class DescriptorParams:
    """Descriptor parameters; ``sigma_a`` defaults to 0.75·r_cut/(n_radial − 1) as the spec pins.

    Without ``embedding`` (paper-v1) the atoms of ``species`` form one density channel, all of weight 1.
    With ``embedding`` (names from ``model.elements.PROPERTY_NAMES``) there are 1 + len(embedding)
    channels: H atoms (weight 1), then one channel per property in which every other atom weighs its
    element's property; ``species`` lists the elements allowed (any other is an
    :class:`UnsupportedElementError`). Power spectra: each channel with itself (n ≤ n') and H with each
    property channel (all n, n'); see ``channel_pairs`` and docs/DESCRIPTOR.md. ``kernel`` (``KERNELS``):
    "gaussian", the spec's g_n(r)·Y_lm(r̂), or "solid", smooth everywhere (``radial_functions``).
    """

    r_cut_a: float = 3.0
    n_radial: int = 10
    l_max: int = 2
    sigma_a: float | None = None
    species: tuple[str, ...] = ("H",)
    name: str = "paper-v1"
    embedding: tuple[str, ...] = ()
    kernel: str = "gaussian"

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"descriptor kernel {self.kernel!r}: expected one of {', '.join(KERNELS)}")

    @property
    def sigma(self) -> float:
        return self.sigma_a if self.sigma_a is not None else 0.75 * self.r_cut_a / (self.n_radial - 1)

    @property
    def n_channels(self) -> int:
        return 1 + len(self.embedding)

    @property
    def channel_pairs(self) -> tuple[tuple[int, int], ...]:
        """(a, b) channel pairs of the power spectrum, in feature order within each l block."""
        a = range(self.n_channels)
        return tuple((c, c) for c in a) + tuple((0, c) for c in a if c)

    @property
    def n_features(self) -> int:
        n = self.n_radial
        per_l = sum(n * (n + 1) // 2 if a == b else n * n for a, b in self.channel_pairs)
        return (self.l_max + 1) * per_l

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sigma_a"] = self.sigma
        d["species"] = list(self.species)
        d["embedding"] = list(self.embedding)
        d["n_features"] = self.n_features
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorParams":
        return cls(r_cut_a=float(d["r_cut_a"]), n_radial=int(d["n_radial"]), l_max=int(d["l_max"]),
                   sigma_a=float(d["sigma_a"]), species=tuple(d["species"]), name=str(d.get("name", "custom")),
                   embedding=tuple(d.get("embedding", ())), kernel=str(d.get("kernel", "gaussian")))


PAPER_V1 = DescriptorParams()
# species-aware: H + two element-property channels, 7 smooth ("solid") radial functions (σ 0.375 Å), 546 features
HYDRIDE_V2 = DescriptorParams(n_radial=7, species=tuple(PROPERTIES), name="hydride-v2", embedding=PROPERTY_NAMES,
                              kernel="solid")
# hydride-v2 with l ≤ 3: 728 features; measured better on held-out φ than l ≤ 2 or r_cut 4 Å (bench/capacity.py)
HYDRIDE_V3 = replace(HYDRIDE_V2, l_max=3, name="hydride-v3")
DESCRIPTORS = {p.name: p for p in (PAPER_V1, HYDRIDE_V2, HYDRIDE_V3)}


def atom_channels(structure: Structure, params: DescriptorParams) -> tuple[np.ndarray, np.ndarray | None]:
    """Fractional positions in [0, 1) of the atoms the descriptor sees, and their channel weights
    (n_atoms, n_channels), or None for paper-v1's single channel of weight 1. Raises
    :class:`UnsupportedElementError` for an element outside a species-aware descriptor's table."""
    symbols = [site.specie.symbol for site in structure]
    frac = np.array([site.frac_coords for site in structure], dtype=float).reshape(-1, 3) % 1.0
    if not params.embedding:
        keep = np.array([s in params.species for s in symbols], dtype=bool)
        return frac[keep], None
    unknown = sorted(set(symbols) - set(params.species))
    if unknown:
        raise UnsupportedElementError(f"structure {structure.composition.reduced_formula}", unknown, params.species)
    weights = np.zeros((len(symbols), params.n_channels))
    for i, s in enumerate(symbols):
        if s == "H":
            weights[i, 0] = 1.0
        else:
            weights[i, 1:] = embedding(s, params.embedding)
    return frac, weights


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def real_spherical_harmonics(unit: torch.Tensor, l_max: int) -> torch.Tensor:
    """Orthonormal real spherical harmonics of unit vectors (..., 3) → (..., (l_max+1)²), m = −l … l.

    Y_l0 ∝ P_l(z); Y_l,±m ∝ P̃_l^m(z)·Re/Im (x + iy)^m, with P̃_l^m = P_l^m / sin^m θ (no Condon–Shortley
    phase), so l = 1 gives (y, z, x)·√(3/4π).
    """
    x, y, z = unit[..., 0], unit[..., 1], unit[..., 2]
    # Re/Im of (x + iy)^m
    re = [torch.ones_like(x)]
    im = [torch.zeros_like(x)]
    for _ in range(l_max):
        re.append(re[-1] * x - im[-1] * y)
        im.append(re[-2] * y + im[-1] * x)
    out = [None] * ((l_max + 1) ** 2)
    for m in range(l_max + 1):
        # P̃_m^m = (2m − 1)!!, P̃_{m+1}^m = (2m + 1)·z·P̃_m^m, then the upward recurrence in l
        p = {m: torch.full_like(z, float(math.prod(range(1, 2 * m, 2))))}
        if m + 1 <= l_max:
            p[m + 1] = (2 * m + 1) * z * p[m]
        for l in range(m + 2, l_max + 1):
            p[l] = ((2 * l - 1) * z * p[l - 1] - (l + m - 1) * p[l - 2]) / (l - m)
        for l in range(m, l_max + 1):
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
            if m == 0:
                out[l * l + l] = norm * p[l]
            else:
                out[l * l + l + m] = math.sqrt(2) * norm * p[l] * re[m]
                out[l * l + l - m] = math.sqrt(2) * norm * p[l] * im[m]
    return torch.stack(out, dim=-1)


def _images(lattice: np.ndarray, sites: np.ndarray, reach_a: float) -> np.ndarray:
    """Cartesian positions (Å) of the atoms at fractional ``sites`` (in [0, 1)) and all their images that
    can lie within ``reach_a`` of a point of the unit cell; image-major, so site i of image s is row
    s·len(sites) + i."""
    recip = np.linalg.norm(np.linalg.inv(lattice), axis=0)  # 1/(plane spacing) per lattice direction
    n = np.ceil(reach_a * recip).astype(int) + 1  # atoms and points both lie anywhere in [0, 1)
    shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), -1).reshape(-1, 3)
    return ((sites[None, :, :] + shifts[:, None, :]).reshape(-1, 3)) @ lattice


@lru_cache(maxsize=None)
def _monomials(l_max: int) -> tuple[tuple[int, int, int], ...]:
    """Exponents (a, b, c) of x^a·y^b·z^c, homogeneous of degree l, for l = 0 … l_max."""
    return tuple((a, b, l - a - b) for l in range(l_max + 1) for a in range(l, -1, -1) for b in range(l - a, -1, -1))


@lru_cache(maxsize=None)
def _harmonics_from_monomials(l_max: int) -> np.ndarray:
    """W (n_monomials, (l_max+1)²) with Y_lm(u) = monomials(u) @ W for unit u, Y_l built from the
    degree-l monomials only. Exact (a homogeneous polynomial is fixed by its values on the sphere), and
    u = 0 (an atom on the point) gives Y_l>0 = 0 by itself."""
    mons = _monomials(l_max)
    u = np.random.default_rng(0).normal(size=(400, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    y = real_spherical_harmonics(torch.as_tensor(u), l_max).numpy()
    m = np.stack([u[:, 0] ** a * u[:, 1] ** b * u[:, 2] ** c for a, b, c in mons], axis=1)
    w = np.zeros((len(mons), (l_max + 1) ** 2))
    for l in range(l_max + 1):
        rows = [i for i, e in enumerate(mons) if sum(e) == l]
        w[rows, l * l : (l + 1) ** 2] = np.linalg.lstsq(m[:, rows], y[:, l * l : (l + 1) ** 2], rcond=None)[0]
    return w


def _monomial_planes(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, l_max: int) -> torch.Tensor:
    """(p, n_monomials, K) from the unit-vector components, each (p, K)."""
    powers = [[None, v] for v in (x, y, z)]
    for v in powers:
        for _ in range(2, l_max + 1):
            v.append(v[-1] * v[1])
    out = []
    for exps in _monomials(l_max):
        factors = [powers[axis][e] for axis, e in enumerate(exps) if e]
        term = factors[0] if factors else torch.ones_like(x)
        for f in factors[1:]:
            term = term * f
        out.append(term)
    return torch.stack(out, dim=1)


def smooth_step(t):
    """C³ step from 0 (t ≤ 0) to 1 (t ≥ 1): 35t⁴ − 84t⁵ + 70t⁶ − 20t⁷ of t clipped to [0, 1] (numpy or torch)."""
    t = t.clip(0, 1) if isinstance(t, np.ndarray) else t.clamp(0, 1)
    return t**4 * (35 + t * (-84 + t * (70 - 20 * t)))


def radial_functions(r: torch.Tensor, params: DescriptorParams) -> torch.Tensor:
    """The radial functions (…, n_radial) at distances ``r`` (…) in Å, μ_n = linspace(0, r_cut, n_radial):
    "gaussian" g_n(r) = e^{−(r − μ_n)²/2σ²}·½(cos(πr/r_cut) + 1) (0 beyond r_cut);
    "solid" γ_n(r) = ½(e^{−(r − μ_n)²/2σ²} + e^{−(r + μ_n)²/2σ²})·f(r), f = 1 − smooth_step((r − r_cut/3) /
    (2 r_cut/3)): even in r and flat at 0, so γ_n(|x|)·|x|^l·Y_lm is smooth in x (see ``solid_scale``)."""
    mu = torch.linspace(0.0, params.r_cut_a, params.n_radial, dtype=r.dtype, device=r.device)
    x = r[..., None]
    shell = ((x - mu).square() * (-0.5 / params.sigma**2)).exp()
    rc = params.r_cut_a
    if params.kernel == "solid":
        mirror = ((x + mu).square() * (-0.5 / params.sigma**2)).exp()
        return 0.5 * (shell + mirror) * (1 - smooth_step((x - rc / 3) * (1.5 / rc)))
    return shell * torch.where(x <= rc, 0.5 * torch.cos(x * (math.pi / rc)) + 0.5,
                               torch.zeros((), dtype=r.dtype, device=r.device))


def solid_scale(params: DescriptorParams) -> np.ndarray:
    """(n_radial, l_max + 1): ρ_n^{−l}, the "solid" kernel's K_nlm(x) = γ_n(|x|)·(|x|/ρ_n)^l·Y_lm(x̂), with
    ρ_n = μ_n (ρ_0 = σ), so that g_nl = γ_n·(r/ρ_n)^l is near γ_n on its shell; all ones for "gaussian"."""
    if params.kernel != "solid":
        return np.ones((params.n_radial, params.l_max + 1))
    mu = np.linspace(0.0, params.r_cut_a, params.n_radial)
    rho = np.where(mu > 0, mu, params.sigma)
    return rho[:, None] ** -np.arange(params.l_max + 1)[None, :]


def iter_describe(structure: Structure, frac_points: np.ndarray, params: DescriptorParams = PAPER_V1,
                  device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                  max_chunk_mb: float = 256.0, chunk_points: int = 2048) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, features)`` chunks covering every point once: ``features`` (len(indices),
    n_features) is a tensor on ``device`` for ``frac_points[indices]``. Chunks hold at most
    ``chunk_points`` points and stay near ``max_chunk_mb`` of working memory."""
    dev = pick_device(str(device) if device is not None else None)
    frac = np.asarray(frac_points, dtype=float).reshape(-1, 3) % 1.0
    if not len(frac):
        return
    cart = frac @ structure.lattice.matrix
    rc = params.r_cut_a
    # group points into small cells (Å), sorted so each group is contiguous
    cell = np.floor(cart / GROUP_A).astype(np.int64)
    cell -= cell.min(axis=0)
    span = cell.max(axis=0) + 1
    key = (cell[:, 0] * span[1] + cell[:, 1]) * span[2] + cell[:, 2]
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(key[order]) != 0])
    sizes = np.diff(np.r_[starts, len(order)])
    sorted_cart = cart[order]
    lo = np.minimum.reduceat(sorted_cart, starts, axis=0)
    hi = np.maximum.reduceat(sorted_cart, starts, axis=0)
    centres, radii = (lo + hi) / 2, np.linalg.norm(hi - lo, axis=1) / 2
    # candidate atoms of each group: every image within r_cut of some point of the group
    sites, weights = atom_channels(structure, params)
    atoms = _images(structure.lattice.matrix, sites, rc + GROUP_A * math.sqrt(3))
    n_atoms = len(atoms)
    far = 10.0 * rc + float(np.abs(cart).max()) + 1.0
    atoms = np.vstack([atoms, [[far, far, far]]])  # index n_atoms pads neighbour lists, out of reach
    lists = cKDTree(atoms[:n_atoms]).query_ball_point(centres, radii + rc) if n_atoms else [[] for _ in centres]
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    neighbours = np.full((len(lists), max(1, int(counts.max()))), n_atoms, dtype=np.int64)
    if counts.sum():
        rows = np.repeat(np.arange(len(lists)), counts)
        cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        neighbours[rows, cols] = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])

    group_of = torch.as_tensor(np.repeat(np.arange(len(starts)), sizes), device=dev)
    atoms_t = torch.as_tensor(atoms.T.copy(), dtype=dtype, device=dev)  # (3, n_atoms + 1)
    points_t = torch.as_tensor(sorted_cart.T.copy(), dtype=dtype, device=dev)  # (3, n_points)
    neighbours_t = torch.as_tensor(neighbours, device=dev)
    counts_t = torch.as_tensor(counts, device=dev)
    to_harmonics = torch.as_tensor(_harmonics_from_monomials(params.l_max), dtype=dtype, device=dev)
    n, n_ch = params.n_radial, params.n_channels
    if weights is not None:  # per image (image-major, as _images), a zero row for the padding atom
        weights_t = torch.as_tensor(np.vstack([np.tile(weights, (n_atoms // max(1, len(sites)), 1)),
                                               np.zeros((1, n_ch))]), dtype=dtype, device=dev)
    bytes_per_point = (neighbours.shape[1] * (9 + 2 * n * n_ch + 2 * to_harmonics.shape[0] + n_ch)
                       * torch.finfo(dtype).bits // 8)
    step = max(1, min(chunk_points, int(max_chunk_mb * 2**20 // max(1, bytes_per_point))))
    for a in range(0, len(order), step):
        b = min(len(order), a + step)
        p = b - a
        groups = group_of[a:b]
        k = int(counts_t[groups].max())
        cand = neighbours_t.index_select(0, groups)[:, :k].reshape(-1)
        d = atoms_t.index_select(1, cand).view(3, p, k) - points_t[:, a:b, None]  # (3, p, K)
        w = None if weights is None else weights_t.index_select(0, cand).view(p, k, n_ch).transpose(1, 2)
        yield order[a:b], power_spectrum(coefficients(d, w, params, to_harmonics), params)


def coefficients(d: torch.Tensor, w: torch.Tensor | None, params: DescriptorParams,
                 to_harmonics: torch.Tensor) -> torch.Tensor:
    """c_nlm (p, n_channels·n_radial, (l_max+1)²) from the displacements ``d`` (3, p, K) in Å from each
    point to its K candidate atoms (atoms beyond r_cut contribute 0) and, for a species-aware
    descriptor, the atoms' channel weights ``w`` (p, n_channels, K). Differentiable in ``d`` (no
    in-place operation on a tensor autograd needs), so :mod:`elfscreen.model.adaptive` takes gradients
    and Hessians of the ELF through it."""
    n, p, k = params.n_radial, d.shape[1], d.shape[2]
    dx, dy, dz = d[0], d[1], d[2]
    r = (dx * dx + dy * dy + dz * dz).sqrt()
    # clamping keeps padding atoms out of exp()'s slow path; their cutoff weight is 0 anyway
    radial = radial_functions(r.clamp(max=params.r_cut_a), params).transpose(1, 2)  # (p, n, K)
    if w is not None:  # (p, n_ch·n, K): channel a's radial functions times each atom's weight
        radial = (w[:, :, None, :] * radial[:, None, :, :]).reshape(p, w.shape[1] * n, k)
    if params.kernel == "solid":  # r^l·Y_lm(r̂) are the monomials of d itself, smooth where an atom is
        mono = _monomial_planes(dx, dy, dz, params.l_max)
        scale = torch.as_tensor(solid_scale(params), dtype=d.dtype, device=d.device)  # (n, l_max + 1)
        per_lm = scale[:, [l for l in range(params.l_max + 1) for _ in range(2 * l + 1)]]
        return (torch.bmm(radial, mono.transpose(1, 2)) @ to_harmonics) * per_lm.repeat(radial.shape[1] // n, 1)
    zero = torch.zeros((), dtype=d.dtype, device=d.device)
    inv_r = torch.where(r >= 1e-8, 1.0 / r.clamp(min=1e-8), zero)  # an atom on the point: l = 0 only
    mono = _monomial_planes(dx * inv_r, dy * inv_r, dz * inv_r, params.l_max)  # (p, n_mono, K)
    return torch.bmm(radial, mono.transpose(1, 2)) @ to_harmonics  # (p, n_ch·n, (l_max+1)²)


def power_spectrum(c: torch.Tensor, params: DescriptorParams) -> torch.Tensor:
    """Features (p, n_features) from coefficients c (p, n_channels·n_radial, (l_max+1)²), channel-major:
    blocks l = 0 … l_max, within each the channel pairs of ``params.channel_pairs`` (same channel:
    n ≤ n' row-major upper triangle; two channels: all n, n' row-major)."""
    p, n = c.shape[0], params.n_radial
    triu = torch.triu_indices(n, n)
    flat_triu = (triu[0] * n + triu[1]).to(c.device)
    blocks = []
    for l in range(params.l_max + 1):
        cl = c[:, :, l * l : (l + 1) ** 2]
        for a, b in params.channel_pairs:
            ca = cl[:, a * n : (a + 1) * n]
            if a == b:
                blocks.append(torch.bmm(ca, ca.transpose(1, 2)).view(p, -1).index_select(1, flat_triu))
            else:
                blocks.append(torch.bmm(ca, cl[:, b * n : (b + 1) * n].transpose(1, 2)).reshape(p, -1))
    return torch.cat(blocks, dim=1)


def describe(structure: Structure, frac_points: np.ndarray, params: DescriptorParams = PAPER_V1,
             device: str | None = None, dtype: torch.dtype = torch.float32, max_chunk_mb: float = 256.0) -> np.ndarray:
    """Descriptor at fractional points (n, 3) of ``structure``: a numpy array (n, n_features)."""
    frac_points = np.asarray(frac_points, dtype=float).reshape(-1, 3)
    out = np.empty((len(frac_points), params.n_features), dtype=np.float64 if dtype == torch.float64 else np.float32)
    for idx, feats in iter_describe(structure, frac_points, params, device, dtype, max_chunk_mb):
        out[idx] = feats.cpu().numpy()
    return out
