"""The periodic Fourier interpolant of a grid, and Newton refinement of its critical points.

A plane-wave code computes the ELF on its FFT grid, so the natural continuous field behind a grid is
its trigonometric interpolant f(x) = Σ_k c_k exp(2πi k·x) (x fractional; for even N the Nyquist
term is taken as a cosine so that f stays real). Evaluating f, its gradient and Hessian at P points
costs O(V·P) with three real contractions, one per axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK = 64  # points per contraction; bounds the memory of the first contraction


@dataclass
class CriticalPoint:
    """A stationary point of the interpolant: ``frac`` position, ``value``, Hessian eigenvalues
    (Cartesian, per Å²) and whether Newton converged to the requested kind near its start."""

    frac: np.ndarray
    value: float
    eigenvalues: np.ndarray
    refined: bool


class SmoothField:
    """A smooth periodic field on a cell with ``lattice`` (3×3 rows, Å) and ``inv`` (its inverse) whose
    subclasses give :meth:`gradient_hessian`; :meth:`refine` finds its critical points by Newton."""

    lattice: np.ndarray
    inv: np.ndarray

    def gradient_hessian(self, frac: np.ndarray):
        """Value (P,), Cartesian gradient (P, 3) per Å and Hessian (P, 3, 3) per Å² at fractional points."""
        raise NotImplementedError

    def refine(self, frac: np.ndarray, start_values: np.ndarray, n_negative: np.ndarray, max_shift_a: float,
               max_iter: int = 40) -> list[CriticalPoint]:
        """Newton on ∇f from each fractional start point (P, 3) to a stationary point.

        A point counts as ``refined`` when Newton converged within ``max_shift_a`` Å of its start and
        the Hessian has ``n_negative[p]`` negative eigenvalues (3: maximum, 2: bond saddle);
        otherwise the start is kept with ``start_values[p]``.
        """
        start = np.atleast_2d(np.asarray(frac, dtype=float))
        x = start.copy()
        step_cap = 0.25 * max_shift_a
        active = np.ones(len(x), dtype=bool)
        for _ in range(max_iter):
            if not active.any():
                break
            _, g, h = self.gradient_hessian(x[active])
            dr = -np.linalg.solve(h + 1e-12 * np.eye(3), g[..., None])[..., 0]
            norm = np.linalg.norm(dr, axis=1)
            dr *= np.minimum(1.0, step_cap / np.maximum(norm, 1e-300))[:, None]
            x[active] += dr @ self.inv
            idx = np.flatnonzero(active)
            active[idx[norm < 1e-7]] = False
        value, g, h = self.gradient_hessian(x)
        result = []
        for p in range(len(x)):
            eig = np.linalg.eigvalsh(h[p])
            shift = np.linalg.norm(((x[p] - start[p] + 0.5) % 1.0 - 0.5) @ self.lattice)
            ok = (not active[p]) and shift <= max_shift_a and int((eig < 0).sum()) == int(n_negative[p])
            if ok:
                result.append(CriticalPoint(x[p] % 1.0, float(value[p]), eig, True))
            else:
                result.append(CriticalPoint(start[p] % 1.0, float(start_values[p]), eig, False))
        return result


class FourierField(SmoothField):
    """Trigonometric interpolant of ``values`` (N1, N2, N3) on the cell ``lattice`` (3×3 rows, Å).

    f(x) = Σ_ijk values[i, j, k]·K1(x1, i)·K2(x2, j)·K3(x3, k), with K_a the periodic interpolation
    kernel of axis a (the Fourier basis transformed back to the nodes), so evaluation contracts the
    real grid values directly, one axis at a time.
    """

    def __init__(self, values: np.ndarray, lattice: np.ndarray):
        self.shape = values.shape
        self.values = np.ascontiguousarray(values, dtype=float)
        self.lattice = np.asarray(lattice, dtype=float)
        self.inv = np.linalg.inv(self.lattice)  # x_frac = r_cart @ inv

    @staticmethod
    def _axis_kernel(n: int, x: np.ndarray) -> np.ndarray:
        """(P, n, 3): the interpolation kernel of each node along one axis at x, and its first and
        second derivatives with respect to x."""
        k = np.fft.fftfreq(n, 1.0 / n)
        w = 2j * np.pi * k
        phase = np.exp(np.outer(x, w))  # (P, n)
        basis = np.stack([phase, phase * w, phase * w * w], axis=-1)
        if n % 2 == 0:  # Nyquist term as a real cosine (half of e^{+iπNx} + e^{−iπNx})
            q = np.pi * n
            c, s = np.cos(q * x), np.sin(q * x)
            basis[:, n // 2, 0] = c
            basis[:, n // 2, 1] = -q * s
            basis[:, n // 2, 2] = -q * q * c
        return (np.fft.fft(basis, axis=1) / n).real  # Σ_k basis_k(x)·e^{−2πik·i/n}

    def derivatives(self, frac: np.ndarray) -> np.ndarray:
        """(P, 3, 3, 3) array D[p, a, b, c] = ∂^a_x1 ∂^b_x2 ∂^c_x3 f at fractional points (P, 3)."""
        frac = np.atleast_2d(np.asarray(frac, dtype=float))
        n1, n2, n3 = self.shape
        out = np.empty((len(frac), 3, 3, 3))
        flat = self.values.reshape(n1 * n2, n3)
        for s in range(0, len(frac), _CHUNK):
            x = frac[s : s + _CHUNK]
            k1, k2, k3 = (self._axis_kernel(n, x[:, a]) for a, n in enumerate(self.shape))
            t = flat @ k3.transpose(1, 0, 2).reshape(n3, -1)  # (n1·n2, P·3)
            t = t.reshape(n1, n2, len(x), 3).transpose(2, 0, 3, 1) @ k2[:, None]  # (P, i, c, b)
            out[s : s + _CHUNK] = np.einsum("picb,pia->pabc", t, k1, optimize=True)
        return out

    def value(self, frac: np.ndarray) -> np.ndarray:
        return self.derivatives(frac)[:, 0, 0, 0]

    def gradient_hessian(self, frac: np.ndarray):
        """Value (P,), Cartesian gradient (P, 3) per Å and Hessian (P, 3, 3) per Å² at fractional points."""
        d = self.derivatives(frac)
        unit = np.eye(3, dtype=int)
        g = np.stack([d[:, u[0], u[1], u[2]] for u in unit], axis=-1)
        h = np.empty((len(d), 3, 3))
        for a in range(3):
            for b in range(3):
                idx = unit[a] + unit[b]
                h[:, a, b] = d[:, idx[0], idx[1], idx[2]]
        g_cart = g @ self.inv.T
        h_cart = self.inv @ h @ self.inv.T
        return d[:, 0, 0, 0], g_cart, h_cart
