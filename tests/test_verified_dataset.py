"""The flywheel's science (model/verified_dataset.py): two small H crystals screened by the shipped model
and verified by real DFT (model/verify.py, pw.x at ecutwfc 30 Ry) are written as a training dataset; the
folder loads like a generated one, `elfscreen train` trains on it (a tiny run) and `elfscreen evaluate`
reports the shipped model's error on it against the DFT φ."""
from __future__ import annotations

import contextlib
import io
import json
import time

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.dataset import read_manifest
from elfscreen.model.dft import qe_available
from elfscreen.model.errors import InputError
from elfscreen.model.pipeline import get_model, model_path, screen_structure
from elfscreen.model.topology import analyze
from elfscreen.model.train import load_entries, split_of
from elfscreen.model.verified_dataset import VerifiedStructure, export_verified, verified_id
from elfscreen.model.verify import verify


def cells() -> dict[str, Structure]:
    """Two metallic cells (H_DOS needs a DOS at the Fermi level): an 8-atom cube and a 4-atom fcc cell, each
    with one atom displaced."""
    frac = np.array([[i, j, k] for i in (0, 0.5) for j in (0, 0.5) for k in (0, 0.5)], dtype=float)
    frac[0] += 0.04
    h8 = Structure(Lattice.cubic(2.6), ["H"] * 8, frac)
    h4 = Structure(Lattice.cubic(2.3), ["H"] * 4, [[0.03, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return {"h8": h8, "h4_fcc": h4}


def verified_structures() -> list[VerifiedStructure]:
    """Each cell screened by the shipped model and verified by DFT (ELFSCREEN_VERIFY_ECUTWFC=30 must be set)."""
    assert qe_available(), "QE (pw.x, pp.x, projwfc.x) must be installed for this test"
    model, _ = get_model()
    out = []
    for name, s in cells().items():
        ml = screen_structure(s, name, model).model_dump(mode="json")
        grid, v = verify(s, ml_phi=ml["phi"], name=name)
        out.append(VerifiedStructure(f"job-{name}", name, s, grid.values, v["dft"], ml))
    return out


@pytest.fixture(scope="module")
def verified():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELFSCREEN_VERIFY_ECUTWFC", "30")
        mp.setenv("OMP_NUM_THREADS", "1")
        return verified_structures()


def _cli(args: list[str]) -> dict:
    from elfscreen.app.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    return json.loads(buf.getvalue())


def test_export_writes_the_dataset_format_once(verified, tmp_path):
    out = tmp_path / "verified"
    # the test runs lowered the cutoff: not the dataset settings, left out unless asked for
    assert export_verified(out, verified) == {"written": 0, "skipped": 0, "other_settings": 2}
    assert export_verified(out, verified, any_settings=True) == {"written": 2, "skipped": 0, "other_settings": 0}
    assert export_verified(out, verified, any_settings=True) == {"written": 0, "skipped": 2, "other_settings": 0}
    manifest = read_manifest(out)
    assert [e["id"] for e in manifest] == [verified_id(v.structure, v.dft["settings"]["name"]) for v in verified]
    entries, _ = load_entries([out])
    for v, e, row in zip(verified, entries, manifest):
        assert row["kind"] == "verified" and row["qe"]["settings"]["name"] == "pure-h@ecutwfc=30"
        assert row["qe"]["settings"]["ecutwfc"] == 30 and row["qe"]["version"] == v.dft["code_version"]["qe"]
        assert row["h_dos"]["value"] == v.dft["h_dos"] == 1.0  # pure H
        assert row["topology"]["phi"] == v.dft["phi"] and row["screening"]["phi"] == v.ml_result["phi"]
        assert row["screening"]["delta_phi"] == pytest.approx(v.dft["phi"] - v.ml_result["phi"])
        # the stored grid is the DFT grid (float16) on the structure's own cell
        assert e.grid.shape == v.dft_values.shape and row["grid"]["stride"] == 1
        assert np.abs(e.grid.values - v.dft_values).max() < 1e-3
        assert np.allclose(e.structure.lattice.matrix, v.structure.lattice.matrix)
        assert analyze(e.grid).phi == pytest.approx(v.dft["phi"], abs=2e-3)


def test_export_refuses_a_record_without_its_grid(verified, tmp_path):
    broken = VerifiedStructure("job-x", "x.cif", verified[0].structure, None, verified[0].dft, verified[0].ml_result)
    with pytest.raises(InputError, match="job job-x: the verification lacks its DFT grid"):
        export_verified(tmp_path / "v", [broken], any_settings=True)
    assert read_manifest(tmp_path / "v") == []


def test_train_and_evaluate_on_the_exported_folder(verified, tmp_path):
    """`elfscreen train` (2 members, 3 epochs) takes the folder; `elfscreen evaluate` of the shipped model on it
    gives each structure's φ_ML against the DFT φ of the verification."""
    out = tmp_path / "verified"
    export_verified(out, verified, any_settings=True)
    ids = [e["id"] for e in read_manifest(out)]
    assert "train" in [split_of(i, 0.1, 0.1) for i in ids]  # train needs a structure on its side
    trained = _cli(["train", "--data", str(out), "--out", str(tmp_path / "tiny.pt"), "--members", "2", "--epochs", "3",
                    "--points-per-structure", "200", "--version", "flywheel-tiny"])
    assert trained["structures"] == 2 and (tmp_path / "tiny.pt").stat().st_size > 10_000

    report = _cli(["evaluate", "--model", str(model_path()), "--data", str(out), "--out", str(tmp_path / "eval")])
    rows = {r["id"]: r for r in json.loads((tmp_path / "eval" / "report.json").read_text())["structures"]}
    assert report["summary"]["all"]["structures"] == 2
    for v, e in zip(verified, read_manifest(out)):
        row = rows[e["id"]]
        assert row["phi_dft"] == pytest.approx(v.dft["phi"], abs=2e-3)
        # the model predicts on the DFT grid here, on its own spacing in the screening: the same φ within a few 0.01
        assert row["phi_ml"] == pytest.approx(v.ml_result["phi"], abs=0.03)
    mae = np.mean([abs(r["phi_ml"] - r["phi_dft"]) for r in rows.values()])
    assert report["summary"]["all"]["phi_mae"] == pytest.approx(mae)


def _store_with_verified_jobs(url: str, verified: list[VerifiedStructure]) -> list[str]:
    """A job store holding one batch whose jobs finished with the real ML results and whose verifications
    finished with the real DFT results and grids (the store's own claim → finish path, as a worker does)."""
    from elfscreen.app.store import Store
    from elfscreen.model.structures import structure_to_dict
    from elfscreen.model.volumetric import ElfGrid

    store = Store(url)
    now = time.time()
    rows = [{"id": f"{k:032x}", "batch_id": "b" * 32, "seq": k, "owner": "anonymous", "name": v.name, "format": "poscar",
             "content": v.structure.to(fmt="poscar"), "structure": structure_to_dict(v.structure), "options": {},
             "cache_key": f"{k:064x}", "status": "queued", "created_at": now} for k, v in enumerate(verified)]
    store.create_batch({"id": "b" * 32, "owner": "anonymous", "created_at": now, "total": len(rows)}, rows)
    for row, v in zip(rows, verified):
        assert store.finish(store.claim(row["id"], "test", 60.0), result=v.ml_result)
        assert store.request_verification(row["id"], "anonymous")[1]
        claim = store.claim_verification(row["id"], "test-dft", 60.0)
        assert store.finish_verification(claim, result={"dft": v.dft, "delta_phi": v.dft["phi"] - v.ml_result["phi"]},
                                         grid=ElfGrid(v.structure, v.dft_values, v.name))
    return [r["id"] for r in rows]


def test_cli_exports_the_stores_verified_jobs_for_train_and_evaluate(verified, tmp_path, capsys):
    """`elfscreen dataset export-verified --db` reads the store's verified jobs (Store.verified); the folder
    goes to `elfscreen train` and `elfscreen evaluate` like any other; a rerun writes nothing new."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    job_ids = _store_with_verified_jobs(url, verified)
    out = tmp_path / "flywheel"
    export = ["dataset", "export-verified", "--out", str(out), "--db", url]
    assert _cli(export)["other_settings"] == 2 and read_manifest(out) == []  # 30 Ry runs: not by default
    assert _cli(export + ["--any-settings"]) == {"out": str(out), "written": 2, "skipped": 0, "other_settings": 0}
    manifest = read_manifest(out)
    assert [e["screening"]["job_id"] for e in manifest] == job_ids
    assert [e["topology"]["phi"] for e in manifest] == [v.dft["phi"] for v in verified]
    assert _cli(export + ["--any-settings"])["skipped"] == 2
    _cli(["train", "--data", str(out), "--out", str(tmp_path / "tiny.pt"), "--members", "1", "--epochs", "2",
          "--points-per-structure", "100"])
    report = _cli(["evaluate", "--model", str(model_path()), "--data", str(out), "--out", str(tmp_path / "eval")])
    assert report["summary"]["all"]["structures"] == 2 and report["summary"]["all"]["phi_mae"] > 0


def test_cli_export_names_a_missing_store(tmp_path, capsys):
    from elfscreen.app.cli import main

    url = f"sqlite:///{tmp_path / 'nope.db'}"
    assert main(["dataset", "export-verified", "--out", str(tmp_path / "x"), "--db", url]) == 2
    err = capsys.readouterr().err
    assert "nope.db" in err and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "x").exists()
