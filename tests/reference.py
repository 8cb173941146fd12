"""Independent, slow references for the tests: brute-force percolation, an analytic ELF-like field, the
grid descriptor by the addition theorem in float64, a LaH10 cell written from its Wyckoff sites, and the
published TcESTIME DFT grids
(``tests/data/reference/``, GPL-3.0 test data; see its README).

Percolation here never uses the product's sweep: each isovalue is labelled from scratch with
scipy.ndimage (6-connectivity, non-periodic), components are joined across the periodic faces, and a
breadth-first search over the component graph collects loop translations, whose rank is taken with
numpy. Thresholds come from a binary search over the grid's distinct values.
"""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import eval_legendre

BOHR_A = 0.529177210903
TCESTIME = Path(__file__).parent / "data" / "reference"


def tcestime(name: str) -> Path:
    """A shipped TcESTIME reference grid, e.g. ``CaYH20.vasp.ELFCAR.gz``; a missing one is an error, not a skip."""
    path = TCESTIME / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference grid missing from the checkout (see tests/data/reference/README.md)")
    return path


def lah10(x: float, a: float = 5.10):
    """LaH10 Fm-3m (primitive, 11 atoms) with La at 4a, H at 8c and its 32f H at (x, x, x), cubic a in Å:
    x = 0.38 is LaH10 (La–H 2.12 Å at 5.10 Å); x = 0.118, the 32f x of the other origin choice, puts an
    H 1.04 Å from La."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["La", "H", "H"],
                                     [[0, 0, 0], [0.25, 0.25, 0.25], [x, x, x]]).get_primitive_structure()


def pieces(values: np.ndarray, t: float):
    """Label {values ≥ t} on the periodic grid. Returns (labels, {root label: rank}, label → root)."""
    labels, n = ndimage.label(values >= t)
    edges: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in range(1, n + 1)}
    for axis in range(3):
        last = np.take(labels, -1, axis=axis)
        first = np.take(labels, 0, axis=axis)
        both = (last > 0) & (first > 0)
        shift = np.eye(3, dtype=int)[axis]
        for a, b in set(zip(last[both].tolist(), first[both].tolist())):
            edges[a].append((b, shift))
            edges[b].append((a, -shift))
    pos: dict[int, np.ndarray] = {}
    root_of: dict[int, int] = {}
    ranks: dict[int, int] = {}
    for start in range(1, n + 1):
        if start in pos:
            continue
        pos[start] = np.zeros(3, dtype=int)
        root_of[start] = start
        loops = []
        queue = deque([start])
        while queue:
            a = queue.popleft()
            for b, s in edges[a]:
                if b not in pos:
                    pos[b] = pos[a] + s
                    root_of[b] = start
                    queue.append(b)
                else:
                    d = pos[a] + s - pos[b]
                    if d.any():
                        loops.append(d)
        ranks[start] = int(np.linalg.matrix_rank(np.array(loops))) if loops else 0
    return labels, ranks, root_of


def max_rank(values: np.ndarray, t: float) -> int:
    _, ranks, _ = pieces(values, t)
    return max(ranks.values(), default=0)


def h_pair(values: np.ndarray, t: float, attractors: list[tuple[int, int, int]]) -> bool:
    """Does one piece of {values ≥ t} hold two H attractors, or one and its own image?"""
    labels, ranks, root_of = pieces(values, t)
    seen: dict[int, int] = {}
    for ijk in attractors:
        lab = labels[ijk]
        if lab == 0:
            continue
        root = root_of[lab]
        seen[root] = seen.get(root, 0) + 1
        if seen[root] >= 2 or ranks[root] >= 1:
            return True
    return False


def highest(values: np.ndarray, holds) -> float | None:
    """Highest grid value t such that ``holds(t)``, for a property that, once true, stays true as t falls."""
    levels = np.unique(values)[::-1]
    if not holds(levels[-1]):
        return None
    lo, hi = 0, len(levels) - 1  # holds(levels[hi]) is True
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(levels[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(levels[lo])


def thresholds(values: np.ndarray, attractors=None) -> dict:
    out = {f"phi_{d}d" if d < 3 else "phi": highest(values, lambda t, d=d: max_rank(values, t) >= d) for d in (1, 2, 3)}
    if attractors is not None:
        out["phi_star"] = highest(values, lambda t: h_pair(values, t, attractors))
    return out


def brute_attractors(values: np.ndarray, lattice: np.ndarray, h_frac: np.ndarray, radius_a: float = 0.7 * BOHR_A):
    """For each H: the highest grid point within ``radius_a`` (all images), else the nearest grid point."""
    shape = np.array(values.shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    out = []
    for f in h_frac:
        d = (grid / shape - f + 0.5) % 1.0 - 0.5
        best = None
        for image in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3):
            dist = np.linalg.norm((d + image) @ lattice, axis=1)
            best = dist if best is None else np.minimum(best, dist)
        inside = best <= radius_a
        flat = values.ravel()
        k = int(np.argmax(np.where(inside, flat, -np.inf))) if inside.any() else int(np.argmin(best))
        out.append(tuple(int(x) for x in grid[k]))
    return out


def elf_like(lattice: np.ndarray, frac_sites: np.ndarray, cart_points: np.ndarray, amp: float = 8.0, s: float = 0.45,
             r_cut: float = 4.0) -> np.ndarray:
    """f = g/(1+g), g = Σ over sites and all periodic images of amp·(1 + r²/s²)^-2·(1 − r²/r_cut²)².

    The taper makes g smooth (C¹) at r_cut, so f is exactly periodic and smooth; values in (0, 1).
    """
    cart_sites = frac_sites @ lattice
    recip = np.linalg.norm(np.linalg.inv(lattice), axis=0)
    reach = np.ceil(r_cut * recip).astype(int) + 1
    images = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, 3) @ lattice
    g = np.zeros(len(cart_points))
    for site in cart_sites:
        for chunk in range(0, len(cart_points), 20000):
            p = cart_points[chunk : chunk + 20000]
            r2 = ((p[:, None, :] - site - images[None]) ** 2).sum(-1)
            inside = r2 < r_cut**2
            term = amp * (1 + r2 / s**2) ** -2 * (1 - r2 / r_cut**2) ** 2
            g[chunk : chunk + 20000] += np.where(inside, term, 0.0).sum(1)
    return g / (1 + g)


def elf_like_grid(lattice: np.ndarray, frac_sites: np.ndarray, shape, **kw) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return elf_like(lattice, frac_sites, (idx / np.array(shape)) @ lattice, **kw).reshape(shape)


def descriptor_reference(structure, frac_points: np.ndarray, params, nearest_image_only: bool = False) -> np.ndarray:
    """The descriptor by the addition theorem, float64, brute force over periodic images:
    P^{ab,l}_nn' = (2l+1)/4π Σ_i Σ_j w_a(i) w_b(j) g_nl(r_i) g_n'l(r_j) P_l(cos θ_ij), in the feature order of
    ``DescriptorParams.channel_pairs`` (same channel: n ≤ n'; two channels: all n, n'). Channel weights:
    paper-v1, 1 for each atom of ``params.species``; species-aware, H → channel 0, any other atom → its
    element's properties (``model.elements.PROPERTIES``) in channels 1…. With ``nearest_image_only``: the
    authors' single rounded image per atom."""
    from elfscreen.model.elements import PROPERTIES, PROPERTY_NAMES

    lattice = structure.lattice.matrix
    n_ch = 1 + len(params.embedding)
    rows, weights = [], []
    for site in structure:
        el = site.specie.symbol
        if not params.embedding:
            if el in params.species:
                rows.append(site.frac_coords)
                weights.append([1.0])
            continue
        w = np.zeros(n_ch)
        if el == "H":
            w[0] = 1.0
        else:
            w[1:] = [PROPERTIES[el][PROPERTY_NAMES.index(name)] for name in params.embedding]
        rows.append(site.frac_coords)
        weights.append(w)
    frac_atoms, weights = np.array(rows).reshape(-1, 3), np.array(weights).reshape(-1, n_ch)
    rc, n = params.r_cut_a, params.n_radial
    mu = np.linspace(0, rc, n)
    reach = int(math.ceil(rc * np.linalg.norm(np.linalg.inv(lattice), axis=0).max())) + 1
    rng = range(-reach, reach + 1)
    shifts = np.array([(a, b, c) for a in rng for b in rng for c in rng])
    iu = np.triu_indices(n)
    pairs = [(a, a) for a in range(n_ch)] + [(0, a) for a in range(1, n_ch)]
    out = []
    for p in np.asarray(frac_points, dtype=float):
        if nearest_image_only:
            diff = frac_atoms - p
            vecs, w = (diff - np.round(diff)) @ lattice, weights
        else:
            vecs = ((frac_atoms[None] + shifts[:, None]).reshape(-1, 3) - p) @ lattice
            w = np.tile(weights, (len(shifts), 1))
        r = np.linalg.norm(vecs, axis=1)
        keep = r <= rc
        vecs, r, w = vecs[keep], r[keep], w[keep]
        if params.kernel == "solid":  # mirrored shells, flat to r_cut/3 then a C³ polynomial step to 0 at r_cut
            x = np.clip((r - rc / 3) / (2 * rc / 3), 0, 1)
            step = 1 - (35 * x**4 - 84 * x**5 + 70 * x**6 - 20 * x**7)
            g = 0.5 * (np.exp(-((r[:, None] - mu) ** 2) / (2 * params.sigma**2))
                       + np.exp(-((r[:, None] + mu) ** 2) / (2 * params.sigma**2))) * step[:, None]
        else:
            g = np.exp(-((r[:, None] - mu) ** 2) / (2 * params.sigma**2)) * 0.5 * (np.cos(np.pi * r / rc) + 1)[:, None]
        far = r >= 1e-8  # an atom on the point counts in l = 0 only
        unit = vecs[far] / r[far, None]
        cos = np.clip(unit @ unit.T, -1, 1)
        feats = []
        for l in range(params.l_max + 1):
            # "solid": g_nl = g_n·(r/ρ_n)^l, ρ_n = μ_n (σ for μ_0 = 0)
            gl = g * (r[:, None] / np.where(mu > 0, mu, params.sigma)) ** l if params.kernel == "solid" else g
            for a, b in pairs:
                ga, gb = gl * w[:, a, None], gl * w[:, b, None]
                if l == 0:
                    block = np.outer(ga.sum(0), gb.sum(0)) / (4 * np.pi)
                else:
                    block = (2 * l + 1) / (4 * np.pi) * ga[far].T @ eval_legendre(l, cos) @ gb[far]
                feats.append(block[iu] if a == b else block.ravel())
        out.append(np.concatenate(feats))
    return np.array(out)
