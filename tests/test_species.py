"""Elements the model cannot see are refused before any prediction: Python, CLI (exit 2) and service (422).

The pure-H elf-h model's descriptor sees hydrogen only; before, a hydride's other atoms were left out of
the ELF with a warning. Now H3S is an input error for it, naming S, the supported list and the model it
needs; the default elf-mh (since 0.12.0) screens H3S and refuses only what no descriptor knows (Fe).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.descriptor import HYDRIDE_V2
from elfscreen.model.errors import InputError, UnsupportedElementError
from elfscreen.model.network import ElfModel
from elfscreen.model.pipeline import WEIGHTS_DIR, forget_model, load_model, screen_structure


def h3s() -> Structure:
    """H3S, Im-3m (the 200 GPa superconductor), conventional cell: 2 S and 6 H."""
    return Structure.from_spacegroup("Im-3m", Lattice.cubic(3.1), ["S", "H"], [[0, 0, 0], [0.5, 0, 0]])


def feh() -> Structure:
    """An iron hydride: Fe has no shipped pseudopotential, so no descriptor knows it."""
    return Structure(Lattice.cubic(3.0), ["Fe", "H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.78]])


def h2() -> Structure:
    return Structure(Lattice.cubic(2.6), ["H", "H"], [[0, 0, 0], [0.28, 0, 0]])


def test_pure_h_model_refuses_a_hydride_naming_element_list_and_model():
    model = load_model("elf-h")
    with pytest.raises(UnsupportedElementError) as err:
        screen_structure(h3s(), "H3S.cif", model, spacing_a=0.3)
    e = err.value
    assert isinstance(e, InputError) and e.code == "unsupported_element" and e.elements == ["S"] and e.supported == ("H",)
    message = str(e)
    assert message.startswith("H3S.cif: element(s) S not supported by model " + model.model_version)
    assert "supported: H." in message and "hydride-v2" in message and "--model elf-mh" in message
    assert e.to_dict()["error"]["input"] == "H3S.cif"


def test_species_aware_model_takes_a_hydride_and_names_what_no_descriptor_knows():
    model = ElfModel.untrained(descriptor=HYDRIDE_V2, n_members=2)
    result = screen_structure(h3s(), "H3S", model, spacing_a=0.5)
    assert result.reduced_formula == "H3S" and result.h_dos.source == "assumed" and result.phi is not None
    with pytest.raises(UnsupportedElementError) as err:
        screen_structure(feh(), "FeH2.cif", model, spacing_a=0.5)
    assert err.value.elements == ["Fe"] and "No elfscreen descriptor knows Fe" in str(err.value)
    assert "hydride-v2" in str(err.value) and "supported: H La Y" in str(err.value)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "elfscreen.app.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_screen_and_predict_exit_2_and_screen_the_others(tmp_path, monkeypatch):
    monkeypatch.delenv("ELFSCREEN_MODEL", raising=False)
    bad, good, hydride = tmp_path / "FeH2.cif", tmp_path / "POSCAR_h2", tmp_path / "H3S.cif"
    feh().to(filename=str(bad))
    h2().to(filename=str(good))
    h3s().to(filename=str(hydride))
    proc = cli("screen", str(bad), str(good), "--spacing", "0.3")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert lines[0]["error"]["code"] == "unsupported_element" and lines[0]["error"]["input"] == "FeH2.cif"
    assert "elfscreen: error: FeH2.cif: element(s) Fe not supported" in proc.stderr
    assert lines[1]["name"] == "POSCAR_h2" and lines[1]["phi"] is not None
    out = tmp_path / "elf.cube"
    proc = cli("predict", str(bad), "--out", str(out), "--spacing", "0.3")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "unsupported_element" and not out.exists()
    proc = cli("screen", str(hydride), "--spacing", "0.3")  # the default, species-aware elf-mh
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["phi"] is not None and result["h_dos"]["source"] == "model"
    assert result["provenance"]["model_version"].startswith("elf-mh-")
    proc = cli("screen", str(hydride), "--model", "elf-h", "--spacing", "0.3")  # the pure-H model refuses it
    assert proc.returncode == 2 and "element(s) S not supported" in proc.stderr and "--model elf-mh" in proc.stderr


def test_service_answers_422_at_submission_naming_the_file(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from elfscreen.app.api import create_app
    from elfscreen.app.config import Settings

    monkeypatch.delenv("ELFSCREEN_MODEL", raising=False)
    forget_model()
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}", embedded_workers=1)
    with TestClient(create_app(settings)) as client:
        files = [("files", ("POSCAR_h2", h2().to(fmt="poscar"))), ("files", ("FeH2.cif", feh().to(fmt="cif")))]
        r = client.post("/v1/screenings", files=files, data={"options": json.dumps({"spacing_a": 0.3})})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "unsupported_element" and err["input"] == "FeH2.cif"
        assert "element(s) Fe not supported by model elf-mh-" in err["message"] and "supported: H La Y" in err["message"]
        assert client.get("/v1/screenings").json()["total"] == 0  # nothing of the refused request is stored


def test_residual_analysis_refuses_a_hydride_reference_before_predicting(tmp_path):
    import numpy as np

    from elfscreen.model.residual import run
    from elfscreen.model.volumetric import ElfGrid, write_grid

    reference = write_grid(ElfGrid(h3s(), np.full((8, 8, 8), 0.5), name="H3S"), tmp_path / "H3S.cube")
    with pytest.raises(UnsupportedElementError) as err:
        run(reference, WEIGHTS_DIR / "elf-h.pt", out_dir=tmp_path / "out", figures=False)
    assert err.value.elements == ["S"] and not (tmp_path / "out").exists()
