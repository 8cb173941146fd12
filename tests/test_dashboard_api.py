"""The routes the dashboard reads and the permalinks, without a browser (embedded service, SQLite store,
an untrained model): batches, flat rows and CSV, result files, the crystal, the ELF slice and isosurface,
and the grid predicted again on demand against the kept one."""
from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_service_common import OPTIONS, as_files, make_checkpoint, structures, wait_for

from elfscreen.app.api import create_app
from elfscreen.app.config import Settings
from elfscreen.app.dashboard.grids import GridCache
from elfscreen.app.store import jobs
from elfscreen.model.volumetric import parse_grid

PUBLIC = "https://elf.example.org/screening"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    make_checkpoint(tmp_path_factory.mktemp("model"))
    settings = Settings(db_url=f"sqlite:///{tmp_path_factory.mktemp('store') / 'jobs.db'}", sweep_every_s=0.5,
                        max_grid_points=500_000)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def batch(client):
    """The three test crystals in one batch, finished."""
    files = as_files(structures())
    r = client.post("/v1/screenings", files=[("files", (n, t)) for n, t in files.items()],
                    data={"options": json.dumps(OPTIONS)})
    assert r.status_code == 202, r.text
    body = r.json()
    done = wait_for(lambda: client.get(f"/v1/batches/{body['batch_id']}").json(), lambda b: b["finished"], 180)
    assert done["counts"]["done"] == 3
    return done


def test_jobs_and_batches_carry_permalinks(client, batch):
    job = batch["jobs"][0]
    base = "http://testserver"
    assert job["links"] == {"self": f"{base}/v1/screenings/{job['id']}", "ui": f"{base}/ui/screenings/{job['id']}",
                            "batch": f"{base}/v1/batches/{batch['id']}", "batch_ui": f"{base}/ui/batches/{batch['id']}",
                            "cube": f"{base}/v1/screenings/{job['id']}/elf.cube?recompute=true"}
    assert batch["links"]["ui"] == f"{base}/ui/batches/{batch['id']}"
    assert client.get(f"/v1/screenings/{job['id']}").json()["links"] == job["links"]
    listed = client.get("/v1/screenings", params={"batch_id": batch["id"]}).json()["items"]
    assert [j["links"]["ui"] for j in listed] == [j["links"]["ui"] for j in batch["jobs"]]
    assert client.get(job["links"]["ui"].removeprefix(base)).status_code == 200
    assert client.get(batch["links"]["ui"].removeprefix(base)).status_code == 200


def test_public_url_setting_builds_the_links(tmp_path):
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}", public_url=PUBLIC + "/")
    with TestClient(create_app(settings)) as c:
        s = structures()["h4_tet"]
        r = c.post("/v1/screenings", json={"structures": [{"name": "tet", "format": "poscar", "content": s.to(fmt="poscar")}],
                                           "options": {**OPTIONS, "keep_grid": True}})
        job = r.json()["jobs"][0]
        assert job["links"]["ui"] == f"{PUBLIC}/ui/screenings/{job['id']}"
        assert job["links"]["cube"] == f"{PUBLIC}/v1/screenings/{job['id']}/elf.cube"  # kept: no recompute
        row = c.get("/v1/results").json()["items"][0]
        assert row["permalink"] == job["links"]["ui"]


def test_batch_list_and_result_rows(client, batch):
    page = client.get("/v1/batches").json()
    mine = next(b for b in page["items"] if b["id"] == batch["id"])
    assert mine["counts"] == batch["counts"] and mine["progress"] == 1.0 and mine["finished"]
    created = [b["created_at"] for b in page["items"]]
    assert created == sorted(created, reverse=True)

    rows = client.get("/v1/results", params={"batch_id": batch["id"]}).json()
    assert rows["total"] == 3
    for row, job in zip(rows["items"], batch["jobs"]):
        r = job["result"]
        assert (row["id"], row["name"], row["formula"], row["spacegroup"]) == (job["id"], job["name"], r["formula"], r["spacegroup"])
        assert (row["phi"], row["phi_star"], row["tc_k"]) == (r["phi"], r["phi_star"], r["tc"]["value_k"])
        assert row["phi_std"] == r["uncertainty"]["phi_std"] and row["warnings"] == r["warnings"]
        assert row["permalink"] == job["links"]["ui"]

    text = client.get("/v1/results.csv", params={"batch_id": batch["id"]})
    assert text.headers["content-type"].startswith("text/csv") and "attachment" in text.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(text.text)))
    assert [t["id"] for t in table] == [r["id"] for r in rows["items"]]
    assert float(table[0]["phi"]) == rows["items"][0]["phi"]  # unrounded
    one = client.get(f"/v1/screenings/{batch['jobs'][1]['id']}/result.csv")
    assert next(csv.DictReader(io.StringIO(one.text)))["id"] == batch["jobs"][1]["id"]


def test_result_json_is_the_result(client, batch):
    job = batch["jobs"][0]
    r = client.get(f"/v1/screenings/{job['id']}/result.json")
    assert r.status_code == 200 and r.json() == job["result"]
    assert 'filename="h6_hex.cif.json"' in r.headers["content-disposition"]


def test_scene_slice_and_isosurface(client, batch):
    job = batch["jobs"][1]  # CaH4, POSCAR
    r = job["result"]
    scene = client.get(f"/v1/screenings/{job['id']}/scene").json()
    assert np.allclose(np.array(scene["lattice"]), np.diag([3.1] * 3), atol=1e-3)
    assert sum(not a["image"] for a in scene["atoms"]) == r["n_atoms"]
    assert len(scene["critical_points"]) == r["critical_points"]["listed"]
    assert scene["bottleneck"]["elf"] == r["phi"]

    sl = client.get(f"/v1/screenings/{job['id']}/slice", params={"n": 33, "half_width_a": 1.5}).json()
    values = np.array(sl["values"])
    assert values.shape == (33, 33) and values.min() >= 0 and values.max() <= 1
    assert sl["level"] == r["phi"] and sl["plane"] in ("bond", "ab")
    assert abs(np.dot(sl["u"], sl["v"])) < 1e-3
    assert values[16, 16] == pytest.approx(r["phi"], abs=0.05)  # the bottleneck at the centre (trilinear)
    assert all(a["distance_a"] <= 0.5 and max(abs(a["x"]), abs(a["y"])) <= 1.5 for a in sl["atoms"])

    iso = client.get(f"/v1/screenings/{job['id']}/isosurface").json()
    assert iso["level"] == r["phi"] and iso["grid_shape"] == r["grid"]["shape"]
    vertices = np.array(iso["vertices"]).reshape(-1, 3)
    triangles = np.array(iso["triangles"]).reshape(-1, 3)
    assert len(triangles) > 0 and triangles.max() < len(vertices) and iso["area_a2"] > 0
    assert (vertices >= -1e-3).all() and (vertices <= 3.1 + 1e-3).all()
    coarse = client.get(f"/v1/screenings/{job['id']}/isosurface", params={"level": 0.3, "resolution": 8}).json()
    assert coarse["level"] == 0.3 and max(coarse["grid_shape"]) == 8


def test_grid_predicted_again_equals_the_kept_grid(client):
    """The same crystal screened twice, keeping the grid once: the grid predicted on demand for the other
    job is the kept one (to the cube file's digits); without ?recompute=true nothing changed (404)."""
    poscar = structures()["h6_hex"].to(fmt="poscar")
    ids = []
    for keep in (True, False):
        r = client.post("/v1/screenings", json={"structures": [{"name": "hex", "format": "poscar", "content": poscar}],
                                                "options": {**OPTIONS, "keep_grid": keep}})
        ids.append(r.json()["jobs"][0]["id"])
    for job_id in ids:
        wait_for(lambda job_id=job_id: client.get(f"/v1/screenings/{job_id}").json(), lambda j: j["status"] == "done")
    kept, fresh = ids
    assert client.get(f"/v1/screenings/{fresh}/elf.cube").status_code == 404
    a = parse_grid(client.get(f"/v1/screenings/{kept}/elf.cube").text, "cube")
    r = client.get(f"/v1/screenings/{fresh}/elf.cube", params={"recompute": True})
    assert r.status_code == 200 and r.headers["content-type"] == "chemical/x-cube"
    b = parse_grid(r.text, "cube")
    assert a.shape == b.shape and np.allclose(a.values, b.values, atol=1e-5)


def test_views_refuse_what_they_cannot_show(client):
    poscar = structures()["h4_tet"].to(fmt="poscar")
    r = client.post("/v1/screenings", json={"structures": [{"name": "tet", "format": "poscar", "content": poscar}],
                                            "options": {**OPTIONS, "min_persistence": 0.02}})
    job = r.json()["jobs"][0]
    wait_for(lambda: client.get(f"/v1/screenings/{job['id']}").json(), lambda j: j["status"] == "done")
    store = client.app.state.store
    for path in ("scene", "slice", "isosurface", "result.json", "result.csv"):
        r = client.get(f"/v1/screenings/nope/{path}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    # a job screened by another model: its grid cannot be predicted again, the rest still works
    with store.engine.begin() as c:
        result = c.execute(sa.select(jobs.c.result).where(jobs.c.id == job["id"])).scalar_one()
        result["provenance"]["model_version"] = "older-model"
        c.execute(jobs.update().where(jobs.c.id == job["id"]).values(result=result))
    client.app.state.grids = GridCache()
    r = client.get(f"/v1/screenings/{job['id']}/slice")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_changed" and "older-model" in r.text
    assert client.get(f"/v1/screenings/{job['id']}/scene").status_code == 200

    # a failed job: no views, but its row says why
    now = time.time()
    with store.engine.begin() as c:
        c.execute(jobs.update().where(jobs.c.id == job["id"]).values(
            status="failed", result=None, error={"error": {"code": "x", "message": "it broke", "input": "x"}}, finished_at=now))
    r = client.get(f"/v1/screenings/{job['id']}/isosurface")
    assert r.status_code == 409 and r.json()["error"]["code"] == "failed" and "it broke" in r.text
    row = next(csv.DictReader(io.StringIO(client.get(f"/v1/screenings/{job['id']}/result.csv").text)))
    assert row["status"] == "failed" and row["error"] == "it broke" and row["phi"] == ""


def test_pages_are_open_and_data_needs_the_key(tmp_path):
    """With API keys the pages and their scripts load without one (they hold no data); the data does not."""
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}", api_keys=frozenset({"secret"}))
    with TestClient(create_app(settings)) as c:
        page = c.get("/ui")
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/ui/static/overview.js").status_code == 200
        assert c.get("/ui/screenings/anything").status_code == 200
        assert c.get("/v1/batches").status_code == 401
        assert c.get("/v1/batches", headers={"X-API-Key": "secret"}).json()["total"] == 0


HOSTILE_NAMES = ["=HYPERLINK(\"http://x\",\"y\")", "../../etc/passwd", 'a.cif"; filename="evil.sh', "水素化物 H₃S",
                 "+1-2", "@SUM(A1)", "-3+cmd|' /C calc'!A0", "\tTAB"]


def test_download_names_and_csv_cells_are_safe_for_hostile_names(client):
    """Structure names come from uploads: every download route gives a Content-Disposition that names
    one plain file (ASCII ``filename=`` and RFC 5987 ``filename*=``, no path, no second parameter, no 500
    for non-latin-1), and no CSV cell starts a spreadsheet formula."""
    import re
    from urllib.parse import unquote

    s = structures()["h4_tet"].to(fmt="poscar")
    r = client.post("/v1/screenings", json={"structures": [{"name": n, "format": "poscar", "content": s} for n in HOSTILE_NAMES],
                                            "options": {**OPTIONS, "keep_grid": True}})
    assert r.status_code == 202, r.text
    body = r.json()
    wait_for(lambda: client.get(f"/v1/batches/{body['batch_id']}").json(), lambda b: b["finished"], 180)
    # the whole header: one quoted ASCII name without quotes or separators, one percent-encoded UTF-8 name
    form = re.compile(r"attachment; filename=\"([A-Za-z0-9._-]+)\"; filename\*=UTF-8''([A-Za-z0-9%._~-]+)")
    full_names = {}
    for job in body["jobs"]:
        for route, ext in (("result.json", ".json"), ("result.csv", ".csv"), ("elf.cube", ".elf.cube")):
            got = client.get(f"/v1/screenings/{job['id']}/{route}")
            assert got.status_code == 200, (job["name"], route, got.text)
            match = form.fullmatch(got.headers["content-disposition"])
            assert match, got.headers["content-disposition"]
            ascii_name, full = match[1], unquote(match[2])
            for name in (ascii_name, full):
                assert name.endswith(ext) and not name.startswith(".") and not {"/", "\\", '"', ";"} & set(name), name
            full_names[job["name"], ext] = full
    assert full_names["../../etc/passwd", ".json"] == "passwd.json"
    assert full_names["水素化物 H₃S", ".elf.cube"] == "水素化物 H₃S.elf.cube"  # the Unicode name survives in filename*
    text = client.get("/v1/results.csv", params={"batch_id": body["batch_id"]}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    assert sorted(row["name"] for row in rows) == sorted("'" + n if n[0] in "=+-@\t" else n for n in HOSTILE_NAMES)


@pytest.mark.parametrize("name, ascii_name, full", [
    ("../../etc/passwd.cube", "passwd.cube", "passwd.cube"),
    ('a.cif"; filename="evil.sh.json', "a.cif_filename_evil.sh.json", "a.cif filename=evil.sh.json"),
    ("水素.json", "download.json", "水素.json"),  # no ASCII stem: the fallback keeps the extension
    ("H₃S\r\n.csv", "H3S.csv", "H₃S.csv"),
    ("..", "download", "download"),
])
def test_content_disposition_names(name, ascii_name, full):
    from urllib.parse import quote

    from elfscreen.app.downloads import content_disposition

    assert content_disposition(name) == f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(full, safe='')}"
