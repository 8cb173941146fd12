"""Topology engine against independent references: analytic fields, brute-force percolation, DFT data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from scipy.optimize import minimize
from scipy.signal import resample

from elfscreen.model.topology import analyze
from elfscreen.model.volumetric import ElfGrid, read_grid
from reference import brute_attractors, elf_like, elf_like_grid, tcestime, thresholds

DATA = Path(__file__).parent / "data" / "qe"
QE_CUBES = sorted(DATA.glob("*.ELF.cube.gz"))
KEYS = ("phi", "phi_1d", "phi_2d", "phi_star")


def synthetic(lattice, frac_sites, shape, species=None) -> ElfGrid:
    lattice = np.asarray(lattice, dtype=float)
    sites = np.asarray(frac_sites, dtype=float)
    structure = Structure(Lattice(lattice), species or ["H"] * len(sites), sites)
    return ElfGrid(structure, elf_like_grid(lattice, sites, shape), "synthetic")


def plane_max(lattice, sites, axis: int, level: float) -> float:
    """Maximum of the analytic field on the lattice plane x_axis = level: the mountain pass across a
    mirror plane, found by a grid search and a Nelder–Mead polish (no use of the product's code)."""
    u, v = [a for a in range(3) if a != axis]

    def cart(p):
        f = np.zeros((len(p), 3))
        f[:, axis], f[:, u], f[:, v] = level, p[:, 0], p[:, 1]
        return f @ lattice

    grid = np.stack(np.meshgrid(np.linspace(0, 1, 40, endpoint=False), np.linspace(0, 1, 40, endpoint=False)), -1).reshape(-1, 2)
    start = grid[np.argmax(elf_like(lattice, sites, cart(grid)))]
    res = minimize(lambda p: -elf_like(lattice, sites, cart(p[None]))[0], start, method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-13})
    return float(-res.fun)


def one_voxel_change(grid: ElfGrid) -> float:
    return float(max(np.abs(np.diff(grid.values, axis=a, append=np.take(grid.values, [0], axis=a))).max() for a in range(3)))


# --- analytic cases: expected values are mountain passes across mirror planes --------------------

def test_h2_molecules_on_cubic_lattice():
    """H2 along x on a simple cubic lattice: chains form along x first (φ_1d, the inter-molecular
    saddle on the x axis), then y and z join at once (φ_2d = φ); φ* is the molecule's centre."""
    a, d = 2.6, 0.7
    c0 = np.array([0.31, 0.27, 0.23])  # keeps the saddles off the grid nodes
    sites = np.array([c0 + [d / 2 / a, 0, 0], c0 - [d / 2 / a, 0, 0]])
    lattice = np.eye(3) * a
    grid = synthetic(lattice, sites, (26, 26, 26))
    topo = analyze(grid)
    along_x = plane_max(lattice, sites, 0, c0[0] + 0.5)
    across = plane_max(lattice, sites, 1, c0[1] + 0.5)
    assert across == pytest.approx(plane_max(lattice, sites, 2, c0[2] + 0.5), abs=1e-9)
    centre = elf_like(lattice, sites, (c0 @ lattice)[None])[0]
    assert topo.phi_1d == pytest.approx(along_x, abs=1e-5)
    assert topo.phi == pytest.approx(across, abs=1e-5)
    assert topo.phi_2d == pytest.approx(across, abs=1e-5)
    assert topo.phi_star == pytest.approx(centre, abs=1e-5)
    step = one_voxel_change(grid)
    for key, exact in (("phi", across), ("phi_1d", along_x)):
        raw = topo.thresholds_grid[key]
        assert raw != pytest.approx(exact, abs=1e-6), "the saddle should sit off the grid in this test"
        assert abs(raw - exact) <= step
    assert topo.bottleneck.refined and topo.bottleneck.kind in ("merge", "loop")
    assert {atom.species for atom in topo.bottleneck.nearest_atoms} == {"H"}


def test_chains():
    """1D chains along c: φ_1d is the intra-chain saddle, the 3D network forms far lower."""
    lattice = np.diag([2.4, 2.4, 1.0])
    site = np.array([[0.13, 0.29, 0.41]])
    topo = analyze(synthetic(lattice, site, (24, 24, 10)))
    intra = plane_max(lattice, site, 2, 0.91)
    inter = plane_max(lattice, site, 0, 0.63)
    assert topo.phi_1d == pytest.approx(intra, abs=1e-5)
    assert topo.phi == pytest.approx(inter, abs=1e-5)
    assert topo.phi_2d == pytest.approx(inter, abs=1e-5)
    assert topo.phi < topo.phi_1d - 0.2
    assert topo.phi_star == pytest.approx(intra, abs=1e-5)  # one H per cell: H joins its own image


def test_layers():
    """A square net of H in the ab plane: 1D and 2D appear together, 3D only across the layers."""
    lattice = np.diag([1.0, 1.0, 2.6])
    site = np.array([[0.17, 0.33, 0.29]])
    topo = analyze(synthetic(lattice, site, (10, 10, 26)))
    in_plane = plane_max(lattice, site, 0, 0.67)
    between = plane_max(lattice, site, 2, 0.79)
    assert topo.phi_1d == pytest.approx(in_plane, abs=1e-5)
    assert topo.phi_2d == pytest.approx(in_plane, abs=1e-5)
    assert topo.phi == pytest.approx(between, abs=1e-5)
    assert topo.phi < topo.phi_2d


def hexagonal_grid() -> ElfGrid:
    lattice = Lattice.hexagonal(1.7, 2.5).matrix
    sites = np.array([[1 / 3, 2 / 3, 0.27], [2 / 3, 1 / 3, 0.77], [0.05, 0.1, 0.5]])
    return synthetic(lattice, sites, (17, 17, 25))


def test_oblique_hexagonal_cell_against_brute_force_and_finer_grid():
    grid = hexagonal_grid()
    topo = analyze(grid)
    lattice = grid.structure.lattice.matrix
    h_frac = grid.structure.frac_coords
    expected = thresholds(grid.values, brute_attractors(grid.values, lattice, h_frac))
    assert topo.thresholds_grid == expected
    # the refined values approach the continuum: the raw sweep on a 2.4× finer sampling of the
    # same analytic field lands within that grid's one-voxel change of them
    fine = ElfGrid(grid.structure, elf_like_grid(lattice, h_frac, (41, 41, 60)), "fine")
    fine_topo = analyze(fine, refine=False)
    for key in KEYS:
        assert abs(getattr(topo, key) - fine_topo.thresholds_grid[key]) <= one_voxel_change(fine)


# --- invariances -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [hexagonal_grid, lambda: read_grid(DATA / "h2_molecular_cubic.ELF.cube.gz")])
def test_supercell_and_roll_invariance(make):
    grid = make()
    base = analyze(grid)
    s = grid.structure.copy()
    s.make_supercell([2, 2, 1])
    sup = analyze(ElfGrid(s, np.tile(grid.values, (2, 2, 1)), "supercell"))
    shift = np.array([3, 5, 7])
    rolled_structure = grid.structure.copy()
    rolled_structure.translate_sites(range(len(rolled_structure)), shift / np.array(grid.shape), frac_coords=True)
    rolled = analyze(ElfGrid(rolled_structure, np.roll(grid.values, tuple(shift), axis=(0, 1, 2)), "rolled"))
    for other in (sup, rolled):
        for key in KEYS:
            assert other.thresholds_grid[key] == base.thresholds_grid[key]
            assert getattr(other, key) == pytest.approx(getattr(base, key), abs=1e-6)


# --- brute force on random fields ------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_sweep_matches_brute_force_on_random_fields(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 11, size=3))
    if seed % 2:  # white noise
        values = rng.random(shape)
    else:  # smooth: a few random periodic modes
        values = np.zeros(shape)
        idx = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1)
        for _ in range(6):
            k = rng.integers(-2, 3, size=3)
            values += rng.normal() * np.cos(2 * np.pi * (idx @ k) + rng.uniform(0, 2 * np.pi))
        values = (values - values.min()) / np.ptp(values)
    lattice = Lattice.from_parameters(*rng.uniform(2.5, 4.0, 3), *rng.uniform(70, 110, 3))
    n_h = int(rng.integers(1, 4))
    structure = Structure(lattice, ["H"] * n_h + ["Ca"], rng.random((n_h + 1, 3)))
    topo = analyze(ElfGrid(structure, values, "random"), refine=False)
    expected = thresholds(values, brute_attractors(values, lattice.matrix, structure.frac_coords[:n_h]))
    assert topo.thresholds_grid == expected


# --- DFT grids -------------------------------------------------------------------------------------

def dft_grids():
    params = [pytest.param(p, id=p.name.split(".")[0]) for p in QE_CUBES]
    params += [pytest.param(tcestime(n), id=n.split(".")[0] + "-" + n.split(".")[1])
               for n in ("CaYH20.vasp.ELFCAR.gz", "CaYH18.qe63.ELF.cube.gz")]
    return params


def test_three_qe_cubes_ship():
    assert len(QE_CUBES) >= 3


@pytest.mark.parametrize("path", dft_grids())
def test_dft_grid_thresholds_match_brute_force(path):
    grid = read_grid(path)
    topo = analyze(grid)
    h = [i for i, site in enumerate(grid.structure) if site.specie.symbol == "H"]
    expected = thresholds(grid.values, brute_attractors(grid.values, grid.structure.lattice.matrix, grid.structure.frac_coords[h]))
    assert topo.thresholds_grid == expected


@pytest.mark.parametrize("path", dft_grids())
def test_refined_values_are_stable_under_upsampling(path):
    """φ on a grid and on its 2× Fourier upsampling (scipy.signal.resample) agree to 1e-4."""
    grid = read_grid(path)
    up = grid.values
    for axis in range(3):
        up = resample(up, 2 * up.shape[axis], axis=axis)
    a, b = analyze(grid), analyze(ElfGrid(grid.structure, up, "up"))
    for key in KEYS:
        assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-4), key


def test_tcestime_reference_values():
    """TcESTIME + critic2 values for the reference DFT grids (tests/data/reference/README.md)."""
    vasp = analyze(read_grid(tcestime("CaYH20.vasp.ELFCAR.gz")))
    assert vasp.phi == pytest.approx(0.5506, abs=0.002)
    assert vasp.phi_star == pytest.approx(0.7173, abs=0.005)
    assert vasp.h_fraction == pytest.approx(20 / 22)
    qe = analyze(read_grid(tcestime("CaYH18.qe63.ELF.cube.gz")))
    assert qe.phi == pytest.approx(0.5997, abs=0.002)
    assert qe.phi_star == pytest.approx(0.7865, abs=0.002)
    assert qe.h_fraction == pytest.approx(18 / 20)
    # this file's ELF was already rescaled from QE 7.2's output, so it is read as it is
    qe72 = read_grid(tcestime("CaYH18.qe72-rescaled.ELF.cube.gz"))
    assert analyze(qe72).phi == pytest.approx(0.5996, abs=0.002)


def test_critical_points_of_h2_crystal():
    """Pa-3 H2 (QE): each molecule has two ELF maxima near its protons joined by a saddle at the bond
    centre, 6e-4 below them. Resolved with a small persistence cut: 8 maxima within 0.15 Å of a proton
    and a saddle at each of the 4 bond centres with ELF = φ*. The default cut (0.005) merges each
    pair into one attractor per molecule."""
    grid = read_grid(DATA / "h2_molecular_cubic.ELF.cube.gz")
    s = grid.structure
    fine = analyze(grid, min_persistence=1e-4)
    points = fine.critical_points["points"]
    assert all(p.refined for p in points)
    maxima = [p for p in points if p.kind == "max"]
    assert fine.critical_points["counts"]["max"] == len(maxima) == 8

    def nearest(frac, targets):
        return min(s.lattice.get_distance_and_image(np.array(frac), t)[0] for t in targets)

    assert max(nearest(m.frac, s.frac_coords) for m in maxima) < 0.15
    centres = []
    for i in range(len(s)):
        j = min((k for k in range(len(s)) if k != i), key=lambda k: s.get_distance(i, k))
        if i < j:
            _, image = s[i].distance_and_image(s[j])
            centres.append((s[i].frac_coords + s[j].frac_coords + image) / 2)
    assert len(centres) == 4
    bond = [p for p in points if p.kind == "bond_saddle" and nearest(p.frac, centres) < 0.05]
    assert len(bond) == 4
    assert all(p.elf == pytest.approx(fine.phi_star, abs=1e-6) for p in bond)
    assert analyze(grid).critical_points["counts"]["max"] == 4


def test_the_sweep_kernel_lets_other_threads_run():
    """The numba kernels are compiled with nogil=True: while one thread sweeps a large grid, another
    Python thread keeps running (the embedded API answers requests during a sweep). With the GIL held,
    this thread would stall for the whole kernel (measured: one 0.67 s gap); released, its largest gap
    is the OS's scheduling (≈ 0.01 s)."""
    import threading
    import time

    from elfscreen.model import sweep, sweep_kernel

    values = np.random.default_rng(0).random((90, 90, 90))
    sweep.sweep(values[:4, :4, :4])  # compiled (or loaded from numba's cache) before timing
    flat = values.ravel()
    order = np.argsort(-flat, kind="stable").astype(np.int32)
    span = []

    def run():
        start = time.perf_counter()
        sweep_kernel._sweep(flat, order, np.array(values.shape, dtype=np.int64), np.zeros(flat.size, np.int32))
        span.extend([start, time.perf_counter()])

    thread = threading.Thread(target=run)
    ticks = []
    thread.start()
    while thread.is_alive():
        ticks.append(time.perf_counter())
    thread.join()
    start, end = span
    gaps = np.diff([start, *[t for t in ticks if start <= t <= end], end])
    assert end - start > 0.1  # long enough to tell the two apart
    assert gaps.max() < 0.25 * (end - start), (gaps.max(), end - start)
