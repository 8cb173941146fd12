"""Network checkpoints, ensembles, grid prediction and the `predict`/`screen` commands."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from elfscreen.model.descriptor import PAPER_V1, DescriptorParams, describe
from elfscreen.model.network import CheckpointError, ElfModel
from elfscreen.model.pipeline import screen_structure
from elfscreen.model.predict import grid_shape, predict_grid
from elfscreen.model.topology import analyze, values_at_events
from elfscreen.model.volumetric import ElfGrid, read_grid


def small_structure(extra=None) -> Structure:
    species = ["H"] * 6 + ([extra] if extra else [])
    return Structure(Lattice.hexagonal(2.9, 3.3), species, np.random.default_rng(3).random((len(species), 3)))


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    model = ElfModel.untrained(n_members=3, seed=1)
    model.feature_mean = torch.rand(165) * 0.01
    model.feature_std = torch.rand(165) + 0.5
    model.model_version = "test-ensemble"
    path = tmp_path_factory.mktemp("ckpt") / "ens.pt"
    model.save(path)
    return model, path


def test_checkpoint_round_trip(ensemble):
    model, path = ensemble
    loaded = ElfModel.load(path, PAPER_V1)
    x = torch.randn(50, 165)
    assert torch.equal(model.predict(x)[0], loaded.predict(x)[0])
    assert loaded.model_version == "test-ensemble" and len(loaded.members) == 3
    assert sum(p.numel() for p in loaded.members[0].parameters()) == 37889  # the paper's count


def test_checkpoint_with_other_descriptor_is_refused(ensemble, tmp_path):
    _, path = ensemble
    with pytest.raises(CheckpointError, match="descriptor"):
        ElfModel.load(path, DescriptorParams(r_cut_a=4.0))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        ElfModel.load(bad)


def test_ensemble_mean_and_spread(ensemble):
    model, _ = ensemble
    x = torch.randn(40, 165)
    mean, spread = model.predict(x)
    each = np.array([torch.sigmoid(m.layers((x - model.feature_mean) / model.feature_std)).squeeze(-1).detach().numpy()
                     for m in model.members])
    assert np.allclose(mean.numpy(), each.mean(0), atol=1e-7)
    assert np.allclose(spread.numpy(), each.std(0), atol=1e-7)


def test_prediction_equals_descriptor_then_network_and_rolls(ensemble):
    model, _ = ensemble
    s = small_structure()
    shape = (9, 9, 11)
    pred = predict_grid(s, model, shape=shape, max_chunk_mb=1)  # many chunks
    assert pred.grid.shape == shape and pred.members.shape == (3, *shape)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    direct, _ = model.predict(torch.as_tensor(describe(s, idx / np.array(shape))))
    assert np.allclose(pred.grid.values.ravel(), direct.numpy(), atol=1e-6)
    shifted = s.copy()
    shifted.translate_sites(range(len(s)), [1 / 9, 0, 0], frac_coords=True)
    moved = predict_grid(shifted, model, shape=shape)
    assert np.allclose(moved.grid.values, np.roll(pred.grid.values, 1, axis=0), atol=1e-6)


def test_grid_shape_from_spacing():
    s = small_structure()
    assert grid_shape(s, 0.1) == (29, 29, 33)
    with pytest.raises(ValueError):
        grid_shape(s, 0)


def test_screen_result_carries_uncertainty_provenance_and_warnings(ensemble):
    model, _ = ensemble
    structure, shape = small_structure(), (14, 14, 16)
    model = dataclasses.replace(model, meta={"training_range": {"volume_per_atom_a3": [1.9, 3.2], "min_hh_a": 0.64}})
    result = screen_structure(structure, "h6", model, shape=shape)
    assert result.uncertainty is not None and result.uncertainty["members"] == 3
    # the spread is that of the members' φ read at the mean's critical points and of their ELF, recomputed
    # here member by member (against a full analysis of each member: test_ensemble.py, bench/ensemble.py)
    pred = predict_grid(structure, model, shape=shape)
    mean = analyze(pred.grid)
    phis = [values_at_events(ElfGrid(structure, m.astype(np.float64), "m"), mean)["phi"] for m in pred.members]
    assert result.uncertainty["phi_std_raw"] == pytest.approx(np.nanstd([np.nan if p is None else p for p in phis]), abs=1e-9)
    assert result.uncertainty["elf_std_mean"] == pytest.approx(float(pred.spread.mean()), rel=1e-6)
    prov = result.provenance
    assert prov.model_version == "test-ensemble" and prov.descriptor["n_features"] == 165
    assert prov.grid.source == "predicted" and {"descriptor", "network", "topology"} <= set(prov.timings_s)
    # 6 H in a 24.0 Å³ cell: 4.01 Å³/atom, beyond the range given above: said, and σ widened (no calibration here)
    assert any(w.startswith("density 4.01 Å³/atom is outside the training range") for w in result.warnings)
    assert result.uncertainty["phi_std_raw"] == pytest.approx(result.uncertainty["phi_std"] / 2)
    assert result.h_dos.source == "definition" and result.h_dos.value == 1 and not result.h_dos.assumed  # pure H


def cli(*args):
    return subprocess.run([sys.executable, "-m", "elfscreen.app.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_predict_and_screen(ensemble, tmp_path):
    model, ckpt = ensemble
    a, b = tmp_path / "POSCAR_a", tmp_path / "b.cif"
    small_structure().to(filename=str(a))
    small_structure().to(filename=str(b))
    out = tmp_path / "elf.cube"
    proc = cli("predict", str(a), "--model", str(ckpt), "--grid", "10", "10", "12", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["grid"] == [10, 10, 12]
    grid = read_grid(out)
    expected = predict_grid(Structure.from_file(a), model, shape=(10, 10, 12)).grid.values
    assert grid.shape == (10, 10, 12)
    np.testing.assert_allclose(grid.values, expected, rtol=1e-4, atol=1e-9)  # the cube keeps 5 digits
    proc = cli("screen", str(a), str(b), str(tmp_path / "missing.cif"), "--model", str(ckpt), "--spacing", "0.25")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 2 and len(lines) == 3  # the bad input is reported, the others screened
    assert lines[0]["name"] == "POSCAR_a" and lines[1]["name"] == "b.cif" and lines[0]["phi"] is not None
    assert lines[2]["error"]["code"] == "invalid_structure" and "Traceback" not in proc.stderr


def test_cli_screen_with_a_missing_model_says_so(tmp_path):
    a = tmp_path / "POSCAR"
    small_structure().to(filename=str(a))
    proc = cli("screen", str(a), "--model", str(tmp_path / "nope.pt"))
    assert proc.returncode == 2 and "nope.pt: checkpoint file not found" in proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "no_model"


def test_no_installed_model_is_a_clear_error(tmp_path, monkeypatch):
    import elfscreen.model.pipeline as pipeline

    monkeypatch.delenv("ELFSCREEN_MODEL", raising=False)
    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(pipeline.NoModelError, match="no trained ELF model is installed"):
        pipeline.load_model()
