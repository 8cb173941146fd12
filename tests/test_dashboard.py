"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright against a
live ``elfscreen serve`` (a subprocess, PostgreSQL store, the shipped model, Celery over the machine's Redis)
that screens four real hydrogen crystals — the three DFT test cells of ``tests/data/qe`` and sodalite H6; the
Celery worker starts only once the pages show the jobs queued, so the live updates are seen every time.
Checks the live updates, the table and
its sorting and filters, the plots, a batch page, a structure page (3D view, slice, critical points,
downloads), that no page logs a console error or loads anything from elsewhere, and saves a PNG of each
page in ``tests/artifacts/``."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pymatgen.core import Lattice, Structure

from browser import Watched, browser, watched  # noqa: F401 - fixtures
from live_server import live_server, service_environ
from elfscreen.model.volumetric import read_grid


ROOT = Path(__file__).resolve().parents[1]
QE = ROOT / "tests" / "data" / "qe"
NAMES = ["h2_molecular_cubic", "h_chains_tetragonal", "h_hexagonal"]


def structures() -> dict[str, str]:
    """POSCAR text of the three DFT test cells, and the H sodalite cage of CaH6 without its Ca (Im-3m,
    primitive cell, 6 H; the shipped model sees hydrogen only) as CIF."""
    files = {f"POSCAR_{name}": read_grid(QE / f"{name}.ELF.cube.gz").structure.to(fmt="poscar") for name in NAMES}
    sodalite = Structure.from_spacegroup("Im-3m", Lattice.cubic(3.3), ["H"], [[0.25, 0, 0.5]])
    files["h6_sodalite.cif"] = sodalite.get_primitive_structure().to(fmt="cif")
    return files


@pytest.fixture(scope="module")
def service_env(pg_url, tmp_path_factory):
    """The settings of the server and the worker: PostgreSQL, Celery over the machine's Redis on a queue of
    this module's own, so jobs stay queued until :func:`worker` starts."""
    return service_environ(tmp_path_factory.mktemp("dashboard"), ELFSCREEN_DB_URL=pg_url,
                           ELFSCREEN_BROKER_URL="redis://127.0.0.1:6379/0",
                           ELFSCREEN_QUEUE=f"dashboard-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, service_env):
    """``elfscreen serve`` on a free port; yields its base URL."""
    overrides = {k: service_env[k] for k in ("ELFSCREEN_DB_URL", "ELFSCREEN_BROKER_URL", "ELFSCREEN_QUEUE")}
    with live_server(tmp_path_factory.mktemp("server"), **overrides) as url:
        yield url


class Worker:
    """A Celery worker on the module's queue, started when a test asks for it (once)."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log, self.proc = env, log, None

    def start(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "elfscreen.worker.celery_app", "worker", "-Q", self.env["ELFSCREEN_QUEUE"],
                 "-c", "1", "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "-n", f"dashboard-{os.getpid()}@%h"],
                cwd=ROOT, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def worker(service_env, tmp_path_factory):
    w = Worker(service_env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def batches(server):
    """Two batches, submitted while no worker runs (so they stay queued): three DFT cells (default options: no grid kept), and sodalite H6
    with its grid kept. ``{"cells": submit response, "sodalite": submit response}``."""
    files = structures()
    cells = httpx.post(f"{server}/v1/screenings", timeout=60,
                       files=[("files", (name, text)) for name, text in files.items() if name.startswith("POSCAR")])
    sodalite = httpx.post(f"{server}/v1/screenings", timeout=60, data={"options": json.dumps({"keep_grid": True})},
                          files=[("files", ("h6_sodalite.cif", files["h6_sodalite.cif"]))])
    assert cells.status_code == sodalite.status_code == 202, (cells.text, sodalite.text)
    job = cells.json()["jobs"][0]
    assert job["links"]["ui"] == f"{server}/ui/screenings/{job['id']}"
    return {"cells": cells.json(), "sodalite": sodalite.json()}


@pytest.fixture(scope="module")
def done(server, batches, worker):
    """The batches, finished (the worker started if no test has started it yet)."""
    worker.start()
    deadline = time.monotonic() + 240
    for b in batches.values():
        while not httpx.get(f"{server}/v1/batches/{b['batch_id']}", timeout=30).json()["finished"]:
            assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
            time.sleep(0.5)
    return batches


def table_values(page, key: str) -> list:
    """The column ``key`` of the results table, as shown (None for '–')."""
    return page.eval_on_selector_all(f"#results tbody td:nth-child({column_index(page, key)})",
                                     "cells => cells.map(c => c.textContent === '–' ? null : c.textContent)")


def column_index(page, key: str) -> int:
    keys = page.eval_on_selector_all("#results thead th", "ths => ths.map(th => th.dataset.key)")
    return keys.index(key) + 1


def painted(page, selector: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (H, W, 3) of an element as the screen shows it, and whether each is not white."""
    pixels = np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")).astype(int)
    return pixels, (pixels < 245).any(axis=-1)


def test_pages_update_live_then_stop_polling(watched, browser, server, batches, worker):
    """Opened while the jobs are queued (no worker yet), the overview and sodalite H6's page show them finish once a
    worker starts."""
    structure = Watched(browser, server)
    structure.page.goto(f"{server}/ui/screenings/{batches['sodalite']['jobs'][0]['id']}")
    page = watched.page
    page.goto(f"{server}/ui")
    page.wait_for_selector("#results tbody tr")
    assert page.locator("#results tbody tr[data-status=queued]").count() == 4
    watched.screenshot("dashboard-overview-live.png")
    structure.page.wait_for_selector("#status-line[data-status]")
    assert structure.page.get_attribute("#status-line", "data-status") == "queued"
    worker.start()
    # the jobs finish while the page is open: no reload
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr[data-status=done]').length === 4",
                           timeout=150_000)
    page.wait_for_function("() => document.querySelectorAll('#batches li[data-finished=true]').length === 2")
    assert page.is_hidden("#live")
    polled = len(watched.requests)
    page.wait_for_timeout(3000)  # longer than the 2 s poll period
    assert len(watched.requests) == polled, "the page still polls after every job finished"
    watched.check()
    structure.page.wait_for_selector("#slice[data-ready=true]", timeout=60_000)
    structure.check()
    structure.page.close()


def test_table_sorts_filters_and_plots(watched, server, done):
    page = watched.page
    page.goto(f"{server}/ui")
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr[data-status=done]').length === 4")
    rows = httpx.get(f"{server}/v1/results").json()["items"]
    assert sorted(table_values(page, "name")) == sorted(r["name"] for r in rows)
    assert table_values(page, "reduced_formula") == [r["reduced_formula"] for r in rows]  # submission order until sorted

    page.click("#results th[data-key=phi] button")
    assert page.get_attribute("#results th[data-key=phi]", "aria-sort") == "ascending"
    shown = [float(v) for v in table_values(page, "phi")]
    assert shown == sorted(shown) and shown == [round(r["phi"], 3) for r in sorted(rows, key=lambda r: r["phi"])]
    page.click("#results th[data-key=phi] button")
    assert [float(v) for v in table_values(page, "phi")] == shown[::-1]
    page.click("#results th[data-key=tc_k] button")
    assert [float(v) for v in table_values(page, "tc_k")] == sorted(round(r["tc_k"]) for r in rows)
    page.click("#results th[data-key=name] button")  # text: the browser's collation (case-insensitive)
    names = table_values(page, "name")
    assert names == page.evaluate("names => [...names].sort((a, b) => a.localeCompare(b))", names)
    assert names[0] == "h6_sodalite.cif"

    # histogram: 20 bins of φ holding the 4 structures; scatter: one point per structure with φ and Tc
    assert page.locator("#histogram rect.bar").count() == 20
    counts = page.eval_on_selector_all("#histogram rect.bar", "bars => bars.map(b => Number(b.dataset.count))")
    assert sum(counts) == 4
    with_tc = [r for r in rows if r["phi"] is not None and r["tc_k"] is not None]
    assert page.locator("#scatter circle.point").count() == len(with_tc) == 4
    page.hover("#scatter circle.point >> nth=0")
    assert page.is_visible("#tooltip") and "φ =" in page.inner_text("#tooltip")
    page.select_option("#hist-var", "tc_k")
    assert sum(page.eval_on_selector_all("#histogram rect.bar", "bars => bars.map(b => Number(b.dataset.count))")) == 4

    page.fill("#f-text", "h_")  # the names of the chains and the hcp cell
    assert sorted(table_values(page, "reduced_formula")) == ["H2", "H2"]
    assert page.locator("#scatter circle.point").count() == 2
    watched.screenshot("dashboard-overview.png")
    page.fill("#f-text", "")
    page.fill("#f-phi-min", "0.5")
    assert all(float(v) >= 0.5 for v in table_values(page, "phi"))
    watched.check()


def test_batch_page_lists_its_jobs_with_a_permalink(watched, server, done):
    page = watched.page
    batch_id = done["cells"]["batch_id"]
    page.goto(f"{server}/ui/batches/{batch_id}")
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr[data-status=done]').length === 3")
    assert page.input_value("#batch-link") == f"{server}/ui/batches/{batch_id}"
    assert page.get_attribute("#batch-progress", "value") == "1"
    csv = httpx.get(page.get_attribute("#batch-csv", "href"))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == 4 and "permalink" in csv.text.splitlines()[0]
    watched.screenshot("dashboard-batch.png")
    watched.check()


@pytest.mark.parametrize("which", ["sodalite", "cells"])
def test_structure_page_draws_crystal_isosurface_slice_and_downloads(watched, server, done, which):
    """Sodalite H6 kept its grid; a DFT cell of the default submission did not, so its views predict it again."""
    job = httpx.get(f"{server}/v1/batches/{done[which]['batch_id']}").json()["jobs"][0]
    page = watched.page
    page.goto(job["links"]["ui"])
    page.wait_for_selector("#slice[data-ready=true]", timeout=60_000)
    page.wait_for_function("() => Number(document.getElementById('view3d').dataset.triangles) > 0 && "
                           "Number(document.getElementById('view3d').dataset.frames) > 0")
    assert page.input_value("#permalink") == f"{server}/ui/screenings/{job['id']}"
    assert job["result"]["reduced_formula"] in page.inner_text("#title")
    _, ink = painted(page, "#slice")
    assert ink.mean() > 0.3
    pixels, ink = painted(page, ".view3d")
    bluish = (pixels[..., 2] > pixels[..., 0] + 40).mean()  # the isosurface's colour
    assert ink.mean() > 0.05 and bluish > 0.02, (ink.mean(), bluish)
    listed = job["result"]["critical_points"]["listed"]
    assert page.locator("#critical-points tbody tr").count() == listed > 0

    # drag rotates the view: another picture
    before = page.eval_on_selector("#view3d", "c => c.toDataURL()")
    box = page.locator("#view3d").bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 320, box["y"] + 240, steps=5)
    page.mouse.up()
    page.wait_for_function("before => document.getElementById('view3d').toDataURL() !== before", arg=before)

    kinds = {"#dl-json": "application/json", "#dl-csv": "text/csv", "#dl-cube": "chemical/x-cube"}
    for selector, kind in kinds.items():
        response = page.request.get(page.eval_on_selector(selector, "a => a.href"))
        assert response.status == 200 and response.headers["content-type"].startswith(kind), (selector, response.status)
    watched.screenshot(f"dashboard-structure-{which}.png")
    watched.check()


def test_structure_page_of_an_unknown_job_says_so(watched, server):
    page = watched.page
    page.goto(f"{server}/ui/screenings/nope")
    page.wait_for_selector("#error:not([hidden])")
    assert "no screening job nope" in page.inner_text("#error")
    assert [p for p in watched.problems if "404" not in p] == []  # the browser logs the 404 itself


def test_api_docs_render_offline(watched, server):
    """/docs draws every operation from the server's own files (Swagger UI of the swagger-ui-bundle
    package): the browser here has no internet, and `watched` fails on any request elsewhere, console
    error or CSP violation."""
    page = watched.page
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    operations = sum(len([m for m in ops if m in ("get", "post", "put", "patch", "delete")]) for ops in paths.values())
    assert page.locator(".opblock").count() == operations > 5
    assert "default-src 'self'" in httpx.get(f"{server}/docs").headers["content-security-policy"]
    watched.screenshot("api-docs.png")
    watched.check()


def test_ui_is_served_without_external_resources(server):
    html = httpx.get(f"{server}/ui").text
    assert "http://" not in html and "https://" not in html
    csp = httpx.get(f"{server}/ui").headers["content-security-policy"]
    assert "default-src 'self'" in csp
