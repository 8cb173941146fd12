"""The full-grid (FFT) descriptor path and the species-aware descriptor, against the float64 reference
(addition theorem, brute force over images, tests/reference.py), with their invariances and checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from elfscreen.model.descriptor import HYDRIDE_V2, HYDRIDE_V3, PAPER_V1, atom_channels, describe
from elfscreen.model.descriptor_grid import (_inverse_fft, compiled_coefficients, density_basis, describe_grid,
                                            iter_describe_grid, power_spectrum_channels)
from elfscreen.model.elements import UnsupportedElementError
from elfscreen.model.errors import InputError
from elfscreen.model.network import CheckpointError, ElfModel
from elfscreen.model.predict import predict_grid, use_grid_path
from reference import descriptor_reference

# max |grid − reference| over the points, relative to the largest reference feature there; the error is
# about 1e-4 in absolute feature units, so cells far more dilute than dense H (12 Å³/H) reach 2e-4 relative
TOLERANCE = 1e-4


def random_cell(lattice: Lattice, species: list[str], seed: int, min_a: float = 0.75) -> Structure:
    """Atoms at random positions, all pairs (all images) at least ``min_a`` apart."""
    rng = np.random.default_rng(seed)
    frac: list[np.ndarray] = []
    while len(frac) < len(species):
        x = rng.random(3)
        d = (np.array(frac).reshape(-1, 3) - x + 0.5) % 1.0 - 0.5
        if not len(frac) or np.linalg.norm(d @ lattice.matrix, axis=1).min() >= min_a:
            frac.append(x)
    return Structure(lattice, species, np.array(frac))


CELLS = {
    # H crystal: distorted bcc at 2.5 Å³/H, a cell far thinner than 2·r_cut (every image counts)
    "crystal": lambda: Structure(Lattice.cubic(1.71), ["H", "H"], [[0, 0, 0], [0.5, 0.52, 0.49]]),
    "fluid": lambda: random_cell(Lattice.cubic(4.2), ["H"] * 28, seed=1),
    "triclinic": lambda: random_cell(Lattice.from_parameters(3.9, 3.4, 4.4, 68, 101, 116), ["H"] * 14, seed=2),
    "hydride": lambda: random_cell(Lattice.from_parameters(3.6, 3.6, 4.1, 90, 90, 120), ["La"] + ["H"] * 9 + ["B"], 3,
                                   min_a=0.9),
}


def grid_points(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1).reshape(-1, 3)


def shape_for(structure: Structure, spacing: float) -> tuple[int, int, int]:
    return tuple(int(np.ceil(x / spacing)) for x in structure.lattice.abc)


@pytest.mark.parametrize("cell,spacing,params", [
    ("crystal", 0.05, PAPER_V1), ("fluid", 0.1, PAPER_V1), ("triclinic", 0.2, PAPER_V1),
    ("triclinic", 0.1, HYDRIDE_V2), ("hydride", 0.15, HYDRIDE_V2), ("hydride", 0.15, HYDRIDE_V3)])
def test_grid_path_matches_float64_reference(cell, spacing, params):
    structure = CELLS[cell]()
    shape = shape_for(structure, spacing)
    points = grid_points(shape)
    rng = np.random.default_rng(4)
    sub = rng.choice(len(points), 60, replace=False)
    near = np.argmin(np.linalg.norm(((points - structure[0].frac_coords + 0.5) % 1 - 0.5) @ structure.lattice.matrix,
                                    axis=1))
    sub = np.r_[sub, near]  # the grid point nearest an atom: where the kernel is least smooth
    ref = descriptor_reference(structure, points[sub], params)
    for compiled in (True, False):  # the CPU's compiled kernels and the torch path of other devices
        grid = describe_grid(structure, shape, params, dtype=torch.float64, compiled=compiled)
        grid = grid.reshape(len(points), -1)[sub]
        assert np.abs(grid - ref).max() <= TOLERANCE * np.abs(ref).max()
        grid32 = describe_grid(structure, shape, params, compiled=compiled).reshape(len(points), -1)[sub]
        assert grid32.dtype == np.float32
        assert np.abs(grid32 - ref).max() <= TOLERANCE * np.abs(ref).max()


def _channels(basis, field, scale):
    return np.stack([scale[a] * basis[:, f] if f >= 0 else np.zeros(len(basis)) for a, f in enumerate(field)], 1)


def test_density_basis_rebuilds_the_channels():
    structure = CELLS["hydride"]()  # La, B and H: three species, three channels: no saving
    _, weights = atom_channels(structure, HYDRIDE_V2)
    basis, field, scale = density_basis(weights)
    assert basis.shape == (len(structure), 3) and np.allclose(_channels(basis, field, scale), weights)
    _, weights = atom_channels(Structure(Lattice.cubic(4.0), ["La", "H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5],
                                                                                  [0.2, 0.3, 0.1]]), HYDRIDE_V2)
    basis, field, scale = density_basis(weights)  # H and La: two fields for three channels
    assert basis.shape == (3, 2) and set(basis.sum(0)) == {1.0, 2.0} and field[1] == field[2] != field[0]
    assert np.allclose(_channels(basis, field, scale), weights)
    _, weights = atom_channels(CELLS["fluid"](), HYDRIDE_V2)  # H only: one field, the metal channels zero
    basis, field, scale = density_basis(weights)
    assert basis.shape == (28, 1) and list(field) == [0, -1, -1]
    assert np.allclose(_channels(basis, field, scale), weights)


@pytest.mark.parametrize("structure", [
    Structure(Lattice.cubic(3.3), ["La", "H", "H", "H"],
              [[0, 0, 0], [0.5, 0.5, 0.5], [0.2, 0.3, 0.1], [0.7, 0.1, 0.4]]),
    CELLS["fluid"](), CELLS["hydride"]()], ids=["La-H: 2 fields", "H: metal channels zero", "La-B-H: 3 fields"])
def test_compiled_power_spectrum_equals_the_channel_by_channel_one(structure):
    # the compiled kernel computes each product of fields once and writes its multiples (χ²·p^LaLa, …) and the
    # zero rows; torch's computes every channel pair of the channels rebuilt from the fields
    shape = (7, 8, 9)
    c, field, scale = compiled_coefficients(structure, shape, HYDRIDE_V2, dtype=torch.float64)
    fields = torch.from_numpy(c).view(-1, HYDRIDE_V2.n_radial, 9, int(np.prod(shape)))
    channels = torch.stack([scale[a] * fields[f] if f >= 0 else torch.zeros_like(fields[0])
                            for a, f in enumerate(field)])
    expected = power_spectrum_channels(channels, HYDRIDE_V2).T.numpy()
    seen = np.zeros(len(expected), dtype=int)
    for idx, feats in iter_describe_grid(structure, shape, HYDRIDE_V2, dtype=torch.float64, max_chunk_mb=0.5):
        seen[idx] += 1
        assert np.allclose(feats.numpy(), expected[idx], rtol=1e-12, atol=1e-14 * np.abs(expected).max())
    assert (seen == 1).all() and np.abs(expected).max() > 0


def test_grid_chunks_cover_every_point_once_in_c_order():
    structure = CELLS["triclinic"]()
    shape = (9, 8, 11)
    seen = np.zeros(np.prod(shape), dtype=int)
    whole = describe_grid(structure, shape, dtype=torch.float64).reshape(-1, PAPER_V1.n_features)
    for idx, feats in iter_describe_grid(structure, shape, dtype=torch.float64, max_chunk_mb=0.05):
        seen[idx] += 1
        assert np.allclose(feats.numpy(), whole[idx], rtol=1e-12, atol=1e-15)  # sums in another order
    assert (seen == 1).all()
    direct = describe(structure, grid_points(shape), dtype=torch.float64)
    assert np.abs(direct - whole).max() <= TOLERANCE * np.abs(direct).max()


@pytest.mark.parametrize("params,n_features", [(HYDRIDE_V2, 546), (HYDRIDE_V3, 728)])
def test_species_aware_direct_path_matches_reference_and_counts_features(params, n_features):
    structure = CELLS["hydride"]()
    points = np.random.default_rng(5).random((30, 3))
    points[0] = structure[0].frac_coords  # on the La atom
    ref = descriptor_reference(structure, points, params)
    assert ref.shape[1] == params.n_features == n_features
    ours = describe(structure, points, params, dtype=torch.float64)
    assert np.abs(ours - ref).max() <= 1e-9 * np.abs(ref).max()
    # the metal channels see La and B: moving La changes features that paper-v1 cannot see
    moved = structure.copy()
    moved.translate_sites([0], [0.05, 0, 0])
    assert np.array_equal(describe(moved, points[1:]), describe(structure, points[1:]))  # paper-v1: H only
    assert not np.allclose(describe(moved, points[1:], HYDRIDE_V2), describe(structure, points[1:], HYDRIDE_V2))


@pytest.mark.parametrize("params", [HYDRIDE_V2, HYDRIDE_V3], ids=lambda p: p.name)
def test_species_aware_is_invariant_under_rotation_permutation_and_supercell(params):
    structure = CELLS["hydride"]()
    points = np.random.default_rng(6).random((25, 3))
    base = describe(structure, points, params, dtype=torch.float64)
    rot = Rotation.random(random_state=7).as_matrix()
    rotated = Structure(Lattice(structure.lattice.matrix @ rot.T), structure.species, structure.frac_coords)
    assert np.allclose(describe(rotated, points, params, dtype=torch.float64), base, rtol=1e-10, atol=1e-12)
    perm = np.random.default_rng(8).permutation(len(structure))
    permuted = Structure(structure.lattice, [structure.species[i] for i in perm], structure.frac_coords[perm])
    assert np.allclose(describe(permuted, points, params, dtype=torch.float64), base, rtol=1e-10, atol=1e-12)
    sup = structure.copy()
    sup.make_supercell([2, 1, 2])
    assert np.allclose(describe(sup, points / [2, 1, 2], params, dtype=torch.float64), base, rtol=1e-10, atol=1e-12)


def test_solid_kernel_is_smooth_where_an_atom_is_and_the_gaussian_kernel_is_not():
    """hydride-v2's kernels γ_n(|x|)·|x|^l·Y_lm are smooth in x: the features at points 1e-4 Å on either side of
    an atom differ by ~1e-4 of their size (a finite slope), and their gradient there is finite. The spec's
    g_n(r)·Y_lm(r̂) (paper-v1) jumps: an l ≥ 1 feature sees the atom's direction however close it is."""
    structure = CELLS["hydride"]()
    atom = structure.cart_coords[1]  # an H atom
    step = np.array([1e-4, 0.0, 0.0])
    points = structure.lattice.get_fractional_coords(np.stack([atom - step, atom + step]))
    for params, smooth in ((HYDRIDE_V2, True), (PAPER_V1, False)):
        feats = describe(structure, points, params, dtype=torch.float64)
        jump = np.abs(feats[0] - feats[1]).max() / np.abs(feats).max()
        assert (jump < 1e-3) if smooth else (jump > 1e-2), (params.name, jump)
    ref = descriptor_reference(structure, points, HYDRIDE_V2)
    assert np.abs(describe(structure, points, HYDRIDE_V2, dtype=torch.float64) - ref).max() <= 1e-9 * np.abs(ref).max()


def test_unsupported_element_is_a_clear_input_error():
    structure = Structure(Lattice.cubic(3.0), ["Fe", "H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.2, 0.5, 0.5]])
    with pytest.raises(UnsupportedElementError) as err:
        describe(structure, np.zeros((1, 3)), HYDRIDE_V2)
    assert isinstance(err.value, InputError) and err.value.code == "unsupported_element"
    assert "Fe" in str(err.value) and "La" in str(err.value) and "Si" in str(err.value)
    with pytest.raises(UnsupportedElementError):
        describe_grid(structure, (4, 4, 4), HYDRIDE_V2)
    assert describe(structure, np.zeros((1, 3))).shape == (1, 165)  # paper-v1 sees the H only


def test_checkpoint_names_its_descriptor_and_prediction_runs(tmp_path):
    model = ElfModel.untrained(descriptor=HYDRIDE_V2, n_members=2)
    path = model.save(tmp_path / "hydride.pt")
    loaded = ElfModel.load(path, HYDRIDE_V2)
    assert loaded.descriptor.to_dict() == HYDRIDE_V2.to_dict() and loaded.descriptor.name == "hydride-v2"
    with pytest.raises(CheckpointError):
        ElfModel.load(path, PAPER_V1)
    with pytest.raises(CheckpointError):
        ElfModel.load(ElfModel.untrained().save(tmp_path / "paper.pt"), HYDRIDE_V2)
    structure = CELLS["hydride"]()
    fine, coarse = shape_for(structure, 0.06), shape_for(structure, 0.4)
    assert use_grid_path(structure, fine, HYDRIDE_V2) and not use_grid_path(structure, coarse, PAPER_V1)
    # hydride-v2's smooth kernels need ~20 Å⁻¹ (paper-v1's 60): its FFT path is the faster one down to
    # coarse grids (one thread, this cell at 0.4 Å: 6.5 ms against 19 ms direct; at 0.8 Å: 4.0 against 4.7)
    assert use_grid_path(structure, coarse, HYDRIDE_V2) and not use_grid_path(structure, shape_for(structure, 0.8), HYDRIDE_V2)
    assert use_grid_path(structure, shape_for(structure, 0.1), HYDRIDE_V2, "cuda")
    pred = predict_grid(structure, loaded, shape=fine)  # FFT path
    direct, _ = loaded.predict(torch.as_tensor(describe(structure, grid_points(fine), HYDRIDE_V2)))
    assert pred.grid.values.shape == fine and pred.members.shape == (2, *fine)
    assert np.abs(pred.grid.values.ravel() - direct.numpy()).max() < 1e-3


def test_pruned_inverse_fft_equals_the_full_one():
    # rows whose bins lie within |k2|, k3 ≤ K (K = cut·|a|/2π = cut here) are pruned; the last row is not
    shape, cuts, edges = (12, 13, 14), np.array([3.0, 5.0, 30.0]), np.full(3, 2 * np.pi)
    rng = np.random.default_rng(8)
    spectrum = np.fft.rfftn(rng.standard_normal((3, *shape)), axes=(1, 2, 3))
    k2 = np.abs(np.fft.fftfreq(shape[1], 1 / shape[1]))
    k3 = np.arange(shape[2] // 2 + 1)
    for row, cut in enumerate(cuts[:2]):
        spectrum[row] *= ((k2[:, None] <= cut) & (k3[None, :] <= cut))[None]
    expected = np.fft.irfftn(spectrum, s=shape, axes=(1, 2, 3), norm="forward")  # the sums, unscaled
    ours = _inverse_fft(spectrum.copy(), shape, cuts, edges, n_lm=1)
    assert np.abs(ours - expected).max() <= 1e-12 * np.abs(expected).max()
