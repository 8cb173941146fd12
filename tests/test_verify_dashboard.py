"""The dashboard's DFT-verification views, against a live ``elfscreen serve`` (embedded: job processes and the
DFT pool, SQLite store, the shipped model) that screens three small hydrogen crystals and verifies two of them
by real DFT (pw.x + pp.x at ``ELFSCREEN_VERIFY_ECUTWFC=30`` Ry, a few seconds each) through
``POST /v1/screenings/{id}/verify``. Without a browser: the result rows' DFT fields, ``/v1/verified`` (points
and the model's error) and ``…/slice-pair`` (the ML slice is the page's slice, the DFT slice is the DFT cube
sampled on the same plane). In headless Chromium (Playwright, Debian's ``chromium``): the "DFT ✓" badge in the
results table, the structure page's ML-vs-DFT numbers and two slices (drawn live once the verification ends),
and the parity page (points where ML φ and DFT φ put them, σ bars, y = x); no console error, nothing loaded
from elsewhere; PNGs in ``tests/artifacts/``."""
from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pymatgen.core import Lattice, Structure

from browser import browser, watched  # noqa: F401 - fixtures
from live_server import live_server
from elfscreen.model.dft import qe_available
from elfscreen.model.sampling import Plane, slice_values
from elfscreen.model.volumetric import parse_grid


ROOT = Path(__file__).resolve().parents[1]
# the parity plot's axes (plots.js: viewBox 480 × 300, margins left 54, right 14, top 12, bottom 42), φ 0…1
PLOT_X = (54.0, 466.0)
PLOT_Y = (258.0, 12.0)


def cells() -> dict[str, str]:
    """POSCARs of three small metallic H crystals (H_DOS needs states at E_F): an 8-atom cube and a 4-atom fcc
    cell (each with one atom displaced), verified; a 2-atom bcc cell, screened only."""
    frac = np.array([[i, j, k] for i in (0, 0.5) for j in (0, 0.5) for k in (0, 0.5)], dtype=float)
    frac[0] += 0.04
    h8 = Structure(Lattice.cubic(2.6), ["H"] * 8, frac)
    h4 = Structure(Lattice.cubic(2.3), ["H"] * 4, [[0.03, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    h2 = Structure(Lattice.cubic(1.7), ["H"] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]])
    return {name: s.to(fmt="poscar") for name, s in (("H8.vasp", h8), ("H4_fcc.vasp", h4), ("H2_bcc.vasp", h2))}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert qe_available(), "QE (pw.x, pp.x, projwfc.x) must be installed for the DFT verification"
    with live_server(tmp_path_factory.mktemp("verify-server"), ELFSCREEN_VERIFY_ECUTWFC="30",
                     ELFSCREEN_WORKERS="1") as url:
        yield url


@pytest.fixture(scope="module")
def jobs(server) -> dict[str, dict]:
    """The three cells screened; H8 verified by DFT (H4 is verified by the live-update test). Name → job."""
    r = httpx.post(f"{server}/v1/screenings", files=[("files", (n, t)) for n, t in cells().items()], timeout=60)
    assert r.status_code == 202, r.text
    ids = {j["name"]: j["id"] for j in r.json()["jobs"]}
    deadline = time.monotonic() + 180
    while not httpx.get(f"{server}/v1/batches/{r.json()['batch_id']}", timeout=30).json()["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert httpx.post(f"{server}/v1/screenings/{ids['H8.vasp']}/verify", timeout=30).status_code == 202
    return {name: wait_verified(server, i) if name == "H8.vasp" else job(server, i) for name, i in ids.items()}


def job(server: str, job_id: str) -> dict:
    return httpx.get(f"{server}/v1/screenings/{job_id}", timeout=30).json()


def wait_verified(server: str, job_id: str) -> dict:
    deadline = time.monotonic() + 240
    while (j := job(server, job_id))["verification"]["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, j
        time.sleep(0.3)
    assert j["verification"]["status"] == "done", j["verification"]
    return j


@pytest.fixture(scope="module")
def verified(server, jobs) -> dict[str, dict]:
    """H8 and H4 both verified (H4 waited for here when the live-update test has not run)."""
    h4 = jobs["H4_fcc.vasp"]
    if job(server, h4["id"])["verification"] is None:
        assert httpx.post(f"{server}/v1/screenings/{h4['id']}/verify", timeout=30).status_code == 202
    return {"H8.vasp": jobs["H8.vasp"], "H4_fcc.vasp": wait_verified(server, h4["id"])}


# --- the routes --------------------------------------------------------------------------------------

def test_result_rows_carry_the_verification(server, jobs):
    rows = {r["name"]: r for r in httpx.get(f"{server}/v1/results", timeout=30).json()["items"]}
    h8 = jobs["H8.vasp"]["result"]
    assert rows["H8.vasp"]["verification"] == "done"
    assert rows["H8.vasp"]["phi"] == h8["phi"]  # the ML φ stays as it was
    assert rows["H8.vasp"]["dft_phi"] == h8["dft"]["phi"] and rows["H8.vasp"]["delta_phi"] == h8["delta_phi"]
    assert rows["H8.vasp"]["delta_phi"] == pytest.approx(h8["dft"]["phi"] - h8["phi"])
    assert rows["H8.vasp"]["dft_tc_k"] == h8["dft"]["tc"]["value_k"]
    assert rows["H2_bcc.vasp"]["verification"] is None and rows["H2_bcc.vasp"]["dft_phi"] is None
    csv = httpx.get(f"{server}/v1/results.csv", timeout=30).text.splitlines()
    assert "dft_phi" in csv[0] and "delta_phi" in csv[0]


def test_slice_pair_is_the_ml_slice_and_the_dft_grid_on_one_plane(server, jobs):
    """The pair's ML side equals the structure page's slice; its DFT side equals the downloaded DFT cube sampled
    (trilinear, model.sampling) on that plane, taken in the job's own cell."""
    j = jobs["H8.vasp"]
    base = f"{server}/v1/screenings/{j['id']}"
    pair = httpx.get(f"{base}/slice-pair", params={"n": 41}, timeout=60).json()
    single = httpx.get(f"{base}/slice", params={"n": 41}, timeout=60).json()
    assert pair["ml"]["values"] == single["values"] and pair["origin"] == single["origin"] and pair["u"] == single["u"]
    assert pair["ml"]["level"] == j["result"]["phi"] and pair["dft"]["level"] == j["result"]["dft"]["phi"]
    cube = httpx.get(f"{base}/dft.cube", timeout=60)
    assert cube.status_code == 200
    dft = parse_grid(cube.text, "cube", "dft")  # httpx undoes the Content-Encoding: gzip
    lattice = np.array(httpx.get(f"{base}/scene", timeout=30).json()["lattice"])
    assert np.allclose(dft.structure.lattice.abc, np.linalg.norm(lattice, axis=1), atol=1e-3)
    plane = Plane(np.array(pair["origin"]), np.array(pair["u"]), np.array(pair["v"]), pair["plane"])
    expected = slice_values(dft.values, lattice, plane, pair["half_width_a"], pair["n"])
    # the answer rounds values to 4 digits (5e-5) and the lattice and plane to 1e-4 Å, which moves the sampled
    # points by up to ~2e-4 Å where the ELF changes by up to ~2 per Å near the bonds
    assert np.abs(np.array(pair["dft"]["values"]) - expected).max() < 5e-4
    assert np.abs(np.array(pair["dft"]["values"]) - np.array(pair["ml"]["values"])).max() > 0.01  # two fields
    unverified = httpx.get(f"{server}/v1/screenings/{jobs['H2_bcc.vasp']['id']}/slice-pair", timeout=30)
    assert unverified.status_code == 409 and unverified.json()["error"]["code"] == "not_verified"


# --- in the browser ----------------------------------------------------------------------------------

def canvas_pixels(page, selector: str) -> np.ndarray:
    """The pixels (H, W, 3) a canvas holds."""
    data = page.eval_on_selector(selector, "c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")).astype(int)


def test_structure_page_shows_ml_and_dft_side_by_side_live(watched, server, jobs):
    """H4's page, opened just after its verification was asked for, draws the DFT part once it is done (no reload):
    the numbers of the API, and the ML and DFT slices on one plane (the ML one equal to the page's own slice)."""
    j = jobs["H4_fcc.vasp"]
    asked = job(server, j["id"])["verification"] is None  # (false when run alone after the parity tests)
    if asked:
        assert httpx.post(f"{server}/v1/screenings/{j['id']}/verify", timeout=30).status_code == 202
    page = watched.page
    page.goto(j["links"]["ui"])
    page.wait_for_selector("#dft-status[data-status]")
    if asked:  # the DFT run takes ~2 s; the page shows its state at once and the rest when it ends
        assert page.get_attribute("#dft-status", "data-status") in ("queued", "running")
        assert page.is_hidden("#dft-compare")
    page.wait_for_selector("#slice[data-ready=true]", timeout=60_000)
    page.wait_for_selector("#dft-status[data-status=done]", timeout=240_000)
    page.wait_for_selector("#slice-ml[data-ready=true]", timeout=60_000)
    page.wait_for_selector("#slice-dft[data-ready=true]", timeout=60_000)
    r = job(server, j["id"])["result"]
    d = r["dft"]
    cell = lambda key, side: page.inner_text(f"#compare tr[data-key={key}] td.{side}")  # noqa: E731
    assert cell("phi", "ml") == f"{r['phi']:.4f} ± {r['uncertainty']['phi_std']:.4f}"
    assert cell("phi", "dft") == f"{d['phi']:.4f}"
    assert cell("phi", "delta") == f"{'+' if r['delta_phi'] > 0 else ''}{r['delta_phi']:.4f}"
    assert cell("phi_star", "dft") == f"{d['phi_star']:.4f}" and cell("tc", "dft") == f"{d['tc']['value_k']:.0f}"
    assert cell("h_dos", "dft") == f"{d['h_dos']:.3f}"
    assert "pure-h@ecutwfc=30" in page.inner_text("#dft-settings")
    # same plane, same grid: the pair's ML canvas is the page's slice pixel for pixel; the DFT one differs
    ml, dft, single = (canvas_pixels(page, s) for s in ("#slice-ml", "#slice-dft", "#slice"))
    assert np.array_equal(ml, single)
    assert (np.abs(ml - dft).sum(axis=-1) > 30).mean() > 0.01  # another field (the model is close: ~5 %)
    assert ((dft < 245).any(axis=-1)).mean() > 0.3
    cube = page.request.get(page.eval_on_selector("#dl-dft-cube", "a => a.href"))
    assert cube.status == 200 and cube.headers["content-type"].startswith("chemical/x-cube")
    watched.screenshot("dashboard-ml-vs-dft.png")
    watched.check()


def test_verified_lists_ml_against_dft_with_the_models_error(server, verified):
    data = httpx.get(f"{server}/v1/verified", timeout=30).json()
    assert data["total"] == 2 and {p["name"] for p in data["items"]} == set(verified)
    for p in data["items"]:
        r = verified[p["name"]]["result"]
        assert (p["phi_ml"], p["phi_dft"], p["phi_std"]) == (r["phi"], r["dft"]["phi"], r["uncertainty"]["phi_std"])
        assert p["dft_settings"] == "pure-h@ecutwfc=30" and p["model_version"] == r["provenance"]["model_version"]
    err = [verified[n]["result"]["phi"] - verified[n]["result"]["dft"]["phi"] for n in verified]
    s = data["summary"]
    assert s["structures"] == 2 and s["phi_mae"] == pytest.approx(np.mean(np.abs(err)))
    assert s["phi_bias"] == pytest.approx(np.mean(err))
    sig = [verified[n]["result"]["uncertainty"]["phi_std"] for n in verified]
    assert s["coverage"]["within_2sigma"] == pytest.approx(np.mean([abs(e) <= 2 * q for e, q in zip(err, sig)]))


def test_results_table_badges_verified_jobs(watched, server, verified, jobs):
    page = watched.page
    page.goto(f"{server}/ui")
    page.wait_for_function("() => document.querySelectorAll('#results tbody .badge.dft-done').length === 2")
    for name, j in verified.items():
        badge = page.locator(f"#results tbody tr[data-id='{j['id']}'] .badge")
        delta = j["result"]["delta_phi"]
        assert badge.inner_text() == f"DFT ✓ Δφ {'+' if delta > 0 else ''}{delta:.3f}"
        assert float(badge.get_attribute("data-delta-phi")) == pytest.approx(delta)
    assert page.locator(f"#results tbody tr[data-id='{jobs['H2_bcc.vasp']['id']}'] .badge").count() == 0
    page.click("#results th[data-key=delta_phi] button")  # sorts by |Δφ|, the unverified row last
    order = page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.id)")
    by_error = sorted(verified.values(), key=lambda j: abs(j["result"]["delta_phi"]))
    assert order == [j["id"] for j in by_error] + [jobs["H2_bcc.vasp"]["id"]]
    watched.screenshot("dashboard-dft-badges.png")
    watched.check()


def test_parity_page_plots_every_verified_structure(watched, server, verified):
    page = watched.page
    page.goto(f"{server}/ui/parity")
    page.wait_for_function("() => document.querySelectorAll('#parity circle.point').length === 2")
    for j in verified.values():
        r = j["result"]
        dot = page.locator(f"#parity circle.point[data-id='{j['id']}']")
        cx, cy = float(dot.get_attribute("cx")), float(dot.get_attribute("cy"))
        assert cx == pytest.approx(PLOT_X[0] + r["phi"] * (PLOT_X[1] - PLOT_X[0]), abs=0.01)  # x: ML φ
        assert cy == pytest.approx(PLOT_Y[0] + r["dft"]["phi"] * (PLOT_Y[1] - PLOT_Y[0]), abs=0.01)  # y: DFT φ
    bars = page.eval_on_selector_all("#parity line.errorbar", "ls => ls.map(l => [l.x1, l.x2].map(a => a.baseVal.value))")
    sigmas = sorted(j["result"]["uncertainty"]["phi_std"] for j in verified.values())
    assert sorted((b - a) / (PLOT_X[1] - PLOT_X[0]) / 2 for a, b in bars) == pytest.approx(sigmas, abs=1e-4)
    diagonal = page.eval_on_selector("#parity line.diagonal", "l => [l.x1, l.y1, l.x2, l.y2].map(a => a.baseVal.value)")
    assert diagonal == pytest.approx([PLOT_X[0], PLOT_Y[0], PLOT_X[1], PLOT_Y[1]])
    err = np.mean([abs(j["result"]["delta_phi"]) for j in verified.values()])
    assert page.inner_text("#summary [data-key='φ MAE'] dd") == f"{err:.4f}"
    assert page.locator("#verified tbody tr").count() == 2
    watched.screenshot("dashboard-parity.png")
    first = next(iter(verified.values()))
    page.click(f"#parity circle.point[data-id='{first['id']}']")
    page.wait_for_url(first["links"]["ui"])
    watched.check()
