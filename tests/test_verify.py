"""DFT verification (model/verify.py) on a real QE run at a low cutoff: the DFT φ equals the topology
of the kept DFT grid, and the settings name the pure-H dataset settings."""
import contextlib
import io
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.dft import qe_available
from elfscreen.model.pipeline import grid_topology
from elfscreen.model.verify import verify, verify_settings


def _h8() -> Structure:
    """A metallic 8-atom H crystal: a 2.6 Å cube holding a 2×2×2 simple-cubic lattice, one atom displaced."""
    frac = np.array([[i, j, k] for i in (0, 0.5) for j in (0, 0.5) for k in (0, 0.5)], dtype=float)
    frac[0] += 0.04
    return Structure(Lattice.cubic(2.6), ["H"] * 8, frac)


def test_settings_follow_composition(monkeypatch):
    monkeypatch.delenv("ELFSCREEN_VERIFY_ECUTWFC", raising=False)
    assert verify_settings(_h8())[0] == "pure-h"
    cah6 = Structure(Lattice.cubic(3.5), ["Ca", "H"], [[0, 0, 0], [0.5, 0.25, 0]])
    name, settings = verify_settings(cah6)
    assert name == "hydride" and settings.potentials == "pseudodojo" and settings.h_dos
    monkeypatch.setenv("ELFSCREEN_VERIFY_ECUTWFC", "30")
    name, settings = verify_settings(_h8())
    assert settings.ecutwfc == 30 and settings.ecutrho == 240 and name.endswith("ecutwfc=30")


def test_verify_h8_low_cutoff(monkeypatch):
    assert qe_available(), "QE (pw.x, pp.x, projwfc.x) must be installed for this test"
    monkeypatch.setenv("ELFSCREEN_VERIFY_ECUTWFC", "30")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid, out = verify(_h8(), ml_phi=0.3, name="h8")
    dft = out["dft"]
    again = grid_topology(grid, source="dft", h_dos=dft["h_dos"])
    assert dft["phi"] == again.phi and dft["phi_star"] == again.phi_star
    assert out["delta_phi"] == pytest.approx(dft["phi"] - 0.3)
    assert 0 < dft["h_dos"] <= 1 and dft["insulator"] is False and dft["cpu_seconds"] > 0
    assert dft["settings"]["h_dos"] and dft["code_version"]["qe"]


def test_an_insulator_is_verified_with_its_elf_and_no_tc(monkeypatch):
    """Molecular H2 (bond 0.74 Å, molecules 2.2 Å apart): a wide-gap insulator, whose DOS at E_F is zero."""
    monkeypatch.setenv("ELFSCREEN_VERIFY_ECUTWFC", "30")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    h2 = Structure(Lattice.cubic(2.2), ["H", "H"], [[0, 0, 0], [0.74 / 2.2, 0, 0]])
    grid, out = verify(h2, ml_phi=None, name="h2")
    dft = out["dft"]
    assert dft["insulator"] is True and dft["h_dos"] is None and dft["tc"] is None
    assert dft["phi"] == grid_topology(grid, source="dft").phi and out["delta_phi"] is None
    assert dft["phi_star"] > 0.9  # the H–H bond of the molecule


def test_cli_verify_keeps_grid_and_matches_topology(tmp_path, monkeypatch):
    """`elfscreen verify` writes the DFT grid; `elfscreen topology` on that file gives the same φ."""
    from elfscreen.app.cli import main

    monkeypatch.setenv("ELFSCREEN_VERIFY_ECUTWFC", "30")
    poscar = tmp_path / "H8.vasp"
    _h8().to(filename=str(poscar), fmt="poscar")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["verify", str(poscar), "--ml-phi", "0.2", "--grid-dir", str(tmp_path / "grids")]) == 0
    row = json.loads(buf.getvalue().splitlines()[-1])
    buf2 = io.StringIO()
    with contextlib.redirect_stdout(buf2):
        assert main(["topology", row["dft"]["grid_file"]]) == 0
    topo = json.loads(buf2.getvalue())
    assert topo["phi"] == pytest.approx(row["dft"]["phi"], abs=1e-9)
    assert row["delta_phi"] == pytest.approx(row["dft"]["phi"] - 0.2)
