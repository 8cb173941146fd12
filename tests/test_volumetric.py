"""Tests for model/volumetric.py: ELF grids in cube and ELFCAR files.

The grid-ordering tests use a non-cubic grid (5×6×7) on a triclinic cell whose values encode their own
index, and check the file layout by reading the raw text here, independently of the product's parser.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.errors import GridError, InputError
from elfscreen.model.volumetric import (
    BOHR_A,
    ElfGrid,
    guess_grid_format,
    parse_grid,
    qe_rescale,
    read_grid,
    write_grid,
)
from reference import tcestime as reference

SHAPE = (5, 6, 7)


def index_grid() -> ElfGrid:
    """values[i, j, k] = (i + 10 j + 100 k) / 1000 on a triclinic cell with three atoms."""
    lattice = Lattice.from_parameters(4.1, 4.6, 5.3, 81, 97, 112)
    structure = Structure(lattice, ["Ca", "H", "H"], [[0.0, 0.0, 0.0], [0.25, 0.4, 0.1], [0.6, 0.15, 0.8]])
    i, j, k = np.indices(SHAPE)
    return ElfGrid(structure=structure, values=(i + 10 * j + 100 * k) / 1000.0, name="index")


def assert_same_atoms(got: Structure, want: Structure, tol: float = 1e-8) -> None:
    assert [str(s.specie) for s in got] == [str(s.specie) for s in want]
    d = got.frac_coords - want.frac_coords
    d -= np.round(d)
    assert np.abs(d).max() < tol, (got.frac_coords, want.frac_coords)


def numbers(text: str) -> list[float]:
    return [float(t) for t in text.split()]


def grid_error(path, *args, **kwargs) -> GridError:
    with pytest.raises(GridError) as info:
        read_grid(path, *args, **kwargs)
    return info.value


def assert_grid_error(err: GridError, name: str, *fragments: str) -> None:
    message = str(err)
    assert message.startswith(f"{name}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert err.code == "invalid_grid"
    assert err.input_name == name
    assert err.to_dict() == {"error": {"code": "invalid_grid", "message": message, "input": name}}


# --------------------------------------------------------------------------------------------------
# writing and reading back; the layout of each format


@pytest.mark.parametrize("file_name", ["grid.cube", "grid.cube.gz", "ELFCAR", "ELFCAR.gz", "x.ELFCAR"])
def test_round_trip_keeps_values_lattice_and_atoms(tmp_path, file_name):
    grid = index_grid()
    path = write_grid(grid, tmp_path / file_name)
    assert path == tmp_path / file_name
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == file_name.endswith(".gz")
    got = read_grid(path)
    assert got.shape == SHAPE
    assert got.name == file_name
    assert got.values.dtype == np.float64
    assert np.array_equal(got.values, grid.values)
    np.testing.assert_allclose(got.structure.lattice.matrix, grid.structure.lattice.matrix, rtol=0, atol=1e-9)
    assert_same_atoms(got.structure, grid.structure)


@pytest.mark.parametrize("fmt, plain, zipped", [("cube", "a.cube", "a.cube.gz"), ("elfcar", "ELFCAR", "ELFCAR.gz")])
def test_gz_holds_the_same_text(tmp_path, fmt, plain, zipped):
    grid = index_grid()
    write_grid(grid, tmp_path / plain)
    write_grid(grid, tmp_path / zipped)
    assert gzip.decompress((tmp_path / zipped).read_bytes()) == (tmp_path / plain).read_bytes()


def test_cube_layout_k_fastest_in_bohr(tmp_path):
    grid = index_grid()
    path = write_grid(grid, tmp_path / "grid.cube")
    lines = path.read_text().splitlines()
    n_atoms, *origin = lines[2].split()
    assert int(n_atoms) == 3
    assert numbers(" ".join(origin)) == [0.0, 0.0, 0.0]
    lattice = grid.structure.lattice
    for axis in range(3):
        fields = lines[3 + axis].split()
        n = int(fields[0])
        assert n == SHAPE[axis]  # positive count: bohr
        voxel = np.array(numbers(" ".join(fields[1:4])))
        # voxel vector × N = lattice vector, in bohr
        assert np.linalg.norm(voxel) * n == pytest.approx(lattice.abc[axis] / 0.529177210903, rel=1e-9)
        np.testing.assert_allclose(voxel * n * 0.529177210903, lattice.matrix[axis], atol=1e-9)
    for site, line in zip(grid.structure, lines[6:9]):
        fields = line.split()
        assert int(fields[0]) == site.specie.Z
        np.testing.assert_allclose(numbers(" ".join(fields[2:5])), site.coords / 0.529177210903, atol=1e-9)
    data_lines = lines[9:]
    data = numbers(" ".join(data_lines))
    v = grid.values
    assert data[:4] == [v[0, 0, 0], v[0, 0, 1], v[0, 0, 2], v[0, 0, 3]]
    assert data[7] == v[0, 1, 0]  # after the N3 = 7 values of the first k-row
    assert data[7 * 6] == v[1, 0, 0]
    assert data == list(v.ravel(order="C"))
    # every k-row starts a new line: 7 values per row → lines of 6 and 1
    assert [len(line.split()) for line in data_lines[:4]] == [6, 1, 6, 1]
    assert len(data_lines) == 5 * 6 * 2


def test_elfcar_layout_i_fastest(tmp_path):
    grid = index_grid()
    path = write_grid(grid, tmp_path / "ELFCAR")
    lines = path.read_text().splitlines()
    grid_line = next(n for n, line in enumerate(lines) if line.split() == ["5", "6", "7"])
    data = numbers(" ".join(lines[grid_line + 1 :]))
    v = grid.values
    assert data[:4] == [v[0, 0, 0], v[1, 0, 0], v[2, 0, 0], v[3, 0, 0]]
    assert data[5] == v[0, 1, 0]
    assert data[5 * 6] == v[0, 0, 1]
    assert data == list(v.ravel(order="F"))
    # the header is a POSCAR of the structure, in Å
    lattice_rows = np.array([numbers(lines[n]) for n in (2, 3, 4)]) * float(lines[1])
    np.testing.assert_allclose(lattice_rows, grid.structure.lattice.matrix, atol=1e-9)


@pytest.mark.parametrize("fmt", ["cube", "elfcar"])
def test_explicit_format_and_parse_grid(tmp_path, fmt):
    grid = index_grid()
    path = write_grid(grid, tmp_path / "grid.dat", fmt=fmt)  # a name that tells nothing
    got = read_grid(path, fmt=fmt.upper())
    assert np.array_equal(got.values, grid.values)
    parsed = parse_grid(path.read_text(), fmt, "from-text")
    assert parsed.name == "from-text"
    assert np.array_equal(parsed.values, grid.values)


def test_digits(tmp_path):
    rng = np.random.default_rng(1)
    grid = index_grid()
    grid.values = rng.random(SHAPE)
    coarse = read_grid(write_grid(grid, tmp_path / "a.cube"))  # 5 significant digits
    assert not np.array_equal(coarse.values, grid.values)
    np.testing.assert_allclose(coarse.values, grid.values, rtol=1e-4)
    fine = read_grid(write_grid(grid, tmp_path / "b.cube", digits=17))
    assert np.array_equal(fine.values, grid.values)
    elfcar = read_grid(write_grid(grid, tmp_path / "ELFCAR"))  # 11 significant digits
    np.testing.assert_allclose(elfcar.values, grid.values, rtol=1e-10)


def test_grid_geometry_helpers():
    grid = index_grid()
    assert grid.shape == SHAPE
    assert grid.spacing_a == pytest.approx((4.1 / 5, 4.6 / 6, 5.3 / 7))
    np.testing.assert_allclose(grid.frac_of_index([[1, 3, 7], [2.5, 0, 0]]), [[0.2, 0.5, 1.0], [0.5, 0, 0]])


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("x.cube", "cube"),
        ("X.CUBE.GZ", "cube"),
        ("x.cub", "cube"),
        ("ELFCAR", "elfcar"),
        ("ELFCAR.gz", "elfcar"),
        ("CaYH20.vasp.ELFCAR", "elfcar"),
        ("CHGCAR", "elfcar"),
        ("run.vasp", "elfcar"),
    ],
)
def test_guess_grid_format(name, fmt):
    assert guess_grid_format(name) == fmt


# --------------------------------------------------------------------------------------------------
# the TcESTIME DFT reference grids (tests/data/reference/)


@pytest.mark.slow
def test_reference_vasp_elfcar():
    path = reference("CaYH20.vasp.ELFCAR.gz")
    grid = read_grid(path)
    assert grid.shape == (28, 28, 36)
    assert grid.structure.composition.formula == "Ca1 Y1 H20"
    np.testing.assert_allclose(grid.structure.lattice.abc, (2.9638, 2.9638, 4.18651), atol=1e-9)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    start = next(n for n, line in enumerate(lines) if line.split() == ["28", "28", "36"])
    data = numbers(" ".join(lines[start + 1 : start + 4]))  # 10 values a line
    assert grid.values[0, 0, 0] == data[0]
    assert grid.values[1, 0, 0] == data[1]
    assert grid.values[0, 1, 0] == data[28]
    assert 0.0 < grid.values.min() and grid.values.max() <= 1.0


@pytest.mark.slow
def test_reference_qe_cube():
    path = reference("CaYH18.qe63.ELF.cube.gz")
    grid = read_grid(path)
    assert grid.shape == (54, 54, 72)
    assert len(grid.structure) == 20
    assert grid.structure.composition.formula == "Ca1 Y1 H18"
    np.testing.assert_allclose(grid.structure.lattice.abc, (54 * 0.103718 * BOHR_A,) * 2 + (72 * 0.109880 * BOHR_A,), rtol=1e-12)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    data = numbers(" ".join(lines[26:27]))
    assert list(grid.values[0, 0, :3]) == data[:3]
    assert data[:3] == [0.10970e-05, 0.13442e-03, 0.66374e-02]


@pytest.mark.slow
@pytest.mark.parametrize("name, out_name", [("CaYH20.vasp.ELFCAR.gz", "ELFCAR"), ("CaYH18.qe63.ELF.cube.gz", "again.cube")])
def test_reference_round_trip_is_lossless(tmp_path, name, out_name):
    grid = read_grid(reference(name))
    again = read_grid(write_grid(grid, tmp_path / out_name))  # default digits
    assert np.array_equal(again.values, grid.values)
    np.testing.assert_allclose(again.structure.lattice.matrix, grid.structure.lattice.matrix, atol=1e-9)
    assert_same_atoms(again.structure, grid.structure, tol=1e-9)


# --------------------------------------------------------------------------------------------------
# ELFCAR extras: spin-polarised files and augmentation sections


def test_spin_polarised_elfcar_returns_the_first_block(tmp_path):
    grid = index_grid()
    path = write_grid(grid, tmp_path / "ELFCAR")
    first = path.read_text()
    second = 1.0 - grid.values  # different values in the second (spin-down) block
    block = "    5    6    7\n" + "\n".join(
        " ".join(f"{x:.10E}" for x in row) for row in second.ravel(order="F").reshape(-1, 5)
    ) + "\n"
    path.write_text(first + block)
    got = read_grid(path)
    assert np.array_equal(got.values, grid.values)
    # also with a blank line between the blocks
    path.write_text(first + "\n" + block)
    assert np.array_equal(read_grid(path).values, grid.values)


def test_elfcar_followed_by_augmentation_occupancies(tmp_path):
    grid = index_grid()
    path = write_grid(grid, tmp_path / "CHGCAR")
    path.write_text(
        path.read_text()
        + "augmentation occupancies   1  4\n  0.1234567E+00 -0.2345678E-01  0.0000000E+00  0.1000000E+01\n"
        + "augmentation occupancies   2  4\n  0.1234567E+00 -0.2345678E-01  0.0000000E+00  0.1000000E+01\n"
    )
    got = read_grid(path)
    assert np.array_equal(got.values, grid.values)


def test_elfcar_with_stray_values_after_the_grid(tmp_path):
    grid = index_grid()
    path = write_grid(grid, tmp_path / "ELFCAR")
    path.write_text(path.read_text() + " 0.5 0.5\n")
    assert_grid_error(grid_error(path), "ELFCAR", "holds more values than the header's 5×6×7 grid")


# --------------------------------------------------------------------------------------------------
# Quantum ESPRESSO rescale


def test_qe_rescale_analytic():
    assert qe_rescale(np.array([1.0]))[0] == 1.0
    assert qe_rescale(np.array([0.0]))[0] == 0.0
    assert qe_rescale(0.5) == pytest.approx(1.0 / (1.0 + 2.0 ** (4.0 / 3.0)), rel=1e-14)
    x = 0.8
    assert qe_rescale(x) == pytest.approx(1.0 / (1.0 + 2.0 ** (4.0 / 3.0) * (1.0 / x - 1.0)), rel=1e-14)
    # the inverse map (ELF written by QE 6.8–7.5) comes back to the true ELF
    true = np.linspace(0.01, 0.99, 50)
    slipped = 1.0 / (1.0 + 2.0 ** (-4.0 / 3.0) * (1.0 / true - 1.0))
    np.testing.assert_allclose(qe_rescale(slipped), true, rtol=1e-12)


def test_qe_rescale_monotonic_and_in_range():
    x = np.linspace(0.0, 1.0, 10001)
    y = qe_rescale(x)
    assert y.shape == x.shape
    assert np.all(np.diff(y) > 0)
    assert y[0] == 0.0 and y[-1] == 1.0
    assert np.all(y <= x)  # the slip inflates ELF: the rescale lowers every value in (0, 1)
    assert np.all(np.isfinite(qe_rescale(np.array([0.0, 1e-300, -0.1]))))


@pytest.mark.slow
def test_qe72_rescaled_reference_matches_qe63():
    # CaYH18.qe72-rescaled.ELF.cube.gz already holds the rescaled ELF (its README: "QE 7.2, ELF rescaled
    # for 6.8–7.5"): read as is, it matches the QE 6.3 grid (observed max |diff| 7.3e-5, mean 2.0e-5);
    # rescaling it a second time moves it far away (observed mean |diff| 0.158, max 0.227).
    qe63 = read_grid(reference("CaYH18.qe63.ELF.cube.gz"))
    qe72 = read_grid(reference("CaYH18.qe72-rescaled.ELF.cube.gz"))
    assert qe72.shape == qe63.shape
    diff = np.abs(qe72.values - qe63.values)
    assert diff.max() < 2e-4 and diff.mean() < 1e-4
    twice = read_grid(reference("CaYH18.qe72-rescaled.ELF.cube.gz"), rescale_qe=True)
    assert np.abs(twice.values - qe63.values).mean() > 0.1


@pytest.mark.slow
def test_read_grid_rescale_qe_undoes_the_qe_slip(tmp_path):
    # Make what QE 6.8–7.5 would have written for the QE 6.3 grid (apply the slip), then read it with
    # rescale_qe=True: back to the QE 6.3 values, to the 6 digits written (observed max |diff| 1.3e-6;
    # without the rescale the mean |diff| is 0.18).
    qe63 = read_grid(reference("CaYH18.qe63.ELF.cube.gz"))
    slipped = ElfGrid(
        structure=qe63.structure,
        values=1.0 / (1.0 + 2.0 ** (-4.0 / 3.0) * (1.0 / qe63.values - 1.0)),
        name="slipped",
    )
    path = write_grid(slipped, tmp_path / "slipped.cube.gz", digits=6)
    raw = read_grid(path)
    assert np.abs(raw.values - qe63.values).mean() > 0.05
    fixed = read_grid(path, rescale_qe=True)
    np.testing.assert_allclose(fixed.values, qe63.values, atol=5e-6)


# --------------------------------------------------------------------------------------------------
# cube files written by other programs


def test_cube_negative_voxel_counts_are_angstrom(tmp_path):
    # Gaussian convention: a negative voxel count means the vectors (and positions) are in Å.
    lattice = Lattice.hexagonal(3.0, 5.0)
    voxel = lattice.matrix / np.array([[4], [4], [6]])
    header = [
        "cube in angstrom",
        "second comment line",
        f"    2 {1.0:12.6f} {2.0:12.6f} {3.0:12.6f}",  # non-zero origin
    ]
    for n, v in zip((4, 4, 6), voxel):
        header.append(f"{-n:5d} {v[0]:14.10f} {v[1]:14.10f} {v[2]:14.10f}")
    atoms_cart = [lattice.get_cartesian_coords([0.5, 0.25, 0.1]), lattice.get_cartesian_coords([0.0, 0.0, 0.5])]
    for z, xyz in zip((1, 20), atoms_cart):
        x, y, zc = xyz + np.array([1.0, 2.0, 3.0])
        header.append(f"{z:5d} {float(z):10.6f} {x:14.10f} {y:14.10f} {zc:14.10f}")
    values = np.arange(4 * 4 * 6) / 100.0
    body = "\n".join(" ".join(f"{x:.5E}" for x in row) for row in values.reshape(-1, 6))
    path = tmp_path / "angstrom.cube"
    path.write_text("\n".join(header) + "\n" + body + "\n")
    grid = read_grid(path)
    assert grid.shape == (4, 4, 6)
    np.testing.assert_allclose(grid.structure.lattice.matrix, lattice.matrix, atol=1e-9)
    assert [str(s.specie) for s in grid.structure] == ["H", "Ca"]
    np.testing.assert_allclose(grid.structure.frac_coords, [[0.5, 0.25, 0.1], [0.0, 0.0, 0.5]], atol=1e-9)
    assert np.array_equal(grid.values, values.reshape(4, 4, 6))


def test_cube_with_nonzero_origin_in_bohr(tmp_path):
    grid = index_grid()
    lines = write_grid(grid, tmp_path / "g.cube").read_text().splitlines()
    shift = np.array([0.5, -1.0, 2.0])
    lines[2] = f"    3 {shift[0]:16.10f} {shift[1]:16.10f} {shift[2]:16.10f}"
    for n in range(6, 9):
        f = lines[n].split()
        xyz = np.array(numbers(" ".join(f[2:5]))) + shift
        lines[n] = f"{f[0]} {f[1]} {xyz[0]:.10f} {xyz[1]:.10f} {xyz[2]:.10f}"
    path = tmp_path / "shifted.cube"
    path.write_text("\n".join(lines) + "\n")
    got = read_grid(path)
    assert_same_atoms(got.structure, grid.structure)  # positions relative to the grid origin


# --------------------------------------------------------------------------------------------------
# bad files


def written(tmp_path, name: str) -> tuple[Path, list[str]]:
    path = write_grid(index_grid(), tmp_path / name)
    raw = path.read_bytes()
    return path, (gzip.decompress(raw) if name.endswith(".gz") else raw).decode().splitlines()


@pytest.mark.parametrize("name", ["bad.cube", "ELFCAR"])
def test_truncated_data(tmp_path, name):
    path, lines = written(tmp_path, name)
    path.write_text("\n".join(lines[:-3]) + "\n")
    assert_grid_error(grid_error(path), name, "is truncated", "5×6×7 grid needs 210")


@pytest.mark.parametrize("name", ["bad.cube", "ELFCAR"])
def test_header_only(tmp_path, name):
    path, lines = written(tmp_path, name)
    cut = 9 if name.endswith("cube") else next(n for n, line in enumerate(lines) if line.split() == ["5", "6", "7"]) + 1
    path.write_text("\n".join(lines[:cut]) + "\n")
    assert_grid_error(grid_error(path), name, "is truncated: it holds 0 values")


@pytest.mark.parametrize(
    "extra",
    [" 1.0E-01\n", "    5    6    7\n 1.0E-01\n", "augmentation occupancies 1 1\n 0.1\n"],
    ids=["one-value", "second-block", "augmentation"],  # cube files have no second block nor augmentation
)
def test_cube_more_values_than_the_grid(tmp_path, extra):
    path, lines = written(tmp_path, "long.cube")
    path.write_text("\n".join(lines) + "\n" + extra)
    assert_grid_error(grid_error(path), "long.cube", "holds more values than the header's 5×6×7 grid")


def _replace_value(lines: list[str], first_data: int, value_number: int, token: str) -> list[str]:
    """Replace the ``value_number``-th data value (1-based) with ``token``."""
    seen = 0
    out = list(lines)
    for n in range(first_data, len(out)):
        fields = out[n].split()
        if seen + len(fields) >= value_number:
            fields[value_number - seen - 1] = token
            out[n] = " ".join(fields)
            return out
        seen += len(fields)
    raise AssertionError("not enough values")


def _first_data_line(name: str, lines: list[str]) -> int:
    if name.endswith(".cube"):
        return 6 + int(lines[2].split()[0])
    return next(n for n, line in enumerate(lines) if line.split() == ["5", "6", "7"]) + 1


@pytest.mark.parametrize("name", ["nan.cube", "ELFCAR"])
@pytest.mark.parametrize("token", ["NaN", "nan", "inf", "-Infinity"])
def test_non_finite_value(tmp_path, name, token):
    path, lines = written(tmp_path, name)
    path.write_text("\n".join(_replace_value(lines, _first_data_line(name, lines), 23, token)) + "\n")
    assert_grid_error(grid_error(path), name, "grid value #23 is ", "NaN or infinite")


@pytest.mark.parametrize("name", ["word.cube", "ELFCAR"])
@pytest.mark.parametrize("token", ["abc", "0.5-100", "1.0E", "***********"])
def test_non_numeric_value(tmp_path, name, token):
    path, lines = written(tmp_path, name)
    path.write_text("\n".join(_replace_value(lines, _first_data_line(name, lines), 17, token)) + "\n")
    assert_grid_error(grid_error(path), name, f"grid value #17 is not a number ({token!r})")


@pytest.mark.parametrize("name", ["random.cube", "ELFCAR"])
@pytest.mark.parametrize(
    "text",
    [
        "hello world\nthis is not a grid\nat all\n",
        "The quick brown fox\n" * 40,
        "1 2 3\n4 5 6\n",
        "x",
    ],
    ids=["short", "long", "numbers", "one-char"],
)
def test_header_not_a_grid(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    fmt = "cube" if name.endswith(".cube") else "elfcar"
    assert_grid_error(grid_error(path), name, f"is not a readable {fmt} file")


@pytest.mark.parametrize("name", ["random.cube", "ELFCAR"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("")
    assert_grid_error(grid_error(path), name)


@pytest.mark.parametrize("bad", [(1, 6, 7), (5, 0, 7), (5, 6, 1)])
def test_cube_grid_dimension_below_two(tmp_path, bad):
    path, lines = written(tmp_path, "small.cube")
    for axis in range(3):
        fields = lines[3 + axis].split()
        fields[0] = str(bad[axis])
        lines[3 + axis] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    assert_grid_error(grid_error(path), "small.cube", "invalid grid size", "≥ 2")


def test_elfcar_grid_dimension_below_two(tmp_path):
    path, lines = written(tmp_path, "ELFCAR")
    n = _first_data_line("ELFCAR", lines) - 1
    lines[n] = "    5    1    7"
    path.write_text("\n".join(lines) + "\n")
    assert_grid_error(grid_error(path), "ELFCAR", "invalid grid size (5, 1, 7)")


def test_orbital_cube(tmp_path):
    path, lines = written(tmp_path, "orbital.cube")
    fields = lines[2].split()
    fields[0] = "-3"
    lines[2] = " ".join(fields)
    lines.insert(9, "    1    7")  # the orbital-count line an orbital cube has after the atoms
    path.write_text("\n".join(lines) + "\n")
    assert_grid_error(grid_error(path), "orbital.cube", "orbital cube")


def test_cube_with_missing_atom_lines(tmp_path):
    path, lines = written(tmp_path, "atoms.cube")
    path.write_text("\n".join(lines[:7]) + "\n")  # header promises 3 atoms, has 1
    assert_grid_error(grid_error(path), "atoms.cube", "promises 3 atoms")


def test_unknown_format_name(tmp_path):
    path, _ = written(tmp_path, "grid.cube")
    assert_grid_error(grid_error(path, fmt="xsf"), "grid.cube", "unknown grid format 'xsf'")


@pytest.mark.parametrize("name", ["grid.dat", "density.xsf", "POSCAR", "noext"])
def test_format_cannot_be_guessed(tmp_path, name):
    path = tmp_path / name
    path.write_text("whatever\n")
    assert_grid_error(grid_error(path), name, "cannot tell the grid format")
    with pytest.raises(GridError):
        guess_grid_format(name)


@pytest.mark.parametrize("name", ["missing.cube", "ELFCAR"])
def test_nonexistent_file(tmp_path, name):
    err = grid_error(tmp_path / name)
    assert_grid_error(err, name, "cannot be read")
    assert isinstance(err, InputError) and isinstance(err, ValueError)


def test_truncated_gzip(tmp_path):
    path, _ = written(tmp_path, "cut.cube.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert_grid_error(grid_error(path), "cut.cube.gz", "cannot be read")


def test_corrupt_gzip(tmp_path):
    path, _ = written(tmp_path, "corrupt.cube.gz")
    raw = bytearray(path.read_bytes())
    for n in range(40, len(raw) - 40):
        raw[n] ^= 0x5A
    path.write_bytes(bytes(raw))
    assert_grid_error(grid_error(path), "corrupt.cube.gz", "cannot be read")


def test_dataset_npz_reads_as_a_grid_and_a_broken_one_is_named(tmp_path):
    from elfscreen.model.volumetric import read_grid

    s = Structure(Lattice.cubic(3.0), ["H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    elf = np.linspace(0, 1, 4 * 5 * 6).reshape(4, 5, 6).astype(np.float16)
    np.savez_compressed(tmp_path / "x.npz", elf=elf, lattice=s.lattice.matrix, species=np.array(["H", "H"]),
                        frac_coords=s.frac_coords)
    g = read_grid(tmp_path / "x.npz")
    assert g.shape == (4, 5, 6) and g.values.dtype == np.float64 and np.array_equal(g.values, elf.astype(np.float64))
    assert np.allclose(g.structure.lattice.matrix, s.lattice.matrix) and g.name == "x"
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(GridError, match="bad.npz"):
        read_grid(tmp_path / "bad.npz")
