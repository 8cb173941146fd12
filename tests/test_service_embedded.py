"""The HTTP API in embedded mode (in-process pool, SQLite store): end to end, cache, limits, access."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pymatgen.core import Lattice, Structure

from elfscreen.app.api import create_app
from elfscreen.app.config import Settings
from elfscreen.model.dataset import load_entry
from elfscreen.model.options import FAST_SPACING_A
from elfscreen.model.pipeline import forget_model, load_model, screen_structure
from elfscreen.model.predict import grid_shape
from elfscreen.model.structures import parse_structure
from elfscreen.model.volumetric import parse_grid
from test_service_common import OPTIONS, SPACING, as_files, comparable, make_checkpoint, structures, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model"))


def client_for(tmp_path, **overrides) -> TestClient:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}", sweep_every_s=0.5, **overrides)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(checkpoint, tmp_path_factory):
    with client_for(tmp_path_factory.mktemp("store"), embedded_workers=2, max_grid_points=500_000) as c:
        yield c


def finished(client, batch_id):
    return wait_for(lambda: client.get(f"/v1/batches/{batch_id}").json(), lambda b: b["finished"], 180)


def test_multipart_batch_of_cif_and_poscar_equals_the_pipeline(client, checkpoint):
    files = as_files(structures())
    r = client.post("/v1/screenings", files=[("files", (name, text)) for name, text in files.items()],
                    data={"options": json.dumps(OPTIONS)})
    assert r.status_code == 202, r.text
    body = r.json()
    assert [j["name"] for j in body["jobs"]] == list(files) and all(j["status"] == "queued" for j in body["jobs"])
    batch = finished(client, body["batch_id"])
    assert batch["counts"] == {"queued": 0, "running": 0, "done": 3, "failed": 0} and batch["progress"] == 1.0

    model = load_model()
    for job in batch["jobs"]:
        fmt = "cif" if job["name"].endswith(".cif") else "poscar"
        direct = screen_structure(parse_structure(files[job["name"]], fmt, job["name"]), job["name"], model,
                                  spacing_a=SPACING).model_dump(mode="json")
        assert comparable(job["result"]) == comparable(direct)
        assert job["result"]["provenance"]["model_version"] == "service-test" and job["attempts"] == 1
        one = client.get(f"/v1/screenings/{job['id']}").json()
        assert one["status"] == "done" and one["result"]["phi"] == job["result"]["phi"] and not one["cached"]


def test_json_submission_kept_grid_and_cache_in_another_setting(client):
    s = structures()["h4_tet"]
    poscar = s.to(fmt="poscar")
    r = client.post("/v1/screenings", json={"structures": [{"name": "tet", "format": "poscar", "content": poscar}],
                                            "options": {**OPTIONS, "keep_grid": True, "tc_model": "sr2"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["jobs"][0]["id"]
    job = wait_for(lambda: client.get(f"/v1/screenings/{job_id}").json(), lambda j: j["status"] == "done")
    assert job["result"]["tc"]["model"] == "sr2" and job["grid_available"]
    cube = client.get(f"/v1/screenings/{job_id}/elf.cube")
    assert cube.status_code == 200
    grid = parse_grid(cube.text, "cube", "tet")
    assert list(grid.shape) == job["result"]["grid"]["shape"]

    # the same crystal, origin shifted and axes permuted, written as CIF: answered from the cache at once
    moved = s.copy()
    moved.translate_sites(range(len(moved)), [0.31, 0.12, 0.57])
    moved.make_supercell([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    r = client.post("/v1/screenings", json={"structures": [{"name": "tet-moved.cif", "content": moved.to(fmt="cif")}],
                                            "options": {**OPTIONS, "keep_grid": True, "tc_model": "sr2"}})
    again = r.json()["jobs"][0]
    assert again["status"] == "done" and again["cached"]
    cached = client.get(f"/v1/screenings/{again['id']}").json()
    assert cached["cached_from"] == job_id and cached["result"]["name"] == "tet-moved.cif"
    assert cached["result"]["phi"] == job["result"]["phi"]
    assert client.get(f"/v1/screenings/{again['id']}/elf.cube").status_code == 200

    # other options are another computation
    r = client.post("/v1/screenings", json={"structures": [{"name": "tet", "format": "poscar", "content": poscar}],
                                            "options": {**OPTIONS, "tc_model": "sr2", "refine": False}})
    assert not r.json()["jobs"][0]["cached"]


def test_listing_filters_and_pages(client):
    page = client.get("/v1/screenings", params={"status": "done", "limit": 2}).json()
    assert len(page["items"]) == 2 and page["total"] >= 4 and page["items"][0]["result"] is None
    rest = client.get("/v1/screenings", params={"status": "done", "limit": 2, "offset": 2, "with_results": True}).json()
    assert {i["id"] for i in rest["items"]}.isdisjoint(i["id"] for i in page["items"])
    assert all(i["result"] for i in rest["items"])
    assert client.get("/v1/screenings", params={"name": "tet-moved.cif"}).json()["total"] == 1


BAD = {
    "malformed": ("broken.cif", "data_x\n_cell_length_a 3\nthis is not a cif\n", 422, "broken.cif"),
    "no hydrogen": ("nacl.cif", Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif"),
                    422, "contains no hydrogen"),
    "unknown format": ("notes.txt", "H\n", 422, "cannot tell the structure format"),
    "too many atoms": ("big.cif", Structure(Lattice.cubic(30.0), ["H"] * 600,
                                            [[(i % 10) / 10, (i // 10 % 10) / 10, (i // 100) / 10] for i in range(600)])
                       .to(fmt="cif"), 422, "has 600 atoms; the limit is 500"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_structures_get_4xx_naming_file_and_problem(client, case):
    name, text, status, words = BAD[case]
    good = as_files(structures())
    files = [("files", (name, text))] + [("files", (n, t)) for n, t in good.items()]
    before = client.get("/v1/screenings").json()["total"]
    r = client.post("/v1/screenings", files=files, data={"options": json.dumps(OPTIONS)})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["input"] == name and name in err["message"] and words in err["message"]
    assert client.get("/v1/screenings").json()["total"] == before  # nothing of a refused request is stored


def test_request_errors_are_json_never_tracebacks(client):
    poscar = structures()["cah4"].to(fmt="poscar")
    one = {"name": "x", "format": "poscar", "content": poscar}
    big = {"name": "big", "format": "poscar",
           "content": Structure(Lattice.cubic(4.2), ["H"] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="poscar")}
    cases = [
        ({"structures": []}, 422, "structures"),
        ({"structures": [{"name": "x", "format": "poscar"}]}, 422, "content"),
        ({"structures": [one], "options": {"spacing_a": -1}}, 422, "spacing_a"),
        ({"structures": [one], "options": {"tc_model": "nope"}}, 422, "tc_model"),
        ({"structures": [one], "options": {"spacing_a": 0.03}}, 413, "grid"),
        ({"structures": [one], "options": {"evaluation": "coarse"}}, 422, "options.evaluation: Input should be 'grid', "
                                                                         "'fast' or 'adaptive'"),
        ({"structures": [one], "options": {"evaluation": "fast", "keep_grid": True}}, 422,
         "body.options: Value error, keep_grid needs evaluation \"grid\", not 'fast'"),
        ({"structures": [one], "options": {"evaluation": "adaptive", "keep_grid": True}}, 422,
         "keep_grid needs evaluation \"grid\", not 'adaptive'"),
        # the grid limit applies to the evaluation's own default spacing: adaptive's 0.05 Å grid of this cell is
        # 84³ points (over the 500,000 limit), its 0.1 Å grid 42³
        ({"structures": [big], "options": {"evaluation": "adaptive"}}, 413, f"{84 ** 3:,}-point grid (84, 84, 84)"),
    ]
    assert grid_shape(Structure.from_str(big["content"], fmt="poscar"), 0.05) == (84, 84, 84)
    for body, status, words in cases:
        r = client.post("/v1/screenings", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["error"]["message"], r.text
    r = client.post("/v1/screenings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post("/v1/screenings", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/v1/screenings", files=[("files", ("POSCAR", poscar))],
                    data={"options": json.dumps({"evaluation": "fast", "keep_grid": True})})
    assert r.status_code == 422 and r.json()["error"]["input"] == "options", r.text
    assert "keep_grid needs evaluation" in r.json()["error"]["message"]
    r = client.post("/v1/screenings", files=[("files", ("x.cif", b"\xff\xfe\x00binary"))])
    assert r.status_code == 422 and "x.cif" in r.json()["error"]["message"]
    r = client.get("/v1/screenings/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/v1/batches/nope").status_code == 404


def test_gzipped_upload_is_read(client):
    poscar = structures()["cah4"].to(fmt="poscar")
    r = client.post("/v1/screenings", files=[("files", ("POSCAR", gzip.compress(poscar.encode())))],
                    data={"options": json.dumps(OPTIONS)})
    assert r.status_code == 202, r.text


def test_limits_keys_and_rate(tmp_path, checkpoint):
    poscar = structures()["cah4"].to(fmt="poscar")
    one = {"name": "x", "format": "poscar", "content": poscar}
    with client_for(tmp_path, api_keys=frozenset({"k1"}), rate_limit_per_min=2, max_structures=2,
                    max_upload_bytes=20_000) as c:
        assert c.post("/v1/screenings", json={"structures": [one]}).status_code == 401
        assert c.post("/v1/screenings", json={"structures": [one]}, headers={"X-API-Key": "bad"}).status_code == 401
        key = {"X-API-Key": "k1"}
        r = c.post("/v1/screenings", json={"structures": [one] * 3}, headers=key)
        assert r.status_code == 413 and "limit is 2" in r.json()["error"]["message"]
        r = c.post("/v1/screenings", json={"structures": [{**one, "content": poscar * 100}]}, headers=key)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = c.post("/v1/screenings", json={"structures": [one]}, headers={"Authorization": "Bearer k1"})
        assert r.status_code == 202, r.text
        r = c.post("/v1/screenings", json={"structures": [one]}, headers=key)
        assert r.status_code == 429 and "Retry-After" in r.headers  # the 413 and the 202 used both tokens
        assert c.get(f"/v1/screenings/{'0' * 32}", headers=key).status_code == 404
        assert c.get("/healthz").json()["status"] == "ok"
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["dispatcher"]["mode"] == "embedded"
        metrics = c.get("/metrics").text
        assert 'elfscreen_jobs{status="queued"}' in metrics and "elfscreen_http_requests_total" in metrics


def test_openapi_is_served(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/screenings"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "ScreeningResult" in spec["components"]["schemas"]
    evaluation = spec["components"]["schemas"]["Options"]["properties"]["evaluation"]
    assert evaluation["enum"] == ["grid", "fast", "adaptive"] and evaluation["default"] == "grid"
    assert "one ensemble member on the grid" in evaluation["description"]
    spacing = spec["components"]["schemas"]["Options"]["properties"]["spacing_a"]
    assert f"fast {FAST_SPACING_A}" in spacing["description"]
    assert client.get("/docs").status_code == 200


@pytest.fixture()
def shipped_model():
    """The model shipped with elfscreen instead of the untrained test one, for this test's service: on the
    tests' tiny cells with an untrained model the fast evaluation falls back to the whole grid."""
    saved = os.environ.pop("ELFSCREEN_MODEL", None)
    forget_model()
    yield load_model()
    if saved is not None:
        os.environ["ELFSCREEN_MODEL"] = saved
    forget_model()


def test_fast_and_adaptive_jobs_are_the_pipelines_and_cached_apart_from_grid_jobs(tmp_path, shipped_model):
    structure, _ = load_entry(ROOT / "data/crystal-test/crystal-s1-000010.npz")  # 8 H atoms (tests/test_adaptive.py)
    poscar = structure.to(fmt="poscar")
    direct = parse_structure(poscar, "poscar", "c8")  # the structure exactly as the service reads it

    def screened(c, options: dict) -> dict:
        r = c.post("/v1/screenings", json={"structures": [{"name": "c8", "format": "poscar", "content": poscar}],
                                           "options": options})
        assert r.status_code == 202, r.text
        ref = r.json()["jobs"][0]
        return wait_for(lambda: c.get(f"/v1/screenings/{ref['id']}").json(), lambda j: j["status"] != "queued"
                        and j["status"] != "running", 180)

    with client_for(tmp_path, embedded_workers=1) as c:
        fast = screened(c, {"evaluation": "fast"})
        assert fast["status"] == "done" and not fast["cached"], fast
        assert fast["options"]["evaluation"] == "fast" and fast["options"]["spacing_a"] == FAST_SPACING_A
        result = fast["result"]
        assert result["grid"]["source"] == "predicted-fast"
        adaptive_block = result["provenance"]["topology"]["adaptive"]
        assert adaptive_block["certified"] is True and adaptive_block["fallback"] is False, adaptive_block
        assert result["uncertainty"]["members"] == 5 and not fast["grid_available"]
        want = screen_structure(direct, "c8", shipped_model, spacing_a=FAST_SPACING_A, fast=True).model_dump(mode="json")
        assert result["grid"]["shape"] == want["grid"]["shape"]
        for key in ("phi", "phi_star", "phi_1d", "phi_2d"):
            assert abs(result[key] - want[key]) <= 0.003, (key, result[key], want[key])

        # the same structure and spacing on the whole grid is another computation, not the fast one's cache
        grid = screened(c, {"evaluation": "grid", "spacing_a": FAST_SPACING_A})
        assert grid["status"] == "done" and not grid["cached"] and grid["result"]["grid"]["source"] == "predicted"
        assert "adaptive" not in grid["result"]["provenance"]["topology"]
        again = screened(c, {"evaluation": "fast", "spacing_a": FAST_SPACING_A})
        assert again["cached"] and again["cached_from"] == fast["id"]
        adaptive = screened(c, {"evaluation": "adaptive", "spacing_a": 0.1})
        assert adaptive["status"] == "done" and not adaptive["cached"], adaptive
        assert adaptive["result"]["grid"]["source"] == "predicted-adaptive"
        assert adaptive["result"]["provenance"]["topology"]["adaptive"]["certified"] is True
        want = screen_structure(direct, "c8", shipped_model, spacing_a=0.1, adaptive=True).model_dump(mode="json")
        assert abs(adaptive["result"]["phi"] - want["phi"]) <= 0.003


def test_callback_is_posted_once_when_the_batch_finishes(tmp_path, checkpoint):
    import http.server
    import threading

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with client_for(tmp_path, callback_allow_private=True) as client:  # the hook listens on loopback
        structs = structures()
        body = {"structures": [{"name": n, "format": "poscar", "content": s.to(fmt="poscar")} for n, s in structs.items()],
                "options": {**OPTIONS, "min_persistence": 0.01}, "callback_url": f"http://127.0.0.1:{server.server_port}/hook"}
        batch_id = client.post("/v1/screenings", json=body).json()["batch_id"]
        batch = wait_for(lambda: client.get(f"/v1/batches/{batch_id}").json(), lambda b: b["callback_state"] == "sent")
        assert batch["callback_state"] == "sent" and len(received) == 1
        assert received[0]["batch_id"] == batch_id and [j["status"] for j in received[0]["jobs"]] == ["done"] * 3
    server.shutdown()


@pytest.mark.parametrize("url, address", [("http://127.0.0.1:9/hook", "127.0.0.1"), ("http://localhost/x", "127.0.0.1"),
                                          ("http://[::1]:8000/", "::1"), ("http://10.1.2.3/", "10.1.2.3"),
                                          ("https://169.254.169.254/latest/meta-data", "169.254.169.254"),
                                          ("http://0.0.0.0/", "0.0.0.0"), ("http://192.168.1.20/", "192.168.1.20")])
def test_callbacks_to_internal_addresses_are_refused(client, url, address):
    poscar = structures()["cah4"].to(fmt="poscar")
    before = client.get("/v1/screenings").json()["total"]
    r = client.post("/v1/screenings", json={"structures": [{"name": "x", "format": "poscar", "content": poscar}],
                                            "options": OPTIONS, "callback_url": url})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["input"] == "callback_url" and f"resolves to {address}" in err["message"], err
    r = client.post("/v1/screenings", files=[("files", ("POSCAR", poscar))], data={"callback_url": url})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_callback", r.text
    assert client.get("/v1/screenings").json()["total"] == before


def test_the_cache_never_shows_one_key_another_keys_jobs(tmp_path, checkpoint):
    poscar = structures()["h4_tet"].to(fmt="poscar")
    body = {"structures": [{"name": "tet", "format": "poscar", "content": poscar}], "options": OPTIONS}
    with client_for(tmp_path, api_keys=frozenset({"alice", "bob"})) as c:
        alice, bob = {"X-API-Key": "alice"}, {"X-API-Key": "bob"}
        first = c.post("/v1/screenings", json=body, headers=alice).json()["jobs"][0]["id"]
        wait_for(lambda: c.get(f"/v1/screenings/{first}", headers=alice).json(), lambda j: j["status"] == "done")
        again = c.post("/v1/screenings", json=body, headers=alice).json()["jobs"][0]
        assert again["cached"] and c.get(f"/v1/screenings/{again['id']}", headers=alice).json()["cached_from"] == first
        other = c.post("/v1/screenings", json=body, headers=bob).json()["jobs"][0]
        assert not other["cached"] and other["status"] == "queued"
        job = wait_for(lambda: c.get(f"/v1/screenings/{other['id']}", headers=bob).json(), lambda j: j["status"] == "done")
        assert job["cached_from"] is None and first not in json.dumps(job)


def test_resubmitting_a_folder_with_one_new_file_answers_every_structure(checkpoint, tmp_path):
    """`elfscreen submit folder/` twice against a live server, the second time with one more file: the
    request mixes cache hits with a new structure (one INSERT of rows with and without finish times)."""
    import os
    import subprocess
    import sys

    from live_server import live_server

    folder = tmp_path / "search"
    folder.mkdir()
    structs = structures()
    files = as_files(structs)
    first, new = list(files)[:2], list(files)[2]
    for name in first:
        (folder / name).write_text(files[name])

    def submit(url: str, out: Path) -> list[dict]:
        env = {k: v for k, v in os.environ.items() if k not in ("ELFSCREEN_SERVER", "ELFSCREEN_API_KEY")}
        proc = subprocess.run([sys.executable, "-m", "elfscreen.app.cli", "submit", str(folder), "--server", url,
                               "--out", str(out), "--spacing", str(SPACING)], capture_output=True, text=True,
                              timeout=300, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    (tmp_path / "server").mkdir()
    with live_server(tmp_path / "server") as url:
        once = submit(url, tmp_path / "first.jsonl")
        (folder / new).write_text(files[new])
        twice = submit(url, tmp_path / "second.jsonl")
    assert sorted(Path(r["file"]).name for r in twice) == sorted(files)
    assert all(r["phi"] is not None and "error" not in r for r in twice)
    before = {Path(r["file"]).name: r["phi"] for r in once}
    assert {Path(r["file"]).name: r["phi"] for r in twice if Path(r["file"]).name in before} == before


def test_an_unexpected_error_is_a_logged_500_that_is_not_re_raised(tmp_path, checkpoint, caplog):
    """Starlette's own catch-all answers and then re-raises, which makes the server drop the keep-alive
    connection; the TestClient (raise_server_exceptions) would raise here if anything re-raised."""
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}"))

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    with TestClient(app) as c:
        r = c.get("/boom")
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "RuntimeError" in r.json()["error"]["message"] and "kaboom" not in r.text
        assert c.get("/healthz").status_code == 200
    logged = [rec for rec in caplog.records if rec.exc_info and "/boom" in rec.getMessage()]
    assert logged and logged[0].exc_info[0] is RuntimeError
