"""Training and evaluation on a tiny dataset of analytic ELF-like fields."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from elfscreen.model.descriptor import PAPER_V1
from elfscreen.model.evaluate import evaluate
from elfscreen.model.network import ElfModel
from elfscreen.model.train import (N_BINS, Entry, PhiSet, TrainConfig, bottleneck_points, phi_grid_shape, phi_set,
                                   point_set, sample_points, split_of, train)
from elfscreen.model.volumetric import ElfGrid
from reference import elf_like_grid, thresholds


def make_entries(n: int) -> list[Entry]:
    out = []
    for k in range(n):
        rng = np.random.default_rng(k)
        lattice = Lattice.from_parameters(*rng.uniform(2.6, 3.4, 3), *rng.uniform(80, 100, 3))
        frac = rng.random((4, 3))
        s = Structure(lattice, ["H"] * 4, frac)
        shape = tuple(int(np.ceil(x / 0.2)) for x in lattice.abc)
        out.append(Entry(f"s{k:03d}", s, ElfGrid(s, elf_like_grid(lattice.matrix, frac, shape), f"s{k}"), {"kind": "test"}))
    return out


def test_split_is_by_structure_and_stable():
    ids = [f"x{i}" for i in range(500)]
    sides = [split_of(i, 0.1, 0.1) for i in ids]
    assert sides == [split_of(i, 0.1, 0.1) for i in ids]
    share = {s: sides.count(s) / len(ids) for s in ("train", "validation", "test")}
    assert 0.7 < share["train"] < 0.9 and 0.05 < share["test"] < 0.15


def test_sampling_is_roughly_uniform_in_elf():
    values = np.random.default_rng(0).beta(0.3, 0.3, size=(30, 30, 30))  # most mass near 0 and 1
    idx = sample_points(values, 2000, np.random.default_rng(1))
    counts = np.bincount(np.minimum((values.ravel()[idx] * N_BINS).astype(int), N_BINS - 1), minlength=N_BINS)
    assert counts.max() <= 2000 // N_BINS and counts.min() >= 0.5 * counts.max()
    assert len(np.unique(idx)) == len(idx)


def test_bottleneck_weighting_moves_points_towards_phi_and_keeps_the_total():
    values = np.random.default_rng(0).beta(0.3, 0.3, size=(30, 30, 30))
    plain = values.ravel()[sample_points(values, 2000, np.random.default_rng(1))]
    weighted = values.ravel()[sample_points(values, 2000, np.random.default_rng(1), phi=0.42, bottleneck_weight=3.0)]
    near = lambda v: np.mean((v >= 0.3) & (v < 0.5))  # the 4 bins centred within 0.1 of φ
    # 4 of 20 bins with 4 shares each: 16/32 of the points near φ, against 4/20 without weighting
    assert near(plain) == pytest.approx(0.2, abs=0.02) and near(weighted) == pytest.approx(0.5, abs=0.03)
    assert abs(len(weighted) - len(plain)) <= N_BINS
    same = values.ravel()[sample_points(values, 2000, np.random.default_rng(1), phi=0.42, bottleneck_weight=0.0)]
    assert np.array_equal(same, plain)  # weight 0 is the paper's sampling, draw for draw


def test_per_atom_sampling_draws_in_proportion_to_the_cell():
    """A 2×1×1 supercell (8 atoms, twice the grid) draws the points of its 4-atom cell with the
    per-structure quota, twice as many with a per-atom quota above it, and the per-structure floor
    keeps the small cell's share."""
    cell = make_entries(1)[0]
    s2 = cell.structure * (2, 1, 1)
    big = Entry("big", s2, ElfGrid(s2, np.concatenate([cell.grid.values] * 2, axis=0), "big"), {})
    for n_points, per_atom, expected in ((40, 0, (40, 40)), (0, 10, (40, 80)), (60, 10, (60, 80))):
        counts = np.bincount(point_set([cell, big], n_points, PAPER_V1, 0, per_atom=per_atom)[2])
        # each ELF bin holds its quota/20 points or, when it has fewer, all (the same bins in both cells)
        assert np.all(counts <= expected) and counts[1] / counts[0] == pytest.approx(expected[1] / expected[0]), counts


def test_training_lowers_the_loss_and_round_trips(tmp_path):
    entries = make_entries(12)
    logs = []
    model = train(entries, TrainConfig(members=2, epochs=30, batch_size=256, points_per_structure=300),
                  model_version="tiny", log=logs.append)
    losses = [float(line.split("loss ")[1].split()[0]) for line in logs if line.startswith("member 1/2")]
    assert losses[-1] < 0.5 * losses[0]
    splits = model.meta["splits"]
    assert not set(splits["train"]) & (set(splits["validation"]) | set(splits["test"]))
    assert sorted(sum(splits.values(), [])) == sorted(e.id for e in entries)
    held = [e for e in entries if e.id not in splits["train"]]
    x, y, owner = point_set(held, 300, model.descriptor, 0)
    assert {held[k].id for k in np.unique(owner)} <= set(splits["validation"]) | set(splits["test"])
    path = model.save(tmp_path / "tiny.pt")
    loaded = ElfModel.load(path, model.descriptor)
    assert torch.equal(loaded.predict(torch.as_tensor(x))[0], model.predict(torch.as_tensor(x))[0])
    assert loaded.meta["training_range"]["min_hh_a"] > 0
    assert model.meta["metrics_held_out_points"]["mae"] < 0.1


def test_bottleneck_points_take_the_voxel_whose_value_is_the_grid_phi():
    """The φ term's point per structure is where the predicted field's {ELF ≥ t} first spans the cell: its
    value is the grid φ of a slow reference (scipy labelling + loop ranks, tests/reference.py)."""
    entries = make_entries(3)
    grids = [e.grid.values.astype(np.float16) for e in entries]
    features = [torch.as_tensor(np.stack([g.ravel(), np.zeros(g.size, np.float16)], 1)) for g in grids]
    phis = PhiSet(features, [g.shape for g in grids], [0.5, 0.6, 0.7])
    x, y, grid_phi = bottleneck_points(lambda f: f[:, 0], phis)
    expected = [thresholds(g.astype(np.float64))["phi"] for g in grids]
    assert np.allclose(grid_phi, expected) and np.allclose(x[:, 0].numpy(), expected)
    assert y.tolist() == pytest.approx([0.5, 0.6, 0.7])


def test_phi_grid_shape_halves_until_small():
    assert phi_grid_shape((20, 20, 20), 16_000) == (20, 20, 20)
    assert phi_grid_shape((40, 41, 90), 16_000) == (10, 11, 23)


def test_phi_term_moves_the_training_structures_phi_towards_dft():
    """With λ > 0 the members' grid φ on their own training structures ends nearer the DFT φ than without
    (same seeds, same points): the term does what it is for."""
    entries = make_entries(12)
    for e in entries:
        e.meta["topology"] = {"phi": thresholds(e.grid.values)["phi"]}
    config = TrainConfig(members=1, epochs=20, batch_size=256, points_per_structure=200, calibration=None)
    errors = {}
    for weight in (0.0, 2.0):
        model = train(entries, TrainConfig(**{**config.__dict__, "phi_weight": weight}), log=lambda msg: None)
        train_e = [e for e in entries if e.id in model.meta["splits"]["train"]]
        phis = phi_set(train_e, model.descriptor, model.feature_mean, model.feature_std)
        _, y, grid_phi = bottleneck_points(model.members[0], phis)
        errors[weight] = np.abs(grid_phi - y.numpy()).mean()
    assert errors[2.0] < 0.7 * errors[0.0]


def test_evaluate_writes_report_and_plots(tmp_path):
    entries = make_entries(3)
    model = ElfModel.untrained()
    report = evaluate(model, entries, tmp_path)
    rows = report["structures"]
    assert len(rows) == 3 and all(r["phi_dft"] is not None and r["phi_ml"] is not None for r in rows)
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["all"]["structures"] == 3
    # report.md: the same numbers, one row per group, the worst φ first
    md = (tmp_path / "report.md").read_text()
    all_ = report["summary"]["all"]
    assert f"| all | 3 | {all_['elf_mae_mean']:.4f} |" in md and f"{all_['phi_bias']:+.3f}" in md
    assert f"| data | 3 | {all_['phi_mae']:.3f} |" in md  # the held-out table: the untrained model's rows are one group
    worst = max(rows, key=lambda r: abs(r["phi_ml"] - r["phi_dft"]))
    assert md.split("Largest φ errors:")[1].splitlines()[1].startswith(f"- `{worst['id']}`")
    for name in ("parity.png", "error_vs_elf.png", "phi_parity.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_held_out_table_groups_splits_and_each_folders_families():
    from elfscreen.model.evaluate import held_out_table

    def row(group, family, ml, dft, std=0.01):
        return {"group": group, "family": family, "phi_ml": ml, "phi_dft": dft, "phi_std": std, "mae": 0.02,
                "rmse": 0.03, "r2_identity": 0.9, "r2_correlated": 0.95}

    rows = [row("crystal-relaxed/test", "cubic", 0.50, 0.51), row("crystal-relaxed/validation", "cubic", 0.40, 0.47),
            row("crystal-relaxed/test", "hexagonal", 0.30, 0.30), row("train", "cubic", 0.9, 0.1),
            row("hydride-test", "cubic", 0.6, 0.5), row("hydride-test", "cubic", 0.7, 0.71)]
    table = held_out_table(rows, None)
    # the splits as groups; a folder's families over all its held-out rows, but not for a one-family folder
    assert set(table) == {"crystal-relaxed/test", "crystal-relaxed/validation", "crystal-relaxed · cubic",
                          "crystal-relaxed · hexagonal", "hydride-test"}
    cubic = table["crystal-relaxed · cubic"]
    assert cubic["structures"] == 2 and cubic["phi_mae"] == pytest.approx(0.04) and cubic["phi_worst"] == pytest.approx(0.07)
    assert cubic["phi_bias"] == pytest.approx(-0.04)
    # raw σ 0.01: the test rows miss by 0.01 and 0, one hydride-test row by 0.1
    assert table["crystal-relaxed/test"]["within_2sigma"] == pytest.approx(1.0)
    assert table["hydride-test"]["within_2sigma"] == pytest.approx(0.5) and table["hydride-test"]["phi_worst"] == pytest.approx(0.1)


@pytest.mark.parametrize("pred, ref, r2", [([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], 1.0)])
def test_point_metrics_exact(pred, ref, r2):
    from elfscreen.model.train import point_metrics

    m = point_metrics(np.array(pred), np.array(ref))
    assert m["mae"] == 0 and m["r2_identity"] == r2 and m["r2_correlated"] == pytest.approx(1.0)
    shifted = point_metrics(np.array(pred) + 0.1, np.array(ref))
    assert shifted["r2_correlated"] == pytest.approx(1.0) and shifted["r2_identity"] < 1


def test_train_and_evaluate_commands_on_a_dataset_folder(tmp_path):
    """`elfscreen train --half` then `elfscreen evaluate`: float16 weights; held-out = not trained on,
    a folder the model never saw included."""
    from elfscreen.app.cli import main
    from elfscreen.model.dataset import GeneratorOptions, generate

    def fake_elf(structure, settings, workdir=None, relax_pressure_gpa=None, *, name="x"):
        shape = tuple(int(np.ceil(x / 0.25)) for x in structure.lattice.abc)
        values = elf_like_grid(structure.lattice.matrix, structure.frac_coords, shape)
        return ElfGrid(structure, values, name), {"elf": {}, "scf": {}}

    small = GeneratorOptions(crystal_atoms=(4, 6), crystal_small_atoms=(4, 6), stride=1)
    generate(tmp_path / "a", "crystal", 12, relax_fraction=0.0, options=small, runner=fake_elf)
    generate(tmp_path / "b", "crystal", 2, seed=7, relax_fraction=0.0, options=small, runner=fake_elf)
    ckpt = tmp_path / "m.pt"
    assert main(["train", "--data", str(tmp_path / "a"), "--out", str(ckpt), "--members", "2", "--epochs", "2",
                 "--points-per-structure", "200", "--half"]) == 0
    saved = torch.load(ckpt, weights_only=False)
    assert all(v.dtype == torch.float16 for v in saved["members"][0].values() if v.is_floating_point())
    splits = ElfModel.load(ckpt).meta["splits"]
    assert main(["evaluate", "--model", str(ckpt), "--data", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path / "ev")]) == 0
    ids = {r["id"] for r in json.loads((tmp_path / "ev" / "report.json").read_text())["structures"]}
    assert ids == set(splits["validation"]) | set(splits["test"]) | {"crystal-s7-000000", "crystal-s7-000001"}
    assert (tmp_path / "ev" / "report.md").is_file()
    # a calibration needs ≥ 10 validation structures (none here): refused with exit 2, no checkpoint written
    out = tmp_path / "calibrated.pt"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(tmp_path / "a"), "--out", str(tmp_path / "ev2"),
                 "--calibrate-out", str(out)]) == 2
    assert not out.exists()
    # the species-aware descriptor is chosen at training time and named by the checkpoint
    mh = tmp_path / "mh.pt"
    assert main(["train", "--data", str(tmp_path / "a"), "--out", str(mh), "--members", "1", "--epochs", "1",
                 "--points-per-structure", "100", "--descriptor", "hydride-v2"]) == 0
    assert ElfModel.load(mh).descriptor.name == "hydride-v2" and ElfModel.load(ckpt).descriptor.name == "paper-v1"
    # the network's widths are chosen at training time too; a malformed list is exit 2, no checkpoint
    wide = tmp_path / "wide.pt"
    assert main(["train", "--data", str(tmp_path / "a"), "--out", str(wide), "--members", "1", "--epochs", "1",
                 "--points-per-structure", "100", "--hidden", "32,16,8"]) == 0
    assert ElfModel.load(wide).members[0].hidden == (32, 16, 8)
    assert main(["train", "--data", str(tmp_path / "a"), "--out", str(tmp_path / "bad.pt"), "--hidden", "64,x"]) == 2
    assert not (tmp_path / "bad.pt").exists()
