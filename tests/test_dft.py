"""Tests for model/dft.py: the Quantum ESPRESSO ELF driver.

Input generation, k-mesh, FFT grid and output parsing are checked without QE. The runs themselves
(a tiny 8-atom Pa-3 H2 crystal at 30/120 Ry, a few seconds each) are skipped when pw.x/pp.x are absent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.dft import (
    DftError,
    DftSettings,
    elf_of,
    fft_grid,
    find_executable,
    find_pseudopotential,
    kmesh,
    md,
    needs_rescale,
    parse_pw_output,
    pp_elf_input,
    pseudopotentials,
    pw_scf_input,
    qe_available,
    relax,
    standard_orientation,
    with_settings,
)
from elfscreen.model.errors import InputError

DATA = Path(__file__).resolve().parent / "data" / "qe"
TINY = DftSettings(ecutwfc=30.0, ecutrho=120.0)
needs_qe = pytest.mark.skipif(not qe_available(), reason="pw.x/pp.x (Debian quantum-espresso) not installed")


def pa3_h2() -> Structure:
    """Pa-3 solid H2, 8 atoms, molecule centres on the fcc sites (one at the cell origin)."""
    meta = json.loads((DATA / "h2_molecular_cubic.json").read_text())
    return Structure(Lattice(meta["structure"]["cell_angstrom"]), ["H"] * 8, meta["structure"]["positions_crystal"])


# --------------------------------------------------------------------------------------------------
# without QE


def test_kmesh_is_gamma_centred_spacing_with_2pi():
    lat = Lattice.orthorhombic(2.0, 3.0, 10.0)
    # |b| = 2π/a: 3.14, 2.09, 0.63 Å⁻¹ → ceil(/0.6) = 6, 4, 2
    assert kmesh(lat, 0.6) == [6, 4, 2]
    assert kmesh(Lattice.cubic(100.0), 0.6) == [1, 1, 1]


def test_fft_grid_is_even_fft_friendly_and_not_coarser_than_qe():
    lat = Lattice.from_parameters(2.85, 3.3, 4.1, 80, 95, 110)
    for ecutrho in (120.0, 800.0):
        grid = fft_grid(lat, ecutrho)
        for n, a in zip(grid, lat.abc):
            qe_min = 2 * int(math.sqrt(ecutrho) * (a / 0.529177210903) / (2 * math.pi)) + 1
            assert n >= qe_min and n % 2 == 0
            k = n
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            assert k == 1
    # default ecutrho 800 Ry gives ≈ 0.06 Å spacing
    assert all(0.045 < a / n < 0.065 for a, n in zip(lat.abc, fft_grid(lat, 800.0)))


def test_scf_input_holds_the_settings():
    s = pa3_h2()
    text = pw_scf_input(s, DftSettings(), {"H": "H.UPF"})
    for needle in ("calculation = 'scf'", "ecutwfc = 100.0", "ecutrho = 800.0", "smearing = 'mv'",
                   "degauss = 0.0100", "nspin = 1", "K_POINTS automatic", "  4 4 4 0 0 0", "nr1 = 50"):
        assert needle in text
    positions = text.split("ATOMIC_POSITIONS crystal\n")[1].split("K_POINTS")[0].splitlines()
    assert len(positions) == 8 and all(line.split()[0] == "H" for line in positions)
    assert "plot_num = 8" in pp_elf_input() and "output_format = 6" in pp_elf_input()


def test_non_hydrogen_is_refused_by_the_pure_hydrogen_settings():
    s = Structure(Lattice.cubic(3.0), ["S", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(DftError, match="S"):
        pseudopotentials(s, DftSettings())
    with pytest.raises(DftError, match="no pseudopotential given for S"):
        pw_scf_input(s, DftSettings(), {"H": "H.UPF"})


def test_standard_orientation_keeps_the_crystal():
    lat = Lattice.hexagonal(1.5, 2.4)
    rotated = Lattice(lat.matrix @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]]))
    s = Structure(rotated, ["H", "H", "H"], [[0.1, 0.2, 0.25], [0.6, 0.35, 0.7], [0.3, 0.8, 0.05]])  # P1
    t = standard_orientation(s)
    assert np.allclose(t.lattice.abc, s.lattice.abc) and np.allclose(t.lattice.angles, s.lattice.angles)
    assert abs(t.lattice.matrix[0, 1]) < 1e-9 and abs(t.lattice.matrix[0, 2]) < 1e-9  # no symmetry: a along x
    assert np.allclose(t.frac_coords, s.frac_coords)


def _pw_rotations() -> np.ndarray:
    """The Cartesian rotations pw.x tries with ibrav = 0: the cube's 48 and the hexagon's 24 (z the 6-fold
    axis, x a 2-fold one)."""
    import itertools

    cube = [np.diag(signs)[list(perm)] for perm in itertools.permutations(range(3))
            for signs in itertools.product((1, -1), repeat=3)]
    c, s = np.cos(np.pi / 3), np.sin(np.pi / 3)
    six = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    hexagon = [np.linalg.matrix_power(six, k) @ m @ inv for k in range(6) for m in (np.eye(3), np.diag([1, -1, -1]))
               for inv in (np.eye(3), -np.eye(3))]
    return np.array(cube + hexagon)


@pytest.mark.parametrize("cell", ["Fm-3m", "I4/mmm", "R-3m", "P6_3/mmc", "C2/m"])
def test_standard_orientation_makes_every_symmetry_operation_one_pw_x_tries(cell):
    import spglib
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    conv = {"Fm-3m": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.1), ["La", "H", "H"],
                                               [[0, 0, 0], [0.25, 0.25, 0.25], [0.38, 0.38, 0.38]]),
            "I4/mmm": Structure.from_spacegroup("I4/mmm", Lattice.tetragonal(2.9, 5.6), ["Ca", "H", "H"],
                                                [[0, 0, 0], [0, 0.5, 0.25], [0, 0, 0.38]]),
            "R-3m": Structure.from_spacegroup("R-3m", Lattice.hexagonal(3.0, 7.5), ["S", "H"],
                                              [[0, 0, 0], [0, 0, 0.3]]),
            "P6_3/mmc": Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.4, 5.2), ["Y", "H", "H"],
                                                  [[1 / 3, 2 / 3, 0.75], [0, 0, 0.25], [0.13, 0.26, 0.08]]),
            "C2/m": Structure.from_spacegroup("C2/m", Lattice.monoclinic(5.0, 3.1, 4.2, 104.0), ["H", "H"],
                                              [[0.1, 0, 0.2], [0.3, 0, 0.7]])}[cell]
    prim = conv.get_primitive_structure()
    turned = Rotation.random(random_state=rng).as_matrix()  # an arbitrary frame, the same crystal
    s = Structure(Lattice(prim.lattice.matrix @ turned), prim.species, prim.frac_coords)
    t = standard_orientation(s)
    assert np.allclose(t.lattice.abc, s.lattice.abc) and np.allclose(t.lattice.angles, s.lattice.angles)
    assert np.allclose(t.frac_coords, s.frac_coords)
    lat = t.lattice.matrix
    ops = spglib.get_symmetry((lat, t.frac_coords, [x.specie.Z for x in t]), symprec=1e-3)["rotations"]
    tried = _pw_rotations()
    for w in ops:  # fractional x' = W x, Cartesian r = Lᵀx: R = Lᵀ W L⁻ᵀ
        r = lat.T @ w @ np.linalg.inv(lat.T)
        assert np.abs(tried - r).max(axis=(1, 2)).min() < 1e-6, (cell, w)
    assert len(ops) == {"Fm-3m": 48, "I4/mmm": 16, "R-3m": 12, "P6_3/mmc": 24, "C2/m": 4}[cell]


def test_parse_pw_output_convergence():
    ok = ("     Program PWSCF v.6.7MaX starts on 25Nov2026\n     estimated scf accuracy    <       0.00000001 Ry\n"
          "     convergence has been achieved in   9 iterations\n!    total energy              =      -8.5 Ry\n"
          "     the Fermi energy is    12.5000 ev\n     PWSCF        :      5.00s CPU      5.10s WALL\n   JOB DONE.\n")
    info = parse_pw_output(ok)
    assert info["qe_version"] == "6.7MaX" and info["scf_converged"] and info["scf_iterations"] == 9
    assert info["total_energy_ry"] == -8.5 and info["fermi_energy_ev"] == 12.5
    bad = ok.replace("convergence has been achieved in   9", "convergence NOT achieved after   1")
    info = parse_pw_output(bad)
    assert not info["scf_converged"] and info["scf_iterations"] == 1


def test_rescale_only_for_qe_6_8_to_7_5():
    assert not needs_rescale("6.7MaX") and needs_rescale("6.8") and needs_rescale("7.2") and not needs_rescale("7.6")
    assert not needs_rescale(None)


def test_dft_error_is_an_input_error_with_record():
    err = DftError("x", "SCF did not converge", {"scf": {"scf_converged": False}})
    assert isinstance(err, InputError) and err.code == "dft_failed" and err.record["scf"]["scf_converged"] is False


# --------------------------------------------------------------------------------------------------
# with QE


@needs_qe
def test_tiny_elf_is_bounded_and_one_at_the_h2_bond_centre(tmp_path):
    grid, record = elf_of(pa3_h2(), TINY, workdir=tmp_path / "run")
    v = grid.values
    assert v.min() >= 0.0 and v.max() <= 1.0
    assert grid.shape == tuple(record["scf"]["fft_grid"]) and all(n % 2 == 0 for n in grid.shape)
    # a molecule is centred on the cell origin, a grid node: ELF ≈ 1 at its bond centre
    assert v[0, 0, 0] > 0.97
    # between molecules (cube centre is an octahedral hole of the fcc centres) the ELF is low
    n = np.array(grid.shape) // 2
    assert v[n[0], n[1], n[2]] < 0.5
    assert record["scf"]["scf_converged"] and record["qe_version"]
    assert "plot_num = 8" in record["pp_input"] and "ecutwfc = 30.0" in record["pw_input"]
    assert record["pseudopotentials"]["H"]["kind"].startswith("norm-conserving")
    assert record["scf"]["wall_s"] > 0 and record["pp"]["wall_s"] > 0
    assert not (tmp_path / "run" / "tmp").exists()  # QE scratch removed


@needs_qe
def test_unconverged_scf_raises_with_record_and_no_grid():
    settings = with_settings(TINY, electron_maxstep=1)
    with pytest.raises(DftError) as info:
        elf_of(pa3_h2(), settings, name="tiny-unconverged")
    rec = info.value.record
    assert rec["failed_step"] == "scf" and rec["scf"]["scf_converged"] is False
    assert "did not converge" in str(info.value) and "tiny-unconverged" in str(info.value)
    assert "elf" not in rec and "pw_input" in rec


@pytest.mark.skipif(not (find_executable("ld1.x") and qe_available()), reason="ld1.x/pw.x not installed")
def test_fallback_pseudopotential_from_ld1(tmp_path):
    pseudo = find_pseudopotential(tmp_path, allow_debian=False)
    assert pseudo.source == "ld1.x" and pseudo.path.exists() and "Troullier" in pseudo.kind
    again = find_pseudopotential(tmp_path, allow_debian=False)  # cached
    assert again.sha256 == pseudo.sha256
    grid, record = elf_of(pa3_h2(), TINY, pseudo=pseudo)
    assert record["pseudopotentials"]["H"]["source"] == "ld1.x"
    assert 0.0 <= grid.values.min() and grid.values.max() <= 1.0 and grid.values[0, 0, 0] > 0.97


@needs_qe
def test_relax_then_elf_reaches_the_target_pressure():
    if not find_executable("ld1.x"):
        pytest.skip("ld1.x not installed (the relax pseudopotential is generated with it)")
    meta = json.loads((DATA / "h_hexagonal.json").read_text())
    s = Structure(Lattice(meta["structure"]["cell_angstrom"]), ["H", "H"], meta["structure"]["positions_crystal"])
    s = Structure(Lattice(s.lattice.matrix @ np.diag([1.05, 1.05, 1.05])), s.species, s.frac_coords)  # start off-volume
    settings = with_settings(TINY, relax_ecutwfc=30.0, relax_ecutrho=120.0)
    grid, record = elf_of(s, settings, relax_pressure_gpa=100.0)
    rel = record["relax"]
    assert rel["bfgs_converged"] and rel["pressure_bfgs_gpa"] == pytest.approx(100.0, abs=0.5)
    # the final SCF in the new cell (fresh G-vectors) differs by the Pulay stress, large at 30 Ry
    assert rel["pressure_gpa"] == pytest.approx(100.0, abs=10.0)
    assert "projector" in rel["pseudopotentials"]["H"]["kind"]
    assert grid.structure.volume != pytest.approx(s.volume, rel=1e-3)  # the ELF is of the relaxed cell
    assert record["structure"]["volume_a3"] == pytest.approx(grid.structure.volume, rel=1e-6)
    assert 0.0 <= grid.values.min() and grid.values.max() <= 1.0


@needs_qe
def test_relax_goes_on_from_its_last_cell_when_pw_x_loses_the_density():
    """A dense atomic 4-H cell (crystal-relaxed-s0-000030) started at ~15 GPa for a 150 GPa target: the
    first BFGS step halves the volume, the first cell's FFT grid no longer holds the density and pw.x
    stops ("charge is wrong"); the relaxation goes on from that cell and converges."""
    if not find_executable("ld1.x"):
        pytest.skip("ld1.x not installed")
    lattice = Lattice([[0, 0, 1.562483479311], [-2.471082055523, 0, 0], [0, -2.953723514216, 0]])
    s = Structure(lattice, ["H"] * 4, [[0, 0.766493406553, 0], [0, 0.233506593448, 0], [0, 0.266493406552, 0.5],
                                       [0, 0.733506593448, 0.5]])
    relaxed, record = relax(s, 150.0, DftSettings())  # the dataset's relaxation settings (60/240 Ry)
    assert [r["error"] for r in record["restarts"]] == ["Error in routine electrons (1): charge is wrong"]
    assert record["restarts"][0]["ionic_steps"] >= 1
    assert record["bfgs_converged"] and record["pressure_bfgs_gpa"] == pytest.approx(150.0, abs=0.5)
    assert relaxed.volume / 4 < 0.7 * s.volume / 4


@needs_qe
def test_unconverged_relax_is_recorded_and_not_used():
    if not find_executable("ld1.x"):
        pytest.skip("ld1.x not installed")
    s = pa3_h2()
    settings = with_settings(TINY, relax_ecutwfc=30.0, relax_ecutrho=120.0, relax_nstep=1)
    with pytest.raises(DftError) as info:
        elf_of(s, settings, relax_pressure_gpa=100.0, name="tiny-relax")
    rec = info.value.record
    assert rec["failed_step"] == "vc-relax" and "did not converge" in str(info.value)
    assert rec["relax"]["bfgs_converged"] is False and "scf" not in rec  # the ELF step never ran


@needs_qe
def test_md_frames_move_atoms_at_the_target_temperature(tmp_path):
    settings = with_settings(TINY, md_ecutwfc=30.0, md_ecutrho=120.0)
    start = standard_orientation(pa3_h2())
    frames, record = md(start, 1500.0, 3, settings, workdir=tmp_path / "md")
    assert [f["step"] for f in frames] == [1, 2, 3]
    assert record["exit_code"] == 0 and record["qe_version"] and "calculation = 'md'" in record["pw_input"]
    assert record["initial_pressure_gpa"] is not None and record["dt_fs"] == pytest.approx(0.7257, abs=1e-3)
    # the cell stays, the atoms move (a fraction of an Å per step at 1500 K), every frame has T and P
    for f in frames:
        assert np.allclose(f["structure"].lattice.matrix, start.lattice.matrix)
        assert f["temperature_k"] > 0
    assert all(f["pressure_gpa"] is not None for f in frames[:-1])
    d = frames[-1]["structure"].frac_coords - start.frac_coords
    d = (d - np.round(d)) @ start.lattice.matrix
    moved = np.linalg.norm(d, axis=1)
    assert 1e-3 < moved.max() < 0.5


@needs_qe
def test_md_that_cannot_converge_raises_with_record():
    settings = with_settings(TINY, md_ecutwfc=30.0, md_ecutrho=120.0, electron_maxstep=1)
    with pytest.raises(DftError) as info:
        md(pa3_h2(), 1500.0, 2, settings, name="tiny-md")
    assert "tiny-md" in str(info.value) and "output_tail" in info.value.record
