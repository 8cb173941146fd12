"""Tests for model/structures.py: reading CIF / POSCAR / extxyz / AIRSS .res and validating structures.

Inputs are generated inside the tests from pymatgen Structures with pymatgen's and ASE's own writers,
so a reader that mixes up axes, drops atoms or mangles coordinates is caught by comparing the read
structure with the one that was written.
"""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.res import ResIO

from elfscreen.model.errors import InputError, StructureError
from elfscreen.model.structures import (
    FORMATS,
    StructureLimits,
    guess_format,
    parse_structure,
    read_structure,
    validate_structure,
)


# --------------------------------------------------------------------------------------------------
# structures used as inputs


def hex_h() -> Structure:
    """A small hexagonal H cell (two H, 2.47 Å apart)."""
    return Structure(Lattice.hexagonal(2.5, 4.0), ["H", "H"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])


def cubic_cah6() -> Structure:
    """A cubic CaH6-like cell: Ca at the origin, six H on the faces (atoms at fractional 0 on purpose)."""
    coords = [[0, 0, 0], [0.25, 0, 0.5], [0.75, 0, 0.5], [0.5, 0.25, 0], [0.5, 0.75, 0], [0, 0.5, 0.25], [0, 0.5, 0.75]]
    return Structure(Lattice.cubic(3.5), ["Ca"] + ["H"] * 6, coords)


def triclinic_lih2() -> Structure:
    """A low-symmetry cell with generic coordinates, so that swapped axes or coordinates show."""
    lattice = Lattice.from_parameters(3.1, 3.4, 4.2, 80, 95, 105)
    return Structure(lattice, ["Li", "H", "H"], [[0.1, 0.2, 0.3], [0.55, 0.15, 0.8], [0.35, 0.7, 0.05]])


STRUCTURES = {"hexH": hex_h, "cubicCaH6": cubic_cah6, "triclinicLiH2": triclinic_lih2}


def write_input(structure: Structure, path, kind: str) -> None:
    """Write ``structure`` to ``path`` with pymatgen's / ASE's writer for ``kind``."""
    if kind == "cif":
        path.write_text(structure.to(fmt="cif"))
    elif kind == "poscar":
        path.write_text(structure.to(fmt="poscar"))
    elif kind == "extxyz":
        ase.io.write(str(path), AseAtomsAdaptor.get_atoms(structure), format="extxyz")
    elif kind == "res":
        path.write_text(ResIO.structure_to_str(structure))
    else:  # pragma: no cover - test bug
        raise AssertionError(kind)


def assert_same_structure(got: Structure, want: Structure, tol: float = 1e-6) -> None:
    """Same cell (lengths and angles) and the same atoms at the same fractional coordinates (mod 1)."""
    np.testing.assert_allclose(got.lattice.abc, want.lattice.abc, atol=tol)
    np.testing.assert_allclose(got.lattice.angles, want.lattice.angles, atol=1e-4)
    assert got.composition == want.composition
    assert len(got) == len(want)
    unmatched = list(range(len(got)))
    for site in want:
        for idx in unmatched:
            d = got[idx].frac_coords - site.frac_coords
            d -= np.round(d)
            if got[idx].specie == site.specie and np.abs(d).max() < tol:
                unmatched.remove(idx)
                break
        else:
            raise AssertionError(f"no {site.specie} at fractional {site.frac_coords} in the read structure:\n{got}")


def assert_error(err: StructureError, name: str, *fragments: str) -> None:
    """The message reads "<name>: <problem>" and the problem mentions every fragment."""
    message = str(err)
    assert message.startswith(f"{name}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert err.input_name == name


# --------------------------------------------------------------------------------------------------
# reading each format


@pytest.mark.parametrize("structure_name", list(STRUCTURES))
@pytest.mark.parametrize(
    "file_name, kind",
    [
        ("x.cif", "cif"),
        ("POSCAR", "poscar"),
        ("CONTCAR", "poscar"),
        ("x.vasp", "poscar"),
        ("x.extxyz", "extxyz"),
        ("x.xyz", "extxyz"),
        ("x.res", "res"),
    ],
)
def test_read_structure_round_trip(tmp_path, structure_name, file_name, kind):
    want = STRUCTURES[structure_name]()
    path = tmp_path / file_name
    write_input(want, path, kind)
    got = read_structure(path)
    assert_same_structure(got, want)


@pytest.mark.parametrize("kind", ["poscar", "extxyz"])
def test_cartesian_formats_keep_the_lattice_matrix(tmp_path, kind):
    # POSCAR and extxyz store the lattice vectors themselves: the matrix (not only a, b, c, angles) survives.
    want = triclinic_lih2()
    path = tmp_path / ("POSCAR" if kind == "poscar" else "x.extxyz")
    write_input(want, path, kind)
    got = read_structure(path)
    np.testing.assert_allclose(got.lattice.matrix, want.lattice.matrix, atol=1e-6)
    np.testing.assert_allclose(got.cart_coords, want.cart_coords, atol=1e-6)
    assert [str(s.specie) for s in got] == [str(s.specie) for s in want]


@pytest.mark.parametrize("kind", ["cif", "poscar", "extxyz", "res"])
def test_parse_structure_from_text(kind, tmp_path):
    want = cubic_cah6()
    path = tmp_path / "input"
    write_input(want, path, kind)
    got = parse_structure(path.read_text(), kind, "my-request")
    assert_same_structure(got, want)


@pytest.mark.parametrize("alias, kind", [("vasp", "poscar"), ("CONTCAR", "poscar"), ("xyz", "extxyz"), ("airss", "res"), ("CIF", "cif")])
def test_format_aliases(alias, kind, tmp_path):
    want = hex_h()
    path = tmp_path / "input"
    write_input(want, path, kind)
    assert_same_structure(parse_structure(path.read_text(), alias, "req"), want)


def test_read_structure_explicit_format_overrides_the_name(tmp_path):
    want = hex_h()
    path = tmp_path / "structure.txt"  # a name with no recognisable format
    write_input(want, path, "poscar")
    assert_same_structure(read_structure(path, fmt="poscar"), want)


# --------------------------------------------------------------------------------------------------
# guess_format


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.cif", "cif"),
        ("A.CIF", "cif"),
        ("dir/sub/CaH6.cif", "cif"),
        ("POSCAR", "poscar"),
        ("CONTCAR", "poscar"),
        ("POSCAR_relaxed", "poscar"),
        ("CONTCAR.3", "poscar"),
        ("poscar", "poscar"),
        ("x.vasp", "poscar"),
        ("x.poscar", "poscar"),
        ("x.xyz", "extxyz"),
        ("x.extxyz", "extxyz"),
        ("X.XYZ", "extxyz"),
        ("run-1.res", "res"),
    ],
)
def test_guess_format(name, fmt):
    assert guess_format(name) == fmt


@pytest.mark.parametrize("name", ["structure.txt", "x.json", "ELFCAR", "x.cube", "noextension"])
def test_guess_format_unknown_names_the_file(name):
    with pytest.raises(StructureError) as info:
        guess_format(name)
    assert_error(info.value, name, "cannot tell the structure format")
    for fmt in FORMATS:
        assert fmt in info.value.problem


def test_read_structure_unknown_extension(tmp_path):
    path = tmp_path / "structure.txt"
    write_input(hex_h(), path, "poscar")
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "structure.txt", "cannot tell the structure format")


def test_unknown_format_name():
    with pytest.raises(StructureError) as info:
        parse_structure(hex_h().to(fmt="poscar"), "pdb", "req.pdb")
    assert_error(info.value, "req.pdb", "unknown structure format 'pdb'")


def test_read_structure_missing_file(tmp_path):
    path = tmp_path / "missing.cif"
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert str(info.value).startswith(path.name + ": "), str(info.value)
    assert "cannot be read" in str(info.value)


# --------------------------------------------------------------------------------------------------
# validation failures


def test_no_hydrogen(tmp_path):
    s = Structure(Lattice.cubic(4.0), ["Ca", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "CaF.vasp"
    write_input(s, path, "poscar")
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "CaF.vasp", "contains no hydrogen", "CaF")


@pytest.mark.parametrize("kind, file_name", [("poscar", "POSCAR"), ("cif", "close.cif"), ("extxyz", "close.xyz")])
def test_atoms_too_close_across_the_periodic_boundary(tmp_path, kind, file_name):
    # 0.01 and 0.99 of a 3 Å cell: 2.94 Å apart in the cell, 0.06 Å apart across the boundary.
    s = Structure(Lattice.cubic(3.0), ["H", "H"], [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]])
    path = tmp_path / file_name
    write_input(s, path, kind)
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, file_name, "0.060 Å apart", "periodic images included", "minimum is 0.3")


def test_atoms_too_close_inside_the_cell():
    s = Structure(Lattice.cubic(3.0), ["Ca", "H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.55]])
    with pytest.raises(StructureError) as info:
        validate_structure(s, "inside")
    assert_error(info.value, "inside", "0.150 Å apart", "(H)")


def test_two_atoms_on_the_same_spot():
    s = Structure(Lattice.cubic(3.0), ["H", "H"], [[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]])
    with pytest.raises(StructureError) as info:
        validate_structure(s, "dup")
    assert_error(info.value, "dup", "0.000 Å apart")


def test_lattice_vector_shorter_than_the_minimum_distance(tmp_path):
    # Volume 0.2 × 5 × 5 = 5 Å³ is within the volume limits; the atom overlaps its own image 0.2 Å away.
    s = Structure(Lattice([[0.2, 0, 0], [0, 5, 0], [0, 0, 5]]), ["H"], [[0.5, 0.5, 0.5]])
    path = tmp_path / "POSCAR"
    write_input(s, path, "poscar")
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "POSCAR", "lattice vector shorter than 0.3", "own image")


def test_own_image_closer_along_a_lattice_combination():
    # Every lattice vector is ≥ 2.9 Å, but a + b is only 0.14 Å long: the atom still meets its own image.
    s = Structure(Lattice([[3, 0, 0], [-2.9, 0.1, 0], [0, 0, 10]]), ["H"], [[0.5, 0.5, 0.5]])
    assert min(s.lattice.abc) > 2.9
    with pytest.raises(StructureError) as info:
        validate_structure(s, "skewed")
    assert_error(info.value, "skewed", "atoms 1 (H) and 1 (H)", "0.141 Å apart")


def test_too_many_atoms(tmp_path):
    path = tmp_path / "CaH6.cif"
    write_input(cubic_cah6(), path, "cif")
    with pytest.raises(StructureError) as info:
        read_structure(path, limits=StructureLimits(max_atoms=6))
    assert_error(info.value, "CaH6.cif", "has 7 atoms", "limit is 6")
    # the limit itself is allowed
    assert len(read_structure(path, limits=StructureLimits(max_atoms=7))) == 7


def test_default_atom_limit():
    s = Structure(Lattice.cubic(30.0), ["H"] * 2001, np.random.default_rng(0).random((2001, 3)))
    with pytest.raises(StructureError) as info:
        validate_structure(s, "big")
    assert_error(info.value, "big", "has 2001 atoms", "limit is 2000")


@pytest.mark.parametrize(
    "limits, fragment",
    [
        (StructureLimits(max_volume_a3=40.0), "outside the allowed 1–40 Å³"),
        (StructureLimits(min_volume_a3=50.0), "outside the allowed 50–100000 Å³"),
    ],
)
def test_volume_outside_limits(tmp_path, limits, fragment):
    path = tmp_path / "x.res"
    write_input(cubic_cah6(), path, "res")  # 3.5³ = 42.875 Å³
    with pytest.raises(StructureError) as info:
        read_structure(path, limits=limits)
    assert_error(info.value, "x.res", "cell volume of 42.88 Å³", fragment)
    assert len(read_structure(path, limits=StructureLimits(min_volume_a3=42.0, max_volume_a3=43.0))) == 7


def test_default_volume_limits():
    tiny = Structure(Lattice.cubic(0.9), ["H"], [[0, 0, 0]])
    with pytest.raises(StructureError) as info:
        validate_structure(tiny, "tiny")
    assert_error(info.value, "tiny", "cell volume of 0.729 Å³")
    huge = Structure(Lattice.cubic(50.0), ["H"], [[0, 0, 0]])
    with pytest.raises(StructureError) as info:
        validate_structure(huge, "huge")
    assert_error(info.value, "huge", "cell volume of 1.25e+05 Å³")


@pytest.mark.parametrize(
    "text",
    [
        # plain xyz: no Lattice, so ASE sets pbc = F F F
        "2\nH2 molecule\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n",
        # a lattice, but explicitly not periodic
        '2\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="F F F"\nH 0 0 0\nH 0 0 1.5\n',
        # periodic in two dimensions only (a slab)
        '2\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T F"\nH 0 0 0\nH 0 0 1.5\n',
    ],
    ids=["no-lattice", "pbc-FFF", "pbc-TTF"],
)
def test_extxyz_not_periodic(tmp_path, text):
    path = tmp_path / "mol.xyz"
    path.write_text(text)
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "mol.xyz", "not periodic in three dimensions")


def test_extxyz_multiple_frames(tmp_path):
    atoms = AseAtomsAdaptor.get_atoms(hex_h())
    path = tmp_path / "traj.extxyz"
    ase.io.write(str(path), [atoms, atoms.copy(), atoms.copy()], format="extxyz")
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "traj.extxyz", "holds 3 structures", "one per input")


def test_cif_with_two_data_blocks(tmp_path):
    path = tmp_path / "two.cif"
    path.write_text(hex_h().to(fmt="cif") + "\n" + cubic_cah6().to(fmt="cif"))
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "two.cif", "holds 2 structures")


def test_cif_partial_occupancy(tmp_path):
    s = Structure(Lattice.cubic(3.5), ["Ca", {"H": 0.5}], [[0, 0, 0], [0.5, 0.5, 0.5]])
    text = s.to(fmt="cif")
    assert "0.5" in text  # the writer really wrote a partial occupancy
    path = tmp_path / "disordered.cif"
    path.write_text(text)
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "disordered.cif", "partial occupancies")


GARBAGE = [
    "hello world\nthis is not a structure file\n",
    "garbage",
    "1 2 3\n4 5 6\n",
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text", GARBAGE, ids=["words", "one-word", "numbers"])
def test_garbage_text(fmt, text):
    with pytest.raises(StructureError) as info:
        parse_structure(text, fmt, "junk.in")
    assert_error(info.value, "junk.in", f"is not a readable {fmt} file (")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text", ["", "   \n\n\t\n"], ids=["empty", "whitespace"])
def test_empty_text(fmt, text):
    with pytest.raises(StructureError) as info:
        parse_structure(text, fmt, "blank.in")
    assert str(info.value) == "blank.in: is empty"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.cif"
    path.write_text("")
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert str(info.value) == "empty.cif: is empty"


def test_truncated_poscar(tmp_path):
    text = cubic_cah6().to(fmt="poscar")
    lines = text.splitlines()
    path = tmp_path / "POSCAR"
    path.write_text("\n".join(lines[:5]) + "\n")  # title, scale and lattice only
    with pytest.raises(StructureError) as info:
        read_structure(path)
    assert_error(info.value, "POSCAR", "is not a readable poscar file")


# --------------------------------------------------------------------------------------------------
# the error object


def test_error_to_dict(tmp_path):
    path = tmp_path / "nohydrogen.vasp"
    write_input(Structure(Lattice.cubic(4.0), ["Ca"], [[0, 0, 0]]), path, "poscar")
    with pytest.raises(StructureError) as info:
        read_structure(path)
    err = info.value
    assert isinstance(err, InputError) and isinstance(err, ValueError)
    assert err.code == "invalid_structure"
    assert err.to_dict() == {
        "error": {"code": "invalid_structure", "message": str(err), "input": "nohydrogen.vasp"}
    }
    assert err.to_dict()["error"]["message"] == "nohydrogen.vasp: contains no hydrogen (composition Ca)"


# --------------------------------------------------------------------------------------------------
# valid edge cases


@pytest.mark.parametrize("across_boundary", [False, True])
def test_atoms_0_35_angstrom_apart_pass(tmp_path, across_boundary):
    # 0.35 Å is just above the 0.3 Å minimum; 0.29 Å is just below it.
    def two_h(d):
        x = (0.0, d / 3.0) if not across_boundary else (0.5 * d / 3.0, 1.0 - 0.5 * d / 3.0)
        return Structure(Lattice.cubic(3.0), ["H", "H"], [[x[0], 0.5, 0.5], [x[1], 0.5, 0.5]])

    ok = two_h(0.35)
    path = tmp_path / "POSCAR"
    write_input(ok, path, "poscar")
    got = read_structure(path)
    assert got.get_distance(0, 1) == pytest.approx(0.35, abs=1e-6)
    with pytest.raises(StructureError):
        validate_structure(two_h(0.29), "close")


def test_custom_min_distance():
    s = Structure(Lattice.cubic(3.0), ["H", "H"], [[0, 0.5, 0.5], [0.2, 0.5, 0.5]])  # 0.6 Å apart
    validate_structure(s, "s")
    with pytest.raises(StructureError) as info:
        validate_structure(s, "s", StructureLimits(min_distance_a=0.7))
    assert_error(info.value, "s", "0.600 Å apart", "minimum is 0.7")



# --------------------------------------------------------------------------------------------------
# untrusted numbers and counts: refused before anything costly runs


def _poscar_with(value: str) -> str:
    lines = cubic_cah6().to(fmt="poscar").splitlines()
    lines[-1] = f"{value} 0.5 0.75 H"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("value, fragment", [("nan", "non-finite coordinate"), ("inf", "non-finite coordinate"),
                                             ("1e10", "cells away"), ("1e308", "cells away")])
def test_coordinates_that_are_not_finite_or_far_away(value, fragment):
    with pytest.raises(StructureError) as info:
        parse_structure(_poscar_with(value), "poscar", "POSCAR_bad")
    assert_error(info.value, "POSCAR_bad", "atom 7 (H)", fragment)


@pytest.mark.parametrize("value", ["nan", "1e10"])
def test_extxyz_coordinate_that_is_not_finite_or_far_away(value):
    text = f'2\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\nH 0 0 0\nH {value} 1.5 1.5\n'
    with pytest.raises(StructureError) as info:
        parse_structure(text, "extxyz", "bad.xyz")
    assert_error(info.value, "bad.xyz", "atom 2 (H)")


@pytest.mark.parametrize("scale, fragment", [("1e10", "lattice vector 3.5e+10 Å long"), ("nan", "non-finite")])
def test_lattice_that_is_huge_or_not_finite(scale, fragment):
    lines = cubic_cah6().to(fmt="poscar").splitlines()
    lines[1] = scale
    with pytest.raises(StructureError) as info:
        parse_structure("\n".join(lines) + "\n", "poscar", "POSCAR_cell")
    assert_error(info.value, "POSCAR_cell", fragment)


def test_extxyz_atom_count_line_is_checked_before_reading_atoms():
    import time

    text = '1000000000000\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\nH 0 0 0\n'
    start = time.perf_counter()
    with pytest.raises(StructureError) as info:
        parse_structure(text, "extxyz", "bomb.xyz")
    assert time.perf_counter() - start < 1.0
    assert_error(info.value, "bomb.xyz", "line 1 declares 1,000,000,000,000 atoms", "limit")


def cif_sites(group: str, n_sites: int, seed: int = 0) -> str:
    """A CIF of ``n_sites`` H sites at random positions in space group ``group`` (given by name only)."""
    rng = np.random.default_rng(seed)
    rows = "\n".join(f"H{k} H {x:.5f} {y:.5f} {z:.5f}" for k, (x, y, z) in enumerate(rng.random((n_sites, 3))))
    return (f"data_bomb\n_symmetry_space_group_name_H-M '{group}'\n_cell_length_a 20\n_cell_length_b 20\n"
            f"_cell_length_c 20\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n"
            f"_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n{rows}\n")


def test_cif_symmetry_bomb_is_refused_before_expansion():
    import time

    start = time.perf_counter()
    with pytest.raises(StructureError) as info:
        parse_structure(cif_sites("F m -3 m", 300), "cif", "bomb.cif")
    assert time.perf_counter() - start < 2.0  # pymatgen would expand 57,600 images for minutes
    assert_error(info.value, "bomb.cif", "expands to 57,600 atom images", "limit is 2,500")


@pytest.mark.parametrize("key, value", [("_cell_length_a", "nan"), ("_cell_length_b", "1e308"),
                                        ("_cell_angle_gamma", "-90"), ("_atom_site_fract_x", "inf")])
def test_cif_numbers_are_checked_before_parsing(key, value):
    text = cubic_cah6().to(fmt="cif")
    lines = text.splitlines()
    if key.startswith("_cell"):
        lines = [f"{key}   {value}" if line.startswith(key + " ") else line for line in lines]
    else:
        k = next(i for i, line in enumerate(lines) if line.strip().startswith("H "))
        parts = lines[k].split()
        parts[3] = value
        lines[k] = " ".join(parts)
    with pytest.raises(StructureError) as info:
        parse_structure("\n".join(lines) + "\n", "cif", "x.cif")
    assert_error(info.value, "x.cif", "must be a finite number")


def test_cif_with_an_empty_atom_loop():
    text = "data_x\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\n_cell_angle_alpha 90\n" \
           "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n"
    with pytest.raises(StructureError) as info:
        parse_structure(text, "cif", "empty.cif")
    assert info.value.input_name == "empty.cif"
