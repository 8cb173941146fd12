"""Ensemble members read at the mean's critical points (model.topology.values_at_events, model.pipeline.member_spread)
against the reference: a full topology analysis of every member."""
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.pipeline import member_spread
from elfscreen.model.topology import analyze, values_at_events
from elfscreen.model.volumetric import ElfGrid

SHAPE = (24, 24, 24)


def _field(structure: Structure, shape) -> np.ndarray:
    """g/(1+g), g a sum of Gaussians (σ 0.45 Å, A 6) over the atoms and their images: smooth and periodic."""
    idx = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1)
    g = np.zeros(shape)
    for site in structure:
        d = (idx - site.frac_coords + 0.5) % 1.0 - 0.5
        r2 = ((d @ structure.lattice.matrix) ** 2).sum(-1)
        g += 6.0 * np.exp(-r2 / 0.45**2)
    return g / (1 + g)


def _members(values: np.ndarray, count: int, eps: float, seed: int = 0) -> np.ndarray:
    """``values`` times 1 + a band-limited periodic perturbation (lowest Fourier modes, relative amplitude ~eps)."""
    rng = np.random.default_rng(seed)
    x = np.stack(np.meshgrid(*[np.arange(n) / n for n in values.shape], indexing="ij"), 0)
    out = []
    for _ in range(count):
        k = rng.integers(-1, 2, size=(3, 3))
        phase = rng.random(3) * 2 * np.pi
        bump = sum(np.cos(2 * np.pi * np.tensordot(k[j], x, axes=1) + phase[j]) for j in range(3)) / 3
        out.append(np.clip(values * (1 + eps * rng.standard_normal() * bump), 0, 1))
    return np.array(out)


@pytest.fixture(scope="module")
def mean_grid():
    # one H per orthorhombic cell (1.8, 2.1, 2.5 Å): φ* is the join to its own image along a, φ the third
    # direction's (c) saddle. Each is the one saddle of its kind well apart from the others, so a member's
    # own analysis finds the same saddle. (With competing saddles a member's φ is the highest of them, which
    # reading one saddle cannot see: bench/ensemble.py measures that on predicted grids.)
    s = Structure(Lattice.orthorhombic(1.8, 2.1, 2.5), ["H"], [[0.1, 0.2, 0.3]])
    return ElfGrid(s, _field(s, SHAPE), "h-ortho")


def test_a_member_equal_to_the_mean_reads_the_mean_values(mean_grid):
    topo = analyze(mean_grid)
    assert topo.phi is not None and topo.phi_star is not None and topo.bottleneck.refined
    at = values_at_events(mean_grid, topo)
    assert at["phi"] == pytest.approx(topo.phi, abs=1e-9) and at["phi_star"] == pytest.approx(topo.phi_star, abs=1e-9)


def test_member_values_match_a_full_analysis_of_each_member(mean_grid):
    """Perturbations (~2 % of the ELF) far smaller than the gaps between the saddles (φ, φ_2d and φ* differ
    ~10×): each member's bottleneck is the mean's one moved a little, so Newton from the mean's point lands
    on the same critical point of the member's interpolant that the member's own analysis refines to
    (both converge to |Δx| < 1e-7 Å: tolerance 1e-6 in ELF)."""
    topo = analyze(mean_grid)
    members = _members(mean_grid.values, 5, eps=0.02)
    full = [analyze(ElfGrid(mean_grid.structure, m, "m")) for m in members]
    assert all(t.bottleneck.refined and t.molecular_bottleneck.refined for t in full)
    cheap = [values_at_events(ElfGrid(mean_grid.structure, m, "m"), topo) for m in members]
    for c, f in zip(cheap, full):
        assert c["phi"] == pytest.approx(f.phi, abs=1e-6) and c["phi_star"] == pytest.approx(f.phi_star, abs=1e-6)
    spread = member_spread(mean_grid, members, topo)
    assert spread["members"] == 5 and spread["phi_std"] > 1e-5  # the perturbations do move φ (~0.003)
    assert spread["phi_std"] == pytest.approx(np.std([f.phi for f in full]), abs=1e-6)
    assert spread["phi_star_std"] == pytest.approx(np.std([f.phi_star for f in full]), abs=1e-6)
    assert spread["elf_std_mean"] == pytest.approx(float(members.std(axis=0).mean()), rel=1e-9)


def test_without_refinement_members_read_the_mean_voxels(mean_grid):
    topo = analyze(mean_grid, refine=False)
    member = _members(mean_grid.values, 1, eps=0.02, seed=3)[0]
    at = values_at_events(ElfGrid(mean_grid.structure, member, "m"), topo, refine=False)
    assert at["phi"] == member[tuple(topo.bottleneck.voxel)]
    assert at["phi_star"] == member[tuple(topo.molecular_bottleneck.voxel)]
