"""The DFT driver for hydrides: pseudopotential table, H_DOS, prototypes and a tiny real run.

The QE runs (a 4-atom H3S cell at 35/140 Ry, a few seconds) need Debian's quantum-espresso; under
CI=true a skip is a failure, and .ci/run installs it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.dataset import generate, summary_of
from elfscreen.model.dft import HYDRIDE_SETTINGS, DftError, elf_of, pseudopotentials, pw_scf_input, qe_available, with_settings
from elfscreen.model.hdos import h_dos_from_projwfc, h_share, projections_at, read_pdos_fermi
from elfscreen.model.potentials import (
    SPECIES_FILES,
    PseudopotentialError,
    pseudopotentials_for,
    species_pseudopotential,
    upf_kind,
)
from elfscreen.model.prototypes import PROTOTYPES, min_distance_ok, prototype_entries

PDOS = Path(__file__).resolve().parent / "data" / "pdos"
TINY = with_settings(HYDRIDE_SETTINGS, ecutwfc=35.0, ecutrho=140.0, kspacing=0.6, relax_ecutwfc=35.0,
                     relax_ecutrho=140.0, relax_kspacing=0.8)
needs_qe = pytest.mark.skipif(not qe_available(), reason="pw.x/pp.x (Debian quantum-espresso) not installed")
PAW_HEADER = '<UPF version="2.0.1">\n<PP_HEADER generated="x" element="S" pseudo_type="PAW" relativistic="scalar"\n' \
             ' is_ultrasoft="T" is_paw="T" core_correction="T" functional="PBE" z_valence="6.0"/>\n</UPF>\n'


def h3s() -> Structure:
    """H3S Im-3m, a = 3.073 Å, primitive cell (S + 3 H)."""
    conv = Structure.from_spacegroup("Im-3m", Lattice.cubic(3.073), ["S", "H"], [[0, 0, 0], [0, 0.5, 0.5]])
    return conv.get_primitive_structure()


# --------------------------------------------------------------------------------------------------
# pseudopotentials


def test_every_shipped_file_is_norm_conserving_and_unpacks(tmp_path):
    for element in SPECIES_FILES:
        pp = species_pseudopotential(element, tmp_path)
        assert pp.element == element and pp.source == "shipped" and pp.path.is_file()
        assert upf_kind(pp.path.read_text()) == "NC"
    # the valence convention: semicore for metals, valence-only for the p-block and H
    assert SPECIES_FILES["La"] == "La-sp.upf" and SPECIES_FILES["Ca"] == "Ca-sp.upf" and SPECIES_FILES["S"] == "S.upf"


def test_paw_or_ultrasoft_files_are_refused(tmp_path, monkeypatch):
    assert upf_kind(PAW_HEADER) == "PAW"
    assert upf_kind(PAW_HEADER.replace('pseudo_type="PAW"', 'pseudo_type="US"').replace('is_paw="T"', 'is_paw="F"')) == "US"
    (tmp_path / "S.upf").write_text(PAW_HEADER)
    monkeypatch.setenv("ELFSCREEN_PSEUDO_DIR", str(tmp_path))
    with pytest.raises(PseudopotentialError, match="PAW pseudopotential; the ELF needs norm-conserving"):
        species_pseudopotential("S", tmp_path / "cache")
    with pytest.raises(DftError, match="PAW"):
        elf_of(h3s(), TINY)


def test_a_missing_element_is_a_clear_error(tmp_path):
    with pytest.raises(PseudopotentialError) as err:
        pseudopotentials_for(["H", "Li", "Au"], tmp_path)
    message = str(err.value)
    assert "Li" in message and "Au" in message and "supported: " in message and "La" in message
    cell = Structure(Lattice.cubic(3.0), ["Be", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(DftError, match="no norm-conserving pseudopotential.*Be"):
        pseudopotentials(cell, HYDRIDE_SETTINGS)


def test_scf_input_lists_every_species_with_its_file():
    text = pw_scf_input(h3s(), HYDRIDE_SETTINGS, {"S": "S.upf", "H": "H.upf"})
    assert "ntyp = 2" in text and "ecutrho = 400.0" in text
    species = {line.split()[0]: line.split()[1:] for line in
               text.split("ATOMIC_SPECIES\n")[1].split("CELL_PARAMETERS")[0].splitlines()}
    assert set(species) == {"S", "H"} and species["S"][1] == "S.upf" and abs(float(species["S"][0]) - 32.06) < 0.01
    positions = text.split("ATOMIC_POSITIONS crystal\n")[1].split("K_POINTS")[0].splitlines()
    assert sorted(line.split()[0] for line in positions) == ["H", "H", "H", "S"]


# --------------------------------------------------------------------------------------------------
# H_DOS


def test_h_dos_from_tcestime_projections():
    h3s_rows = read_pdos_fermi((PDOS / "H3S.qe65.pdos_fermi.txt").read_text())
    assert len(h3s_rows) == 5 and abs(h_share(h3s_rows) - 0.487) < 0.005  # TcESTIME printed 0.487
    cay = read_pdos_fermi((PDOS / "CaYH18.qe63.pdos_fermi.txt").read_text())
    assert abs(h_share(cay) - 0.784) < 0.005  # TcESTIME's CaYH18 example
    with pytest.raises(Exception, match="insulator"):
        h_share([("H", 0.0), ("S", 0.0)])


def test_projections_are_interpolated_at_the_fermi_level(tmp_path):
    e = np.linspace(0.0, 10.0, 11)
    # ldos = slope·E + b per file; at E_F = 4.25 eV: H 2·4.25 = 8.5, S 1 + 4.25 = 5.25
    for name, ldos in (("pdos.pdos_atm#1(S)_wfc#1(s)", 1.0 + e), ("pdos.pdos_atm#2(H)_wfc#1(s)", 2.0 * e)):
        np.savetxt(tmp_path / name, np.column_stack([e, ldos, ldos]), header="E (eV) ldos(E) pdos(E)")
    rows = dict(projections_at(tmp_path, 4.25))
    assert rows == pytest.approx({"S": 5.25, "H": 8.5})
    out = h_dos_from_projwfc(tmp_path, 4.25)
    assert out["value"] == pytest.approx(8.5 / 13.75, abs=1e-6) and out["by_element"] == pytest.approx({"H": 8.5, "S": 5.25})
    with pytest.raises(Exception, match="outside"):
        projections_at(tmp_path, 11.0)


def test_an_insulator_has_no_h_dos_instead_of_an_error(tmp_path):
    e = np.linspace(-5.0, 5.0, 101)
    gap = np.where(np.abs(e) < 2.0, 0.0, 0.5)  # no states within 2 eV of E_F = 0
    for name in ("pdos.pdos_atm#1(H)_wfc#1(s)", "pdos.pdos_atm#2(H)_wfc#1(s)"):
        np.savetxt(tmp_path / name, np.column_stack([e, gap, gap]), header="E (eV) ldos(E) pdos(E)")
    out = h_dos_from_projwfc(tmp_path, 0.0)
    assert out["insulator"] is True and out["value"] is None and out["projected_dos_ef"] == 0.0
    metal = h_dos_from_projwfc(tmp_path, 3.0)
    assert metal["insulator"] is False and metal["value"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# prototypes


def test_prototypes_have_their_space_group_and_sane_distances():
    seen = set()
    for name, sub, pressure in prototype_entries():
        proto = PROTOTYPES[name]
        s = proto.build(sub, pressure)
        if (name, sub) not in seen:  # the space group does not depend on the volume
            seen.add((name, sub))
            assert s.get_space_group_info(symprec=0.01)[0] == proto.space_group, (name, sub)
        assert min_distance_ok(s), (name, sub, pressure)
    assert len({e[0] for e in prototype_entries()}) == len(PROTOTYPES) >= 7


# --------------------------------------------------------------------------------------------------
# with QE


@needs_qe
def test_tiny_hydride_run_gives_bounded_elf_and_h_dos(tmp_path):
    grid, record = elf_of(h3s(), TINY, name="H3S-tiny")
    assert grid.values.min() >= 0.0 and grid.values.max() <= 1.0 and grid.values.max() > 0.9
    assert 0.0 < record["h_dos"]["value"] < 1.0
    assert set(record["h_dos"]["by_element"]) == {"H", "S"}
    assert {e: p["name"] for e, p in record["pseudopotentials"].items()} == {"S": "S.upf", "H": "H.upf"}
    assert record["cpu_s"] > 0 and record["scf"]["scf_converged"]
    assert record["scf"]["symmetry_ops"] == 48  # Im-3m whole: the cell is put where pw.x finds its symmetry


@needs_qe
def test_prototype_dataset_is_resumable_and_summarised(tmp_path):
    out = tmp_path / "proto"
    first = generate(out, "hydride-prototype", 10_000, settings=TINY, max_new=1)  # the smallest cell: H3S at 100 GPa, relaxed
    assert first["done"] == 1
    again = generate(out, "hydride-prototype", 10_000, settings=TINY, max_new=0)
    assert again["skipped"] == 1 and again["done"] == 0
    entry = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert entry["relaxed"] and entry["pressure_gpa"] == 100.0 and entry["qe"]["relax"]["bfgs_converged"]
    cmd = [sys.executable, "-m", "elfscreen.app.cli", "dataset", "summary", str(out), "--json"]
    summary = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout)
    assert summary == summary_of([out])
    assert summary["structures"] == 1 and summary["by_element"] == {"H": 1, "S": 1} and summary["relaxed"] == 1
    assert summary["with_h_dos"] == 1 and summary["pseudopotentials"] == ["H.upf", "S.upf"] and summary["cpu_hours"] > 0
    assert summary["pressure_gpa"] == {"min": 100.0, "max": 100.0}


def test_vc_relax_retries_without_symmetry_after_checkallsym(tmp_path, monkeypatch):
    """QE 6.7 stops hexagonal vc-relaxations with 'checkallsym: not orthogonal operation'; the driver
    reruns once with nosym. A stand-in pw.x fails without nosym and relaxes with it."""
    fake = tmp_path / "pw.x"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import sys\n"
        "text = open(sys.argv[2]).read()\n"
        "if 'nosym' not in text:\n"
        "    print(' %%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%\\n Error in routine checkallsym (3):\\n"
        " not orthogonal operation\\n %%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%')\n"
        "    sys.exit(1)\n"
        "cell = text.split('CELL_PARAMETERS angstrom\\n')[1].split('ATOMIC_POSITIONS')[0]\n"
        "pos = text.split('ATOMIC_POSITIONS crystal\\n')[1].split('K_POINTS')[0]\n"
        "print('     Program PWSCF v.6.7MaX starts\\n     convergence has been achieved in   5 iterations\\n"
        "!    total energy              =     -10.0 Ry\\n     bfgs converged in   3 scf cycles\\n"
        "Begin final coordinates\\nCELL_PARAMETERS (angstrom)\\n' + cell + 'ATOMIC_POSITIONS (crystal)\\n' + pos"
        " + 'End final coordinates\\n   JOB DONE.')\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PW_X", str(fake))
    from elfscreen.model.dft import relax

    relaxed, record = relax(h3s(), 200.0, TINY)
    assert "checkallsym" in record["retried_without_symmetry"] and "nosym = .true." in record["pw_input"]
    assert record["bfgs_converged"] and len(relaxed) == 4 and relaxed.composition.reduced_formula == "H3S"
