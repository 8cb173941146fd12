"""The grid descriptor against a slow float64 reference (addition theorem) and its invariances."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from elfscreen.model.descriptor import PAPER_V1, DescriptorParams, describe, real_spherical_harmonics
from reference import descriptor_reference


def reference(structure: Structure, frac_points: np.ndarray, params: DescriptorParams = PAPER_V1,
              nearest_image_only: bool = False) -> np.ndarray:
    return descriptor_reference(structure, frac_points, params, nearest_image_only)


def random_structure(lattice: Lattice, n_h: int, seed: int, extra: str | None = "Ca") -> Structure:
    rng = np.random.default_rng(seed)
    species = ["H"] * n_h + ([extra] if extra else [])
    return Structure(lattice, species, rng.random((len(species), 3)))


CELLS = {
    "triclinic": Lattice.from_parameters(4.1, 3.7, 4.6, 78, 95, 104),
    "hexagonal": Lattice.hexagonal(3.2, 5.1),
    "thin": Lattice.from_parameters(4.5, 4.2, 1.9, 90, 90, 90),  # thinner than 2·r_cut in c
}


def test_feature_count_and_defaults():
    assert PAPER_V1.n_features == 165 and PAPER_V1.sigma == pytest.approx(0.25)


@pytest.mark.parametrize("cell", list(CELLS))
def test_matches_float64_reference(cell):
    structure = random_structure(CELLS[cell], 6, seed=len(cell))
    rng = np.random.default_rng(1)
    points = rng.random((40, 3))
    points[0] = structure[0].frac_coords  # a point on an atom: that atom contributes to l = 0 only
    ref = reference(structure, points)
    ours64 = describe(structure, points, dtype=torch.float64)
    assert np.abs(ours64 - ref).max() <= 1e-9 * np.abs(ref).max()
    ours32 = describe(structure, points)
    assert ours32.dtype == np.float32
    assert np.abs(ours32 - ref).max() <= 2e-6 * np.abs(ref).max()


def test_spherical_harmonics_are_orthonormal_and_ordered():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(400000, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    y = real_spherical_harmonics(torch.tensor(v), 3).numpy()
    gram = 4 * np.pi * y.T @ y / len(v)
    assert np.abs(gram - np.eye(16)).max() < 0.01  # Monte Carlo estimate of ∫ Y Y' dΩ
    assert np.allclose(y[:, 1:4], np.sqrt(3 / (4 * np.pi)) * v[:, [1, 2, 0]])  # l = 1 is (y, z, x)


def test_rotation_and_permutation_invariance():
    structure = random_structure(CELLS["triclinic"], 7, seed=3)
    points = np.random.default_rng(2).random((30, 3))
    base = describe(structure, points, dtype=torch.float64)
    rot = Rotation.random(random_state=4).as_matrix()
    rotated = Structure(Lattice(structure.lattice.matrix @ rot.T), structure.species, structure.frac_coords)
    assert np.allclose(describe(rotated, points, dtype=torch.float64), base, rtol=1e-10, atol=1e-12)
    perm = np.random.default_rng(5).permutation(len(structure))
    permuted = Structure(structure.lattice, [structure.species[i] for i in perm], structure.frac_coords[perm])
    assert np.allclose(describe(permuted, points, dtype=torch.float64), base, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", ["hexagonal", "thin"])
def test_supercell_gives_the_same_features_at_the_same_points(cell):
    structure = random_structure(CELLS[cell], 5, seed=7)
    points = np.random.default_rng(8).random((30, 3))
    base = describe(structure, points, dtype=torch.float64)
    sup = structure.copy()
    sup.make_supercell([2, 2, 2])
    assert np.allclose(describe(sup, points / 2, dtype=torch.float64), base, rtol=1e-10, atol=1e-12)


def test_shifting_atoms_by_a_grid_vector_rolls_the_output():
    structure = random_structure(CELLS["hexagonal"], 4, seed=9)
    shape = (9, 9, 14)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    base = describe(structure, idx / np.array(shape), dtype=torch.float64).reshape(*shape, -1)
    shifted = structure.copy()
    shifted.translate_sites(range(len(shifted)), [0, 2 / shape[1], 0], frac_coords=True)
    moved = describe(shifted, idx / np.array(shape), dtype=torch.float64).reshape(*shape, -1)
    assert np.allclose(moved, np.roll(base, 2, axis=1), rtol=1e-10, atol=1e-12)


def test_nearest_image_counting_is_wrong_for_thin_cells():
    """The authors' scripts keep one rounded image per atom. In a 1.9 Å thick cell that misses most
    neighbours; all-images counting (ours) equals the supercell, where one image per atom suffices."""
    structure = random_structure(CELLS["thin"], 3, seed=11, extra=None)
    points = np.random.default_rng(12).random((20, 3))
    ours = describe(structure, points, dtype=torch.float64)
    nearest = reference(structure, points, nearest_image_only=True)
    assert np.abs(nearest - ours).max() > 0.1 * np.abs(ours).max()
    sup = structure.copy()
    sup.make_supercell([2, 2, 4])  # ≥ 7.6 Å in every direction: one image per atom is all of them
    nearest_sup = reference(sup, points / np.array([2, 2, 4]), nearest_image_only=True)
    assert np.allclose(nearest_sup, ours, rtol=1e-10, atol=1e-12)


def test_no_hydrogen_near_gives_zero_and_chunking_does_not_matter():
    structure = Structure(Lattice.cubic(12.0), ["H", "Ca"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    points = np.array([[0.5, 0.5, 0.5], [0.05, 0, 0]])
    feats = describe(structure, points, dtype=torch.float64)
    assert np.all(feats[0] == 0) and np.any(feats[1] != 0)
    grid = np.random.default_rng(0).random((3000, 3))
    s = random_structure(CELLS["triclinic"], 8, seed=1)
    small, large = describe(s, grid, max_chunk_mb=1), describe(s, grid, max_chunk_mb=512)
    assert np.abs(small - large).max() <= 1e-6 * np.abs(large).max()  # float32 sums in another order
