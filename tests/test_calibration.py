"""Calibrated uncertainty: conformal fits against their analytic coverage, the pure calibrate function, domain
flags, the pipeline applying a checkpoint's calibration, evaluate's coverage report and the shipped calibration."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from scipy.stats import norm

from elfscreen.model.calibration import (OOD_FACTOR, calibrate, conformal_quantile, coverage, domain_flags, fit,
                                         row_sigma, sigma_phi)
from elfscreen.model.evaluate import calibrate_on_validation, coverage_by_group, evaluate
from elfscreen.model.network import ElfModel
from elfscreen.model.pipeline import WEIGHTS_DIR, screen_structure
from elfscreen.model.tc import tc_sensitivity
from elfscreen.model.train import Entry, split_of, training_range
from reference import lah10

Z90 = norm.ppf(0.95)  # |e| ≤ 1.645·s on 90 % of Gaussian errors of scale s


def synthetic(n: int, rng: np.random.Generator, a0: float = 0.03, k0: float = 3.0) -> list[dict]:
    """Rows whose error is Gaussian with scale √(a0² + (k0·σ_ens)²): the additive model is exact here."""
    spread = rng.uniform(0.001, 0.02, n)
    scale = np.sqrt(a0**2 + (k0 * spread) ** 2)
    err = rng.normal(0.0, scale)
    return [{"id": f"s{i}", "phi_ml": 0.4 + e, "phi_dft": 0.4, "phi_std": s, "elf_std_mean": s / 2,
             "feature_z_rms_bottleneck": 1.0} for i, (e, s) in enumerate(zip(err, spread))]


def test_conformal_quantile_has_its_finite_sample_coverage():
    assert conformal_quantile(np.arange(9.0)) == 8.0 and conformal_quantile(np.arange(5.0)) == math.inf
    # exchangeable continuous scores: P(new ≤ q̂) = ⌈(n+1)p⌉/(n+1) exactly; n = 30: 28/31
    rng = np.random.default_rng(1)
    hits = [rng.exponential() <= conformal_quantile(rng.exponential(size=30)) for _ in range(20000)]
    assert np.mean(hits) == pytest.approx(28 / 31, abs=0.006)


@pytest.mark.parametrize("method", ["scale", "additive", "error-model"])
def test_each_method_reaches_the_target_coverage_on_fresh_data(method):
    rng = np.random.default_rng(2)
    cal = fit(synthetic(400, rng), method)
    fresh = synthetic(20000, rng)
    got = coverage(fresh, cal)["within_2sigma"]
    assert 0.88 <= got <= 0.95, got
    assert cal["fitted_on"]["structures"] == 400 and len(cal["fitted_on"]["ids"]) == 400


def test_additive_recovers_the_true_error_scale():
    """2σ must be the 90 % point of |e|, 1.645·s: σ = 0.82·s at every spread when the model is right."""
    cal = fit(synthetic(3000, np.random.default_rng(3)), "additive")
    for spread in (0.002, 0.01, 0.02):
        true = Z90 / 2 * math.hypot(0.03, 3.0 * spread)
        assert sigma_phi(cal, {"phi_std": spread}) == pytest.approx(true, rel=0.12)
    scale = fit([{**r, "phi_ml": 0.4 + 5 * r["phi_std"] * z} for r, z in
                 zip(synthetic(3000, np.random.default_rng(4)), np.random.default_rng(5).normal(size=3000))], "scale")
    assert scale["params"]["k"] == pytest.approx(Z90 / 2 * 5, rel=0.08)


def test_calibrate_is_pure_and_widens_out_of_domain():
    raw = {"phi_std": 0.004, "phi_star_std": 0.002, "tc_std_k": 3.0, "elf_std_mean": 0.003, "members": 5}
    copy = dict(raw)
    plain = calibrate(raw, None)
    assert raw == copy and plain["phi_std"] == 0.004 and plain["phi_std_raw"] == 0.004 and not plain["calibrated"]
    cal = {"method": "additive", "params": {"k": 2.0, "a": 0.05}, "target": {"z": 2.0, "coverage": 0.9},
           "fitted_on": {"structures": 30}, "ood_factor": OOD_FACTOR}
    slopes = tc_sensitivity(0.5, 1.0)
    out = calibrate(raw, cal, (), slopes)
    sigma = math.hypot(0.05, 2 * 0.004)
    assert out["phi_std"] == pytest.approx(sigma) and out["calibrated"] and out["phi_std_raw"] == 0.004
    assert out["tc_std_k"] == pytest.approx(750 * sigma) and out["tc_std_k_raw"] == 3.0
    assert out["phi_star_std"] == pytest.approx(0.002 * sigma / 0.004)
    wide = calibrate(raw, cal, ["density outside"], slopes, h_dos_std=0.1)
    assert wide["phi_std"] == pytest.approx(2 * sigma) and wide["widened_by"] == 2 and wide["out_of_domain"] == ["density outside"]
    assert wide["tc_std_k"] == pytest.approx(math.hypot(750 * 2 * sigma, slopes["h_dos"] * 0.1))
    assert calibrate(None, cal) is None


def test_tc_sensitivity_is_the_derivative_of_the_relation():
    s = tc_sensitivity(0.55, 0.9, 0.6)
    assert s["phi"] == pytest.approx(750 * 0.9 * 0.6 ** (1 / 3), rel=1e-6)
    assert s["h_dos"] == pytest.approx(750 * 0.55 * 0.9 / 3 * 0.6 ** (-2 / 3), rel=1e-6)
    assert tc_sensitivity(None, 1.0) is None


def test_domain_flags_name_density_short_pairs_and_new_elements():
    meta = {"training_range": {"volume_per_atom_a3": [1.9, 3.2], "min_hh_a": 0.64, "species": ["H"]}}
    inside = Structure(Lattice.cubic(2.6), ["H", "H", "H", "H", "H", "H"],
                       [[0, 0, 0], [0.28, 0, 0], [0.5, 0.5, 0], [0.78, 0.5, 0], [0, 0.5, 0.5], [0.28, 0.5, 0.5]])
    assert domain_flags(inside, meta) == []
    sparse = Structure(Lattice.cubic(3.0), ["H", "H"], [[0, 0, 0], [0.2, 0, 0]])  # 13.5 Å³/atom, H–H 0.6 Å
    flags = domain_flags(sparse, meta)
    assert flags[0].startswith("density 13.50 Å³/atom is outside the training range 1.90–3.20")
    assert flags[1].startswith("H–H distance 0.600 Å is shorter than any in the training data (0.640 Å)")
    assert all(f.endswith("uncertainties widened ×2") for f in flags)
    mixed = Structure(Lattice.cubic(2.6), ["S", "H", "H", "H", "H", "H"], inside.frac_coords)
    assert any(f.startswith("element(s) S appear in no training structure") for f in domain_flags(mixed, meta))


def test_domain_flags_name_an_h_fraction_and_a_metal_pair_never_trained_on():
    """The range of a model trained on CaH6 and YH6 (binary only): CaYH12 holds both metals, which never
    shared a structure; CaH2 has less H than any training cell; a new element is named once, not again
    as a pair."""
    ca = Structure(Lattice.cubic(3.5), ["Ca"] + ["H"] * 6, [[0, 0, 0]] + [[0.25 * (i + 1) % 1, 0.5, 0.1 * i] for i in range(6)])
    y = Structure(Lattice.cubic(3.5), ["Y"] + ["H"] * 6, ca.frac_coords)
    rng = training_range([Entry("ca", ca, None), Entry("y", y, None)])
    assert rng["h_fraction"] == [pytest.approx(6 / 7), pytest.approx(6 / 7)] and rng["element_pairs"] == []
    # these hand-placed cells bring the metals closer to an H than the two training cells do: that check
    # has its own test below, this one leaves it out
    meta = {"training_range": {**rng, "volume_per_atom_a3": [1.0, 20.0], "min_hh_a": 0.1, "min_xh_a": {}}}
    assert domain_flags(ca, meta) == []
    cay = Structure(Lattice.cubic(5.0), ["Ca", "Y"] + ["H"] * 12, [[0, 0, 0], [0.5, 0.5, 0.5]] + [[0.08 * i, 0.25, 0.7] for i in range(12)])
    flags = domain_flags(cay, meta)
    assert flags == ["element pair(s) Ca–Y share no training structure; uncertainties widened ×2"]
    cah2 = Structure(Lattice.cubic(3.0), ["Ca", "H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    assert domain_flags(cah2, meta) == ["H fraction 0.67 is outside the training range 0.86–0.86; uncertainties widened ×2"]
    sc = Structure(Lattice.cubic(5.0), ["Ca", "Sc"] + ["H"] * 12, cay.frac_coords)
    assert [f.split(" ")[0] + " " + f.split(" ")[1] for f in domain_flags(sc, meta)] == ["element(s) Sc"]
    old = {"training_range": {k: v for k, v in meta["training_range"].items() if k not in ("h_fraction", "element_pairs")}}
    assert domain_flags(cay, old) == []  # a checkpoint from before 0.11.0 has neither list: no flag


def test_domain_flags_name_a_metal_closer_to_an_h_than_in_any_training_cell():
    """LaH10 with its 32f H at x = 0.38 (La at 4a, La–H 2.12 Å) against the same Wyckoff x = 0.118 read with
    the other origin (La–H 1.04 Å, a cell no search would submit): same density and H–H range, only the
    La–H contact tells them apart."""
    def la_h(s: Structure) -> float:  # shortest La–H over every pair, pymatgen's minimum image
        return min(s.get_distance(i, j) for i, a in enumerate(s) for j, b in enumerate(s)
                   if a.specie.symbol == "La" and b.specie.symbol == "H")

    good, misplaced = lah10(0.38), lah10(0.118)
    rng = training_range([Entry("lah10", good, None)])
    assert rng["min_xh_a"] == {"La": pytest.approx(la_h(good))}
    assert la_h(good) == pytest.approx(5.10 * (2 * 0.12**2 + 0.38**2) ** 0.5)  # to the La at (½, ½, 0)
    meta = {"training_range": {**rng, "volume_per_atom_a3": [1.0, 20.0]}}
    assert domain_flags(good, meta) == []
    d = la_h(misplaced)
    assert d == pytest.approx(0.118 * 3**0.5 * 5.10)
    assert domain_flags(misplaced, meta) == [f"La–H distance {d:.3f} Å is shorter than any in the training data "
                                             f"({rng['min_xh_a']['La']:.3f} Å); uncertainties widened ×2"]
    assert domain_flags(misplaced, {"training_range": {k: v for k, v in meta["training_range"].items() if k != "min_xh_a"}}) == []


def test_the_pipeline_applies_the_checkpoints_calibration(tmp_path):
    cal = {"method": "additive", "params": {"k": 2.0, "a": 0.05}, "target": {"z": 2.0, "coverage": 0.9},
           "fitted_on": {"structures": 30}, "ood_factor": OOD_FACTOR}
    model = ElfModel.untrained(n_members=3, seed=2)
    model.feature_std = torch.rand(165) + 0.5
    model.meta = {"calibration": cal}
    loaded = ElfModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.meta["calibration"] == cal  # the checkpoint carries it
    s = Structure(Lattice.hexagonal(2.9, 3.3), ["H"] * 6, np.random.default_rng(3).random((6, 3)))
    result = screen_structure(s, "h6", loaded, shape=(12, 12, 14))
    plain = screen_structure(s, "h6", dataclasses.replace(loaded, meta={}), shape=(12, 12, 14))
    u = result.uncertainty
    assert u["calibrated"] and not plain.uncertainty["calibrated"]
    assert u["phi_std_raw"] == pytest.approx(plain.uncertainty["phi_std"])
    assert u["phi_std"] == pytest.approx(math.hypot(0.05, 2 * u["phi_std_raw"]))
    assert u["tc_std_k"] == pytest.approx(750 * u["phi_std"], rel=1e-4)  # pure H, Belli: ∂Tc/∂φ = 750 K
    assert result.phi == plain.phi and result.tc == plain.tc


def test_evaluate_reports_coverage_options_and_draws_the_reliability_plot(tmp_path):
    from test_training import make_entries

    entries = make_entries(3)
    model = ElfModel.untrained(n_members=2, seed=1)
    model.meta = {"calibration": {"method": "scale", "params": {"k": 3.0}, "target": {"z": 2.0, "coverage": 0.9},
                                  "fitted_on": {"structures": 20}, "ood_factor": OOD_FACTOR}}
    report = evaluate(model, entries, tmp_path, cache_dir=tmp_path / "cache")
    rows = report["structures"]
    assert all(r["phi_std"] is not None and r["group"] == "data" for r in rows)
    err = np.array([abs(r["phi_ml"] - r["phi_dft"]) for r in rows])
    sig = np.array([3.0 * max(r["phi_std"], 1e-3) for r in rows])
    assert report["coverage"]["all"]["calibrated"]["within_2sigma"] == pytest.approx(np.mean(err <= 2 * sig))
    assert report["coverage"]["all"]["raw"]["within_1sigma"] == pytest.approx(np.mean(err <= np.maximum([r["phi_std"] for r in rows], 1e-3)))
    assert "| data | 3 |" in (tmp_path / "report.md").read_text()
    data = (tmp_path / "reliability.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    again = evaluate(model, entries, tmp_path / "again", cache_dir=tmp_path / "cache")  # from the cache: the same rows
    assert again["structures"] == rows


def test_coverage_by_group_and_row_sigma_agree():
    rows = [{**r, "group": g} for r, g in zip(synthetic(60, np.random.default_rng(6)), ["a", "b"] * 30)]
    rows[0]["domain_flags"] = ["outside"]
    cal = fit(rows, "additive")
    by = coverage_by_group(rows, cal)
    for g in ("a", "b"):
        rs = [r for r in rows if r["group"] == g]
        expected = np.mean([abs(r["phi_ml"] - r["phi_dft"]) <= 2 * row_sigma(r, cal) for r in rs])
        assert by[g]["calibrated"]["within_2sigma"] == pytest.approx(expected)
    assert row_sigma(rows[0], cal) == pytest.approx(2 * sigma_phi(cal, rows[0]))


@pytest.mark.parametrize("name", ["elf-h.pt", "elf-mh.pt"])
def test_shipped_calibration_was_fitted_on_the_validation_split_only(name):
    meta = ElfModel.load(WEIGHTS_DIR / name).meta
    cal = meta["calibration"]
    assert cal["method"] == "additive" and cal["target"] == {"z": 2.0, "coverage": 0.9}
    ids = cal["fitted_on"]["ids"]
    assert len(ids) == cal["fitted_on"]["structures"] >= 20
    assert not set(ids) & set(meta["splits"]["train"])
    assert all(split_of(i, meta["config"]["validation_fraction"], meta["config"]["test_fraction"]) == "validation" for i in ids)


def test_calibrate_on_validation_fits_from_whole_grids():
    """What ``train`` stores when its validation split has ≥ 10 structures: the members' spread and φ
    against the grids' own φ, fitted."""
    from test_training import make_entries

    entries = make_entries(12)
    cal = calibrate_on_validation(ElfModel.untrained(n_members=2, seed=3), entries)
    assert cal["method"] == "additive" and cal["fitted_on"]["ids"] == sorted(e.id for e in entries)
    assert cal["coverage_fit"] >= 0.9 and cal["params"]["a"] >= 0 and cal["params"]["k"] >= 0
