"""Adaptive evaluation: the fine-grid topology of the model's ELF, paying for the model only near the events.

The predicted ELF is a smooth function of position (descriptor + network), not only a grid. The answer
we want is the one of a full fine grid (``FINE_SPACING_A``, 0.05 Å) with Newton refinement; here it is
computed as follows (``docs/ADAPTIVE.md``):

1. predict the coarse grid (``COARSE_SPACING_A``) and run the topology on it: the four event levels
   L (φ, φ_1D, φ_2D, φ*);
2. Fourier-upsample it to the fine grid: the estimate f̃. The model is evaluated exactly at a random
   sample of fine points, which gives a first estimate e of max |f − f̃|; the margin is m = 2·SAFETY·e;
3. evaluate the model exactly at every fine voxel with |f̃ − L| < m for some level L (the uncertain
   voxels); the others keep f̃. e grows to the largest |f − f̃| seen on any exactly evaluated voxel;
4. sweep the hybrid grid. **Certificate**: each event's grid value v lies within m − SAFETY·e of a level
   L. Then every voxel that kept f̃ is further than SAFETY·e from v, so f and f̃ are on the same side of
   every isovalue near v, the superlevel sets of the hybrid and of the exact fine grid are the same
   there, and the sweep's event (voxel and value) is the exact fine grid's. Otherwise the new values
   become levels, m grows with e, and step 3 is repeated; when more than ``MAX_UNCERTAIN`` of the grid
   would be evaluated, the whole fine grid is (no gain left, same answer);
5. refine each event on the model itself (:class:`ModelField`: Newton on its gradient with autograd
   through descriptor and network in float64; a bond saddle, where two pieces of {ELF ≥ t} join, is a
   (3, −1) critical point: two negative Hessian eigenvalues, one positive).

The certificate's one assumption is that SAFETY·e bounds |f − f̃| on the voxels never evaluated; e is
the largest error seen on the evaluated ones (which lie where the field crosses the levels).
"""
from __future__ import annotations

import copy
import math
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from pymatgen.core import Structure
from scipy.signal import resample
from scipy.spatial import cKDTree

from elfscreen.model.descriptor import (_harmonics_from_monomials, _images, atom_channels, coefficients,
                                        iter_describe, pick_device, power_spectrum)
from elfscreen.model.descriptor_grid import iter_describe_grid
from elfscreen.model.fourier import SmoothField
from elfscreen.model.network import ElfModel
from elfscreen.model.options import FINE_SPACING_A
from elfscreen.model.predict import (Prediction, describe_stream, grid_shape, member_outputs, predict_grid,
                                     use_grid_path)
from elfscreen.model.topology import Topology, analyze
from elfscreen.model.volumetric import ElfGrid

COARSE_RATIO = 2.0  # coarse / fine spacing (measured: 2 evaluates 5–16 % of the fine grid, 3 ~23 % of a fluid's)
COARSE_SPACING_A = COARSE_RATIO * FINE_SPACING_A
SAFETY = 1.5  # the error bound on voxels never evaluated: SAFETY × the largest error seen
MAX_UNCERTAIN = 0.3  # share of the fine grid above which the whole fine grid is evaluated
# the same for the member estimate: with M members, 1 + (M − 1)·share member evaluations per voxel against M
MEMBER_MAX_UNCERTAIN = 0.75
SAMPLE_POINTS = 2000  # random fine points evaluated for the first error bound
# above this share of the fine grid, its descriptor is computed whole (FFT) rather than at the points (direct);
# measured on one loaded core: FFT ≈ 7 µs per grid point, direct ≈ 80 µs per point
GRID_PATH_SHARE = 0.1
MAX_ROUNDS = 4
NETWORK_ROWS = 16384  # rows per network call (a few thousand selected rows per call ran at half the speed)
FEATURE_CACHE_MB = 1024.0  # the largest grid descriptor :func:`member_estimate_grid` keeps (≈ 1.6M points)


_FLOAT64_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # network → (weights' versions, copy)


def _float64_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A float64 CPU copy of ``net``, made once per network and state of its weights (a copy costs ~15 ms
    per member, on every screening otherwise); weights changed in place since (training) make a new one."""
    versions = tuple(t._version for t in net.parameters())
    kept = _FLOAT64_COPIES.get(net)
    if kept is None or kept[0] != versions:
        kept = _FLOAT64_COPIES[net] = (versions, copy.deepcopy(net).cpu().double().eval())
    return kept[1]


class ModelField(SmoothField):
    """The ensemble-mean ELF of ``model`` on ``structure`` at any point, in float64 with its Cartesian
    gradient (per Å) and Hessian (per Å²) by autograd through the descriptor and the network.
    Meant for a few hundred points at a time (saddles, maxima); grids go through ``predict``."""

    def __init__(self, structure: Structure, model: ElfModel, members: list[int] | None = None):
        self.params = params = model.descriptor
        self.lattice = structure.lattice.matrix.copy()
        self.inv = np.linalg.inv(self.lattice)
        sites, weights = atom_channels(structure, params)
        atoms = _images(self.lattice, sites, params.r_cut_a)
        self.n_atoms = len(atoms)
        self.tree = cKDTree(atoms) if len(atoms) else None
        far = 1e3 * (1.0 + float(np.abs(self.lattice).max()))
        self.atoms = torch.as_tensor(np.vstack([atoms, [[far, far, far]]]).T.copy(), dtype=torch.float64)
        self.weights = None if weights is None else torch.as_tensor(
            np.vstack([np.tile(weights, (len(atoms) // max(1, len(sites)), 1)), np.zeros((1, params.n_channels))]),
            dtype=torch.float64)
        self.to_harmonics = torch.as_tensor(_harmonics_from_monomials(params.l_max), dtype=torch.float64)
        self.mean = model.feature_mean.detach().cpu().double()
        self.std = model.feature_std.detach().cpu().double()
        chosen = range(len(model.members)) if members is None else members
        self.nets = [_float64_copy(model.members[k]) for k in chosen]

    def elf(self, cart: torch.Tensor) -> torch.Tensor:
        """ELF (P,) at Cartesian points (P, 3) in Å (a float64 tensor; differentiable)."""
        frac = cart.detach().numpy() @ self.inv
        shift = torch.as_tensor(np.floor(frac) @ self.lattice)
        inside = cart - shift  # the same point in the unit cell, where the images reach
        p = len(cart)
        if self.tree is None:
            lists = [[] for _ in range(p)]
        else:
            lists = self.tree.query_ball_point(inside.detach().numpy(), self.params.r_cut_a)
        k = max(1, max(len(x) for x in lists))
        cand = np.full((p, k), self.n_atoms, dtype=np.int64)
        for i, x in enumerate(lists):
            cand[i, : len(x)] = x
        cand_t = torch.as_tensor(cand.reshape(-1))
        d = self.atoms.index_select(1, cand_t).view(3, p, k) - inside.T[:, :, None]
        w = None
        if self.weights is not None:
            w = self.weights.index_select(0, cand_t).view(p, k, -1).transpose(1, 2)
        feats = power_spectrum(coefficients(d, w, self.params, self.to_harmonics), self.params)
        x = (feats - self.mean) / self.std
        return torch.stack([net(x) for net in self.nets]).mean(0)

    def refine(self, frac, start_values, n_negative, max_shift_a, max_iter: int = 15):
        """:meth:`SmoothField.refine` with 15 Newton steps at most: events converge in ≤ 6 from their
        voxel; a start still moving after 15 is a grid-noise point the model does not have, and is kept."""
        return super().refine(frac, start_values, n_negative, max_shift_a, max_iter)

    def value(self, frac: np.ndarray) -> np.ndarray:
        cart = torch.as_tensor(np.atleast_2d(frac) @ self.lattice, dtype=torch.float64)
        with torch.no_grad():
            return self.elf(cart).numpy()

    def gradient_hessian(self, frac: np.ndarray):
        """Value (P,), Cartesian gradient (P, 3) per Å and Hessian (P, 3, 3) per Å² at fractional points."""
        cart = torch.as_tensor(np.atleast_2d(frac) @ self.lattice, dtype=torch.float64).requires_grad_(True)
        f = self.elf(cart)
        (g,) = torch.autograd.grad(f.sum(), cart, create_graph=True)
        rows = [torch.autograd.grad(g[:, a].sum(), cart, retain_graph=a < 2)[0] for a in range(3)]
        h = torch.stack(rows, dim=1)
        return f.detach().numpy(), g.detach().numpy(), h.detach().numpy()


@dataclass
class AdaptiveGrid:
    """The hybrid grid (exact model values where ``exact``, the estimate elsewhere), the estimate's
    prediction and topology, and what the certificate used. ``estimate`` is the coarse prediction
    (:func:`adaptive_grid`) or, for :func:`member_estimate_grid`, the hybrid grid itself with each
    member's values (exact where ``exact``, member 0's elsewhere)."""

    grid: ElfGrid
    exact: np.ndarray
    estimate: Prediction
    estimate_topology: Topology
    levels: list[float]
    margin: float
    error: float
    rounds: int
    fallback: bool
    certified: bool
    timings_s: dict = field(default_factory=dict)
    kind: str = "coarse"

    @property
    def exact_share(self) -> float:
        return float(self.exact.mean())

    def summary(self) -> dict:
        return {"estimate": self.kind, "estimate_spacing_a": [round(s, 6) for s in self.estimate.grid.spacing_a],
                "shape": list(self.grid.shape), "exact_share": round(self.exact_share, 4),
                "margin": round(self.margin, 5), "error": round(self.error, 5), "rounds": self.rounds,
                "fallback": self.fallback, "certified": self.certified}


def upsample(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The periodic Fourier interpolant of ``values`` on a grid of ``shape`` (same cell)."""
    out = values
    for axis, n in enumerate(shape):
        if out.shape[axis] != n:
            out = resample(out, n, axis=axis)
    return np.asarray(out, dtype=np.float64)


def evaluate_points(structure: Structure, model: ElfModel, shape: tuple[int, int, int], flat: np.ndarray,
                    device: str | None = None, max_chunk_mb: float = 256.0) -> np.ndarray:
    """The model's ensemble-mean ELF at the fine-grid voxels ``flat`` (C-order indices of ``shape``), by
    the whole grid's FFT descriptor when they are many (its cost does not grow with them), else directly."""
    dev = pick_device(device)
    model.to(dev)
    out = np.empty(len(flat))
    if not len(flat):
        return out
    if len(flat) > GRID_PATH_SHARE * math.prod(shape) and use_grid_path(structure, shape, model.descriptor, dev):
        where = np.full(math.prod(shape), -1, dtype=np.int64)
        where[flat] = np.arange(len(flat))
        held, positions, count = [], [], 0  # the network runs on NETWORK_ROWS rows at a time, not per chunk

        def flush():
            out[np.concatenate(positions)] = member_outputs(model, torch.cat(held)).mean(axis=0)
            held.clear()
            positions.clear()

        for idx, feats in iter_describe_grid(structure, shape, model.descriptor, dev, max_chunk_mb=max_chunk_mb):
            pos = where[idx]
            keep = pos >= 0
            if keep.any():
                held.append(feats.index_select(0, torch.as_tensor(np.flatnonzero(keep), device=feats.device)))
                positions.append(pos[keep])
                count += int(keep.sum())
                if count >= NETWORK_ROWS:
                    flush()
                    count = 0
        if held:
            flush()
        return out
    frac = np.stack(np.unravel_index(flat, shape), axis=-1) / np.array(shape)
    for idx, feats in iter_describe(structure, frac, model.descriptor, dev, max_chunk_mb=max_chunk_mb):
        out[idx] = member_outputs(model, feats).mean(axis=0)
    return out


def adaptive_grid(structure: Structure, model: ElfModel, *, coarse_spacing_a: float = COARSE_SPACING_A,
                  fine_spacing_a: float = FINE_SPACING_A, fine_shape: tuple[int, int, int] | None = None,
                  device: str | None = None, name: str = "<structure>", seed: int = 0,
                  max_uncertain: float = MAX_UNCERTAIN) -> AdaptiveGrid:
    """The hybrid fine grid of the module docstring, certified (or fully evaluated when more than
    ``max_uncertain`` of it would be). ``fine_shape`` overrides ``fine_spacing_a``."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    coarse = predict_grid(structure, model, spacing_a=coarse_spacing_a, device=device, name=name)
    timings["coarse"] = time.perf_counter() - start
    start = time.perf_counter()
    coarse_topo = analyze(coarse.grid)
    shape = tuple(fine_shape) if fine_shape is not None else grid_shape(structure, fine_spacing_a)
    approx = upsample(coarse.grid.values, shape).ravel()
    timings["coarse_topology"] = time.perf_counter() - start
    start = time.perf_counter()
    certified = _certified_grid(structure, shape, name, approx, coarse_topo,
                                lambda flat: evaluate_points(structure, model, shape, flat, device), seed, max_uncertain)
    timings["fine"] = time.perf_counter() - start
    return AdaptiveGrid(estimate=coarse, estimate_topology=coarse_topo, timings_s=timings, **certified)


def member_estimate_grid(structure: Structure, model: ElfModel, shape: tuple[int, int, int], *,
                         device: str | None = None, name: str = "<structure>", seed: int = 0,
                         max_uncertain: float = MEMBER_MAX_UNCERTAIN) -> AdaptiveGrid:
    """The sweep events of the ensemble-mean grid of ``shape`` at about the cost of one member.

    The estimate f̃ is one member at every voxel: the member closest to the mean on a random sample of
    voxels (largest deviation 0.016–0.023 for the shipped model's members on a 64-atom cell). All members
    (their mean: the exact value) are evaluated only where the certificate of :func:`adaptive_grid`
    needs them. The descriptor is computed once and kept (float32, ≤ ``FEATURE_CACHE_MB``); a larger
    grid is predicted whole (``fallback``)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dev = pick_device(device)
    model.to(dev)
    n = math.prod(shape)
    n_features = model.descriptor.n_features
    if n * n_features * 4 > FEATURE_CACHE_MB * 2**20:
        whole = predict_grid(structure, model, shape=shape, device=device, name=name)
        timings["estimate"] = time.perf_counter() - start
        return AdaptiveGrid(whole.grid, np.ones(shape, dtype=bool), whole, analyze(whole.grid, refine=False), [],
                            0.0, 0.0, 0, True, True, timings, "member")
    features = torch.empty((n, n_features), dtype=torch.float32, device=dev)
    for idx, feats in describe_stream(structure, shape, model.descriptor, dev):
        if np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):  # the grid path's chunks: runs in C order
            features[int(idx[0]):int(idx[0]) + len(idx)] = feats
        else:
            features[torch.as_tensor(idx, device=dev)] = feats
    sample = np.random.default_rng(seed).choice(n, min(SAMPLE_POINTS, n), replace=False)
    at_sample = member_outputs(model, features[torch.as_tensor(sample, device=dev)])
    closest = int(np.abs(at_sample - at_sample.mean(axis=0)).max(axis=1).argmin())
    approx = np.empty(n)
    for at in range(0, n, NETWORK_ROWS):
        approx[at:at + NETWORK_ROWS] = member_outputs(model, features[at:at + NETWORK_ROWS], members=[closest])[0]
    if len(model.members) == 1:  # the estimate is the exact grid
        grid = ElfGrid(structure, approx.reshape(shape), name)
        whole = Prediction(grid, approx.reshape(1, *shape).astype(np.float32), str(dev))
        timings["estimate"] = time.perf_counter() - start
        return AdaptiveGrid(grid, np.ones(shape, dtype=bool), whole, analyze(grid, refine=False), [], 0.0, 0.0, 0,
                            False, True, timings, "member 0")
    members = np.repeat(approx[None].astype(np.float32), len(model.members), axis=0)
    timings["estimate"] = time.perf_counter() - start
    start = time.perf_counter()
    estimate_topo = analyze(ElfGrid(structure, approx.reshape(shape), name), refine=False)
    timings["estimate_topology"] = time.perf_counter() - start

    others = [k for k in range(len(members)) if k != closest]  # the estimating member is exact everywhere

    def evaluate(flat: np.ndarray) -> np.ndarray:
        for at in range(0, len(flat), NETWORK_ROWS):
            rows = flat[at:at + NETWORK_ROWS]
            out = member_outputs(model, features[torch.as_tensor(rows, device=dev)], members=others)
            members[np.ix_(others, rows)] = out
        return members[:, flat].mean(axis=0, dtype=np.float64)

    start = time.perf_counter()
    certified = _certified_grid(structure, shape, name, approx, estimate_topo, evaluate, seed, max_uncertain)
    timings["exact"] = time.perf_counter() - start
    hybrid = Prediction(certified["grid"], members.reshape(len(members), *shape), str(dev))
    return AdaptiveGrid(estimate=hybrid, estimate_topology=estimate_topo, timings_s=timings,
                        kind=f"member {closest}", **certified)


def _certified_grid(structure: Structure, shape: tuple[int, int, int], name: str, approx: np.ndarray,
                    estimate_topo: Topology, evaluate, seed: int, max_uncertain: float) -> dict:
    """Steps 2–4 of the module docstring: from the estimate ``approx`` (flat, C order of ``shape``) and
    the events of its topology, the hybrid grid whose sweep events are those of the exact grid.
    ``evaluate(flat)`` gives the model's exact values at those voxels. Returns AdaptiveGrid's fields
    ``grid``, ``exact``, ``levels``, ``margin``, ``error``, ``rounds``, ``fallback``, ``certified``."""
    values = approx.copy()
    exact = np.zeros(values.size, dtype=bool)
    sample = np.random.default_rng(seed).choice(values.size, min(SAMPLE_POINTS, values.size), replace=False)
    values[sample] = evaluate(sample)
    exact[sample] = True
    error = float(np.abs(values[sample] - approx[sample]).max())
    keys = ("phi", "phi_1d", "phi_2d", "phi_star")
    expected = [k for k in keys if estimate_topo.thresholds_grid[k] is not None]
    levels = [estimate_topo.thresholds_grid[k] if getattr(estimate_topo, k) is None else getattr(estimate_topo, k)
              for k in expected]
    margin = 2 * SAFETY * error
    fallback = certified = False
    rounds = 0
    while not certified:
        rounds += 1
        uncertain = np.zeros(values.size, dtype=bool)
        for level in levels:
            uncertain |= np.abs(approx - level) < margin
        todo = np.flatnonzero(uncertain & ~exact)
        if fallback or (exact | uncertain).mean() > max_uncertain or rounds > MAX_ROUNDS:
            todo, fallback = np.flatnonzero(~exact), True
        values[todo] = evaluate(todo)
        exact[todo] = True
        if fallback:
            certified = True  # every voxel is exact: this is the exact grid itself
            break
        if len(todo):
            error = max(error, float(np.abs(values[todo] - approx[todo]).max()))
        found = analyze(ElfGrid(structure, values.reshape(shape), name), refine=False).thresholds_grid
        if any(found[k] is None for k in expected):
            fallback = True  # an event of the estimate is gone: its absence has no certificate
            continue
        hits = [v for v in found.values() if v is not None]
        certified = all(any(abs(v - level) + SAFETY * error < margin for level in levels) for v in hits)
        levels = sorted(set(levels) | set(hits))
        margin = max(margin, 2 * SAFETY * error)
    return {"grid": ElfGrid(structure, values.reshape(shape), name), "exact": exact.reshape(shape),
            "levels": sorted(levels), "margin": margin, "error": error, "rounds": rounds, "fallback": fallback,
            "certified": certified}
