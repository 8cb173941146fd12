"""Residual analysis (model/residual.py, figures in model/plots/residual.py, `elfscreen analyze residual`): the FFT low-pass is the least-squares band-limited fit, known
low-k residuals are removed exactly, high-k ones not at all, and the report (JSON + PNGs) is written.

Every grid here is tiny (≤ 12³ points) so the whole file runs in seconds.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.errors import GridError, InputError
from elfscreen.app.cli import main
from elfscreen.model.plots.residual import FIGURES, write_comparison
from elfscreen.model.residual import (DEFAULT_EPS, analyze_residual, band_limited_fit, fields_at, inv_logit, k_index,
                                      kmax_values, logit, parse_slice, run, write_report)
from elfscreen.model.volumetric import ElfGrid, write_grid
from reference import elf_like_grid

PNG = b"\x89PNG\r\n\x1a\n"
TRICLINIC = Lattice.from_parameters(3.1, 3.7, 4.3, 77.0, 101.0, 64.0)
CUBIC = Lattice.cubic(4.0)


def frac_grid(shape):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return idx / np.array(shape)


def reciprocal_rows(vectors: np.ndarray) -> np.ndarray:
    """Reciprocal vectors without 2π (b_i·a_j = δ_ij) built independently: 3D by inversion, 2D in an
    orthonormal in-plane frame from a QR factorisation, mapped back to Cartesian."""
    if len(vectors) == 3:
        return np.linalg.inv(vectors).T
    q, r = np.linalg.qr(vectors.T)  # vectors.T = q r, q: 3×2 orthonormal in-plane basis
    return np.linalg.inv(r.T).T @ q.T  # rows b_i in Cartesian, in the plane


def least_squares_fit(field: np.ndarray, vectors: np.ndarray, k_max: float) -> np.ndarray:
    """Direct least squares with the cos/sin design matrix of every integer k in the resolvable box
    (|m_a| ≤ N_a/2, both Nyquist signs) with |k|·L < k_max, |k| from the reciprocal vectors."""
    shape = field.shape
    d = len(shape)
    b = reciprocal_rows(vectors)
    L = abs(np.linalg.det(vectors @ vectors.T)) ** (0.5 / d)
    box = np.stack(np.meshgrid(*[np.arange(-(n // 2), n // 2 + 1) for n in shape], indexing="ij"), -1).reshape(-1, d)
    kmag = np.linalg.norm(box @ b, axis=1) * L
    ms = box[kmag < k_max]
    x = frac_grid(shape).reshape(-1, d)
    if len(ms) == 0:
        return np.zeros(shape)
    phase = 2 * np.pi * x @ ms.T
    design = np.hstack([np.cos(phase), np.sin(phase)])
    coef, *_ = np.linalg.lstsq(design, field.ravel(), rcond=None)
    return (design @ coef).reshape(shape)


def shells(shape, vectors):
    return np.unique(np.round(k_index(shape, vectors), 6))


# --------------------------------------------------------------------------------------------------
# the fit


@pytest.mark.parametrize("mode", ["volume", "slice"])
def test_fft_low_pass_equals_direct_least_squares(mode):
    shape3 = (8, 9, 10)
    lattice = TRICLINIC.matrix
    rng = np.random.default_rng(7)
    if mode == "volume":
        vectors, shape = lattice, shape3
    else:  # the plane normal to b: in-plane a and c, a 8×10 grid
        vectors, shape = lattice[[0, 2]], (8, 10)
    field = rng.normal(size=shape)
    s = shells(shape, vectors)
    # cutoffs between shells (away from any shell), from "only the mean" to "everything"
    cuts = [0.5 * (s[1] + s[2]), 0.5 * (s[6] + s[7]), 0.5 * (s[len(s) // 2] + s[len(s) // 2 + 1]), s[-1] + 1.0]
    for k in cuts:
        fft = band_limited_fit(field, vectors, k)
        direct = least_squares_fit(field, vectors, k)
        assert np.abs(fft - direct).max() < 1e-10, k
    assert np.abs(band_limited_fit(field, vectors, s[-1] + 1.0) - field).max() < 1e-10  # all modes: the field
    assert np.abs(band_limited_fit(field, vectors, 0.5) - field.mean()).max() < 1e-12  # k = 0 only: the mean
    assert np.abs(band_limited_fit(field, vectors, 0)).max() == 0.0


def test_k_max_is_the_integer_norm_on_a_cubic_cell_and_metric_otherwise():
    kappa = k_index((6, 6, 6), CUBIC.matrix)
    m = np.fft.fftfreq(6, 1 / 6)
    h, k, l = np.meshgrid(m, m, m, indexing="ij")
    nyq = lambda a: np.where(np.abs(a) == 3, 3, a)
    assert np.allclose(kappa, np.sqrt(nyq(h) ** 2 + nyq(k) ** 2 + nyq(l) ** 2))
    tri = k_index((8, 9, 10), TRICLINIC.matrix)
    b = np.linalg.inv(TRICLINIC.matrix).T
    L = TRICLINIC.volume ** (1 / 3)
    assert math.isclose(tri[1, 2, 0], np.linalg.norm(np.array([1, 2, 0]) @ b) * L, rel_tol=1e-12)
    assert math.isclose(tri[-1, 0, 3], np.linalg.norm(np.array([-1, 0, 3]) @ b) * L, rel_tol=1e-12)


def test_logit_clipping_and_inverse():
    eps = DEFAULT_EPS
    u = logit(np.array([0.0, eps / 2, 0.5, 1.0]))
    assert np.allclose(u, [-math.log((1 - eps) / eps), -math.log((1 - eps) / eps), 0.0, math.log((1 - eps) / eps)])
    y = np.linspace(0.01, 0.99, 11)
    assert np.allclose(inv_logit(logit(y)), y, atol=1e-14)
    assert np.isfinite(inv_logit(np.array([-800.0, 800.0]))).all()


# --------------------------------------------------------------------------------------------------
# synthetic residuals


@pytest.fixture(scope="module")
def elf_ref():
    shape = (10, 10, 12)
    sites = np.array([[0.1, 0.2, 0.3], [0.6, 0.55, 0.8], [0.35, 0.8, 0.1]])
    values = elf_like_grid(CUBIC.matrix, sites, shape, r_cut=3.0)
    structure = Structure(CUBIC, ["H"] * 3, sites)
    return ElfGrid(structure, values, "synthetic.cube")


def mode_field(shape, ms, amps):
    x = frac_grid(shape)
    return sum(a * np.cos(2 * np.pi * x @ np.array(m, float) + 0.3 * i) for i, (m, a) in enumerate(zip(ms, amps)))


@pytest.mark.parametrize("mode", ["volume", "slice"])
def test_known_low_k_residual_is_recovered_exactly(elf_ref, mode):
    shape = elf_ref.shape
    ms = [(1, 0, 0), (1, 1, 0), (0, -1, 0), (1, -2, 0)]  # no l component: the same 2D field on every z plane
    low = mode_field(shape, ms, [0.4, 0.3, -0.25, 0.2])
    pred = inv_logit(logit(elf_ref.values) + low)
    assert DEFAULT_EPS < pred.min() and pred.max() < 1 - DEFAULT_EPS  # clipping plays no part
    res = analyze_residual(elf_ref, pred, list(range(7)), mode=mode, slice_axis=2, slice_index=3)
    top = math.sqrt(5)  # |(1, −2, 0)|·L on the cubic cell, in 2D and in 3D
    base = res["baseline"]["mae"]
    assert base > 0.01
    for row in res["per_kmax"]:
        if row["k_max"] > top:
            assert abs(row["delta_mae"] + base) < 1e-12 and row["mae"] < 1e-12 and row["rmse"] < 1e-12
        if row["k_max"] == 0:
            assert row["delta_mae"] == 0.0 and row["fraction_logit"] == 0.0
    assert res["per_kmax"][1]["n_basis"] == 1  # k_max = 1 keeps the mean only
    assert res["plateau"]["k_max"] is not None and res["plateau"]["k_max"] <= 3
    assert len(res["per_kmax"]) == 7
    json.dumps(res, allow_nan=False)


def test_pure_high_k_residual_gives_no_gain_below_its_k(elf_ref):
    shape = elf_ref.shape
    high = mode_field(shape, [(3, 2, 1)], [0.5])  # |k|·L = √14 ≈ 3.74
    edge = mode_field(shape, [(2, 0, 0)], [0.5])  # exactly on the shell k_max = 2 (strict cutoff)
    for field, k0 in ((high, math.sqrt(14)), (edge, 2.0)):
        pred = inv_logit(logit(elf_ref.values) + field)
        res = analyze_residual(elf_ref, pred, list(range(6)), mode="volume")
        base = res["baseline"]["mae"]
        for row in res["per_kmax"]:
            if row["k_max"] <= k0:
                assert abs(row["delta_mae"]) < 1e-12 and row["fraction_logit"] < 1e-12
            else:
                assert abs(row["delta_mae"] + base) < 1e-12
        assert res["plateau"]["k_max"] == math.floor(k0) + 1


# --------------------------------------------------------------------------------------------------
# report, figures and the command


def tiny_triclinic():
    shape = (10, 9, 8)
    sites = np.array([[0.1, 0.2, 0.3], [0.6, 0.5, 0.7]])
    lattice = Lattice.from_parameters(3.0, 2.8, 2.6, 80.0, 95.0, 70.0)
    values = elf_like_grid(lattice.matrix, sites, shape, r_cut=2.5)
    rng = np.random.default_rng(1)
    pred = np.clip(values + 0.05 * mode_field(shape, [(1, 0, 0), (0, 1, 1)], [1.0, 0.6])
                   + 0.01 * rng.normal(size=shape), 0.0, 1.0)
    return ElfGrid(Structure(lattice, ["H", "H"], sites), values, "tiny.cube"), pred


def is_png(path) -> bool:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000 and min(mpimg.imread(path).shape[:2]) > 50


def test_every_figure_renders_to_a_valid_png(tmp_path):
    ref, pred = tiny_triclinic()
    res = analyze_residual(ref, pred, list(range(9)), mode="slice", slice_axis=0, slice_index=2)
    written = write_report(res, tmp_path / "slice", ref, pred, dpi=72)
    names = {p.name for p in written}
    assert names == {"residual.json", *FIGURES.values()}
    for p in written:
        if p.suffix == ".png":
            assert is_png(p), p.name
    loaded = json.loads((tmp_path / "slice" / "residual.json").read_text())
    assert [r["k_max"] for r in loaded["per_kmax"]] == list(range(9))
    assert loaded["distribution"]["count"] and sum(loaded["distribution"]["count"]) == 9 * 8

    vol = analyze_residual(ref, pred, "0:6", mode="volume", slice_axis=2, slice_index=1)
    shown = fields_at(vol, ref, pred)  # volume mode: the 3D fit, shown on plane c = 1/8
    assert shown["y_ref"].shape == (10, 9) and np.array_equal(shown["y_ref"], ref.values[:, :, 1])
    for p in write_comparison({"slice a=0.2": res, "volume": vol}, tmp_path / "cmp", dpi=72):
        assert is_png(p), p.name


def test_end_to_end_command_with_an_untrained_model(tmp_path):
    from elfscreen.model.network import ElfModel

    ref, _ = tiny_triclinic()
    cube = write_grid(ref, tmp_path / "ref.cube", digits=8)
    ckpt = ElfModel.untrained(n_members=1).save(tmp_path / "m.pt")
    out = tmp_path / "out"
    assert main(["analyze", "residual", "--dft", str(cube), "--model", str(ckpt), "--slice", "z=0.5", "--kmax-scan",
                 "0:12:2", "--out", str(out), "--no-figures"]) == 0
    data = json.loads((out / "residual.json").read_text())
    assert [r["k_max"] for r in data["per_kmax"]] == [0, 2, 4, 6, 8, 10, 12]
    assert data["plane"] == {"axis": "c", "axis_index": 2, "index": 4, "frac": 0.5,
                             "role": "analysed slice"}
    assert data["grid"] == [10, 9, 8] and data["source"]["members"] == 1
    assert data["baseline"]["mae"] > 0

    # a precomputed prediction on the same grid replaces the model; one on another grid is refused
    pred = write_grid(ElfGrid(ref.structure, np.full(ref.shape, 0.5), "p"), tmp_path / "pred.cube")
    summary = run(cube, prediction_path=pred, volume=True, kmax_scan=(0, 3), out_dir=tmp_path / "o2", figures=False)
    assert summary["mode"] == "volume" and len(json.loads((tmp_path / "o2" / "residual.json").read_text())["per_kmax"]) == 4
    other = write_grid(ElfGrid(ref.structure, np.full((4, 4, 4), 0.5), "q"), tmp_path / "other.cube")
    with pytest.raises(GridError, match="not the reference grid"):
        run(cube, prediction_path=other, out_dir=tmp_path / "o3", figures=False)


def test_bad_options_are_input_errors():
    assert kmax_values("0:40") == list(range(41))
    assert kmax_values((0, 10, 5)) == [0, 5, 10] and kmax_values("20,3,3") == [3, 20]
    assert parse_slice("y=0.25") == (1, 0.25) and parse_slice(("c", 0)) == (2, 0.0) and parse_slice(None) == (2, 0.0)
    for bad in ("40:0", "a:b", "-1,2", ""):
        with pytest.raises(InputError):
            kmax_values(bad)
    for bad in ("w=0.1", "z", "z=2"):
        with pytest.raises(InputError):
            parse_slice(bad)
    ref, pred = tiny_triclinic()
    with pytest.raises(GridError):
        analyze_residual(ref, pred[:, :, :4], [0, 1])
    with pytest.raises(InputError):
        analyze_residual(ref, pred, [0, 1], eps=0.0)
