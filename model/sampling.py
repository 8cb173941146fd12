"""Sampling a periodic grid between its nodes: values at points, coarser grids, and planar slices.

The grid follows elfscreen's convention (``values[i, j, k]`` at fractional ``(i/N1, j/N2, k/N3)``).
Sampling is trilinear between the 8 surrounding nodes, wrapping periodically; it is meant for pictures
(a slice, a coarser grid for an isosurface), not for φ, which comes from the Fourier interpolant
(:mod:`elfscreen.model.fourier`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elfscreen.model.fourier import FourierField


def trilinear(values: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """The periodic trilinear interpolant of ``values`` (N1, N2, N3) at fractional points ``frac`` (..., 3)."""
    frac = np.asarray(frac, dtype=float)
    shape = np.array(values.shape)
    x = (frac % 1.0) * shape
    base = np.floor(x).astype(np.int64)
    w = x - base
    out = np.zeros(frac.shape[:-1])
    for corner in np.ndindex(2, 2, 2):
        idx = (base + corner) % shape
        weight = np.prod(np.where(corner, w, 1.0 - w), axis=-1)
        out += weight * values[idx[..., 0], idx[..., 1], idx[..., 2]]
    return out


def resample(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``values`` on another periodic grid of ``shape`` over the same cell (trilinear)."""
    frac = np.stack(np.meshgrid(*(np.arange(n) / n for n in shape), indexing="ij"), axis=-1)
    return trilinear(values, frac)


@dataclass
class Plane:
    """A plane through ``origin`` (Cartesian Å) spanned by the orthonormal ``u`` and ``v`` (Cartesian);
    ``kind`` says how it was chosen."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    kind: str

    def to_plane(self, cart: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """In-plane coordinates (..., 2) in Å of Cartesian points, and their distance (...) from the plane."""
        d = np.asarray(cart, dtype=float) - self.origin
        normal = np.cross(self.u, self.v)
        return np.stack([d @ self.u, d @ self.v], axis=-1), np.abs(d @ normal)


def saddle_plane(values: np.ndarray, lattice: np.ndarray, frac: np.ndarray) -> Plane:
    """The plane through a bond saddle at fractional ``frac`` that shows it as a saddle: spanned by the
    Hessian's eigenvector of positive curvature (along the bond: the field rises towards both maxima) and
    the eigenvector of the weaker negative curvature (across the bond, where the field falls slowest).
    The Hessian is the periodic Fourier interpolant's. Falls back to the cell's a and b axes through the
    point (``kind`` "ab") when it is not a (3, −1) saddle there (exactly one positive curvature)."""
    lattice = np.asarray(lattice, dtype=float)
    frac = np.asarray(frac, dtype=float)
    origin = frac @ lattice
    _, _, hessian = FourierField(values, lattice).gradient_hessian(frac[None])
    eigenvalues, vectors = np.linalg.eigh(hessian[0])  # ascending
    if eigenvalues[2] > 0 > eigenvalues[1]:
        return Plane(origin, vectors[:, 2], vectors[:, 1], "bond")
    return Plane(origin, *_ab_axes(lattice), "ab")


def cell_plane(lattice: np.ndarray) -> Plane:
    """The plane through the cell's centre spanned by its a and b axes (orthonormalised)."""
    lattice = np.asarray(lattice, dtype=float)
    return Plane(lattice.sum(axis=0) / 2, *_ab_axes(lattice), "ab")


def _ab_axes(lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along a, and along the part of b perpendicular to a."""
    u = lattice[0] / np.linalg.norm(lattice[0])
    v = lattice[1] - (lattice[1] @ u) * u
    return u, v / np.linalg.norm(v)


def slice_values(values: np.ndarray, lattice: np.ndarray, plane: Plane, half_width_a: float, n: int) -> np.ndarray:
    """The field on an ``n`` × ``n`` square of the plane, ``half_width_a`` Å each side of its origin:
    ``out[r, c]`` at ``origin + x_c u + y_r v`` with ``x, y = linspace(-half_width_a, half_width_a, n)``
    (row 0 at the lowest y). Periodic images fill whatever lies outside the cell."""
    s = np.linspace(-half_width_a, half_width_a, n)
    x, y = np.meshgrid(s, s)  # (rows = y, columns = x)
    cart = plane.origin + x[..., None] * plane.u + y[..., None] * plane.v
    return trilinear(values, cart @ np.linalg.inv(np.asarray(lattice, dtype=float)))
