"""The grid descriptor: a SOAP-like power spectrum of the H atoms around every point of a grid.

Pinned by ``../shared/notes/descriptor-spec.md`` ("paper-v1"). For a point v and every H atom i, of
every periodic image, within r_cut:
    g_n(r) = exp(−(r − μ_n)² / 2σ²) · ½(cos(π r / r_cut) + 1),   μ_n = linspace(0, r_cut, n_radial)
    c_nlm(v) = Σ_i g_n(r_vi) · Y_lm(r̂_vi)                       (real, orthonormal Y; l = 1 order y, z, x)
    P^l_nn'(v) = Σ_m c_nlm · c_n'lm,   n ≤ n', blocks l = 0 … l_max
Lengths in Å, points in fractional coordinates of ``structure.lattice``.

Computation: points are grouped into small spatial cells; a k-d tree over the periodic images of the H
atoms gives each group its candidate neighbours (so the cost grows with neighbours, not with
atoms × points), and each chunk of groups becomes one batched tensor computation in PyTorch, on the
CPU or on CUDA. Chunks are sized to a memory cap, so no grid is ever held whole as features.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
from pymatgen.core import Structure
from scipy.spatial import cKDTree

GROUP_A = 0.3  # edge of the spatial cells that group points (Å)


@dataclass(frozen=True)
class DescriptorParams:
    """Descriptor parameters; ``sigma_a`` defaults to 0.75·r_cut/(n_radial − 1) as the spec pins."""

    r_cut_a: float = 3.0
    n_radial: int = 10
    l_max: int = 2
    sigma_a: float | None = None
    species: tuple[str, ...] = ("H",)
    name: str = "paper-v1"

    @property
    def sigma(self) -> float:
        return self.sigma_a if self.sigma_a is not None else 0.75 * self.r_cut_a / (self.n_radial - 1)

    @property
    def n_features(self) -> int:
        return (self.l_max + 1) * self.n_radial * (self.n_radial + 1) // 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sigma_a"] = self.sigma
        d["species"] = list(self.species)
        d["n_features"] = self.n_features
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorParams":
        return cls(r_cut_a=float(d["r_cut_a"]), n_radial=int(d["n_radial"]), l_max=int(d["l_max"]),
                   sigma_a=float(d["sigma_a"]), species=tuple(d["species"]), name=str(d.get("name", "custom")))


PAPER_V1 = DescriptorParams()


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


def _images(structure: Structure, species: tuple[str, ...], reach_a: float) -> np.ndarray:
    """Cartesian positions (Å) of the atoms of ``species`` and all their images that can lie within
    ``reach_a`` of a point of the unit cell."""
    lattice = structure.lattice.matrix
    sites = np.array([site.frac_coords % 1.0 for site in structure if site.specie.symbol in species]).reshape(-1, 3)
    recip = np.linalg.norm(np.linalg.inv(lattice), axis=0)  # 1/(plane spacing) per lattice direction
    n = np.ceil(reach_a * recip).astype(int) + 1  # atoms and points both lie anywhere in [0, 1)
    shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), -1).reshape(-1, 3)
    return ((sites[None, :, :] + shifts[:, None, :]).reshape(-1, 3)) @ lattice


def iter_describe(structure: Structure, frac_points: np.ndarray, params: DescriptorParams = PAPER_V1,
                  device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                  max_chunk_mb: float = 256.0) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, features)`` chunks covering every point once: ``features`` (len(indices),
    n_features) is a tensor on ``device`` for ``frac_points[indices]``. Memory per chunk stays near
    ``max_chunk_mb``."""
    dev = pick_device(str(device) if device is not None else None)
    frac = np.asarray(frac_points, dtype=float).reshape(-1, 3) % 1.0
    lattice = structure.lattice.matrix
    cart = frac @ lattice
    rc = params.r_cut_a
    # group points into small cells (Å), sorted so each group is contiguous
    cell = np.floor(cart / GROUP_A).astype(np.int64)
    cell -= cell.min(axis=0)
    span = cell.max(axis=0) + 1
    key = (cell[:, 0] * span[1] + cell[:, 1]) * span[2] + cell[:, 2]
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(key[order]) != 0])
    sizes = np.diff(np.r_[starts, len(order)])
    lo = np.minimum.reduceat(cart[order], starts, axis=0)
    hi = np.maximum.reduceat(cart[order], starts, axis=0)
    centres = (lo + hi) / 2
    radii = np.linalg.norm(hi - lo, axis=1) / 2
    atoms = _images(structure, params.species, rc + GROUP_A * math.sqrt(3))
    tree = cKDTree(atoms) if len(atoms) else None
    neighbours = tree.query_ball_point(centres, radii + rc) if tree is not None else [[] for _ in centres]
    n_nb = np.array([len(nb) for nb in neighbours])

    mu = torch.linspace(0.0, rc, params.n_radial, dtype=dtype, device=dev)
    triu = torch.triu_indices(params.n_radial, params.n_radial, device=dev)
    far = 10.0 * rc + float(np.abs(cart).max(initial=0.0)) + 1.0
    bytes_per_pair = (3 + 2 * params.n_radial + 2 * (params.l_max + 1) ** 2 + 8) * torch.finfo(dtype).bits // 8
    g = 0
    while g < len(starts):
        # take groups while the padded pair tensor fits the memory cap
        h, p_max, k_max = g, 0, 1
        while h < len(starts):
            p2, k2 = max(p_max, sizes[h]), max(k_max, n_nb[h])
            if h > g and (h + 1 - g) * p2 * k2 * bytes_per_pair > max_chunk_mb * 2**20:
                break
            p_max, k_max, h = p2, k2, h + 1
        n_groups = h - g
        pts = np.zeros((n_groups, p_max, 3))
        valid = np.zeros((n_groups, p_max), dtype=bool)
        nbr = np.full((n_groups, k_max, 3), far)
        for q in range(n_groups):
            idx = order[starts[g + q] : starts[g + q] + sizes[g + q]]
            pts[q, : len(idx)] = cart[idx]
            valid[q, : len(idx)] = True
            if n_nb[g + q]:
                nbr[q, : n_nb[g + q]] = atoms[neighbours[g + q]]
        feats = _power_spectrum(torch.as_tensor(pts, dtype=dtype, device=dev), torch.as_tensor(nbr, dtype=dtype, device=dev),
                                params, mu, triu)
        mask = torch.as_tensor(valid.ravel(), device=dev)
        idx = np.concatenate([order[starts[g + q] : starts[g + q] + sizes[g + q]] for q in range(n_groups)])
        yield idx, feats.reshape(-1, params.n_features)[mask]
        g = h


def _power_spectrum(pts: torch.Tensor, nbr: torch.Tensor, params: DescriptorParams, mu: torch.Tensor,
                    triu: torch.Tensor) -> torch.Tensor:
    """Features (G, P, n_features) for points (G, P, 3) and their groups' candidate atoms (G, K, 3)."""
    rc = params.r_cut_a
    d = nbr[:, None, :, :] - pts[:, :, None, :]  # (G, P, K, 3)
    r = torch.linalg.vector_norm(d, dim=-1)
    cutoff = torch.where(r <= rc, 0.5 * (torch.cos(math.pi / rc * r) + 1.0), torch.zeros_like(r))
    radial = torch.exp(-((r[..., None] - mu) ** 2) / (2 * params.sigma**2)) * cutoff[..., None]  # (G, P, K, n)
    near = r < 1e-8  # an atom on the point contributes to l = 0 only
    unit = d / torch.where(near, torch.ones_like(r), r)[..., None]
    ylm = real_spherical_harmonics(unit, params.l_max)
    if params.l_max > 0:
        ylm[..., 1:] = torch.where(near[..., None], torch.zeros_like(ylm[..., 1:]), ylm[..., 1:])
    g, p, k, n = radial.shape
    c = torch.bmm(radial.reshape(g * p, k, n).transpose(1, 2), ylm.reshape(g * p, k, -1))  # (GP, n, (l+1)²)
    blocks = []
    for l in range(params.l_max + 1):
        cl = c[:, :, l * l : (l + 1) * (l + 1)]
        blocks.append(torch.bmm(cl, cl.transpose(1, 2))[:, triu[0], triu[1]])
    return torch.cat(blocks, dim=1).reshape(g, p, -1)


def describe(structure: Structure, frac_points: np.ndarray, params: DescriptorParams = PAPER_V1,
             device: str | None = None, dtype: torch.dtype = torch.float32, max_chunk_mb: float = 256.0) -> np.ndarray:
    """Descriptor at fractional points (n, 3) of ``structure``: a numpy array (n, n_features)."""
    frac_points = np.asarray(frac_points, dtype=float).reshape(-1, 3)
    out = np.empty((len(frac_points), params.n_features), dtype=np.float64 if dtype == torch.float64 else np.float32)
    for idx, feats in iter_describe(structure, frac_points, params, device, dtype, max_chunk_mb):
        out[idx] = feats.cpu().numpy()
    return out
