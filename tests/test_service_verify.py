"""DFT verification in the service (issue 15): against a live embedded `elfscreen serve` the verification
finishes, its φ equals `elfscreen topology` on the downloaded DFT grid, the ML result stays as it was,
verify_top picks the best job, cancel stops a running DFT; on Celery with PostgreSQL a DFT worker killed
with SIGKILL mid-run re-runs the verification, which finishes exactly once; without pw.x on PATH a
verification answers 503 and screening goes on. Real QE at a low cutoff (ELFSCREEN_VERIFY_ECUTWFC=30)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pymatgen.core import Lattice, Structure

from elfscreen.app.api import create_app
from elfscreen.app.config import Settings
from elfscreen.app.store import Store
from elfscreen.model.dft import qe_available
from live_server import live_server
from test_service_celery import RedisServer, Worker, api
from test_service_common import make_checkpoint, wait_for

SPACING = 0.35
CHEAP = {"ELFSCREEN_VERIFY_ECUTWFC": "30"}


def h8() -> Structure:
    """A metallic 8-atom H crystal (as tests/test_verify.py): a 2.6 Å cube, 2×2×2 simple cubic, one atom moved."""
    frac = np.array([[i, j, k] for i in (0, 0.5) for j in (0, 0.5) for k in (0, 0.5)], dtype=float)
    frac[0] += 0.04
    return Structure(Lattice.cubic(2.6), ["H"] * 8, frac)


def h4() -> Structure:
    """A 4-atom H crystal: two H2 molecules in a tetragonal cell (molecular: a low φ)."""
    return Structure(Lattice.tetragonal(3.0, 3.4), ["H"] * 4,
                     [[0, 0, 0], [0, 0, 0.22], [0.5, 0.5, 0.5], [0.5, 0.5, 0.72]])


def body(structs: dict, **extra) -> dict:
    return {"structures": [{"name": n, "format": "poscar", "content": s.to(fmt="poscar")} for n, s in structs.items()],
            "options": {"spacing_a": SPACING}, **extra}


def get(http, job_id: str) -> dict:
    return http.get(f"/v1/screenings/{job_id}").json()


def verification_state(http, job_id, states, timeout_s=240, every_s=0.2) -> dict:
    return wait_for(lambda: get(http, job_id), lambda j: (j["verification"] or {}).get("status") in states,
                    timeout_s, every_s)


def ml_part(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("dft", "delta_phi")}


def test_embedded_verification_topology_top_k_and_cancel(tmp_path):
    assert qe_available(), "QE (pw.x, pp.x, projwfc.x) must be installed for this test"
    env = {**CHEAP, "ELFSCREEN_WORKERS": "1", "ELFSCREEN_DFT_WORKERS": "1", "ELFSCREEN_SWEEP_EVERY_S": "1"}
    with live_server(tmp_path, **env) as url, httpx.Client(base_url=url, timeout=60) as http:
        # verify_top=1 by φ: the better of the two is verified once the batch is screened
        r = http.post("/v1/screenings", json=body({"H8": h8(), "H4": h4()}, verify_top=1, verify_by="phi"))
        assert r.status_code == 202, r.text
        ids = {j["name"]: j["id"] for j in r.json()["jobs"]}
        screened = {n: wait_for(lambda i=i: get(http, i), lambda j: j["status"] == "done", 120) for n, i in ids.items()}
        best = max(screened, key=lambda n: screened[n]["result"]["phi"])
        other = next(n for n in screened if n != best)
        top = verification_state(http, ids[best], ("done", "failed"))
        assert top["verification"]["status"] == "done", (top["verification"], (tmp_path / "server.log").read_text()[-3000:])
        assert get(http, ids[other])["verification"] is None  # only the top 1

        # the ML result is unchanged; dft and delta_phi are added
        assert ml_part(top["result"]) == screened[best]["result"]
        dft = top["result"]["dft"]
        assert top["result"]["delta_phi"] == pytest.approx(dft["phi"] - screened[best]["result"]["phi"], abs=1e-12)
        assert dft["settings"]["name"] == "pure-h@ecutwfc=30" and dft["code_version"]["qe"] and 0 < dft["h_dos"] <= 1
        assert top["verification"]["attempts"] == 1 and top["verification"]["grid_available"]

        # the DFT φ is the topology of the downloaded DFT grid
        cube = http.get(f"/v1/screenings/{ids[best]}/dft.cube")
        assert cube.status_code == 200 and cube.headers["content-type"] == "chemical/x-cube"
        path = tmp_path / "dft.cube"
        path.write_bytes(cube.content)
        topo = json.loads(subprocess.run([sys.executable, "-m", "elfscreen.app.cli", "topology", str(path),
                                          "--hdos", str(dft["h_dos"])], capture_output=True, text=True,
                                         check=True).stdout)
        assert topo["phi"] == pytest.approx(dft["phi"], abs=1e-6) and topo["phi_star"] == pytest.approx(dft["phi_star"], abs=1e-6)
        assert http.get(f"/v1/screenings/{ids[other]}/dft.cube").status_code == 404

        # asking again for a done verification changes nothing
        again = http.post(f"/v1/screenings/{ids[best]}/verify")
        assert again.status_code == 202 and again.json()["verification"]["status"] == "done"

        # the other job: verify on request, cancel it while its DFT runs, then ask again: it finishes
        r = http.post(f"/v1/screenings/{ids[other]}/verify")
        assert r.status_code == 202 and r.json()["verification"]["status"] in ("queued", "running")
        running = verification_state(http, ids[other], ("running", "done"), every_s=0.05)
        assert running["verification"]["status"] == "running"
        cancelled = http.delete(f"/v1/screenings/{ids[other]}/verify")
        assert cancelled.status_code == 200 and cancelled.json()["verification"]["status"] == "cancelled"
        assert http.delete(f"/v1/screenings/{ids[other]}/verify").status_code == 409
        r = http.post(f"/v1/screenings/{ids[other]}/verify")
        assert r.status_code == 202 and r.json()["verification"]["status"] in ("queued", "running")
        done = verification_state(http, ids[other], ("done", "failed"))
        assert done["verification"]["status"] == "done" and ml_part(done["result"]) == screened[other]["result"]
        assert http.post(f"/v1/screenings/{ids[other]}/verify").json()["verification"]["attempts"] == 1

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    events = store.event_counts(ids[other])
    assert events["verify_cancelled"] == 1 and events["verify_done"] == 1 and events["verify_claimed"] == 2, events
    assert store.event_counts(ids[best])["verify_done"] == 1
    verified = list(store.verified())
    assert [v.job["id"] for v in verified] == [ids[best], ids[other]]
    job, values, structure = verified[0]
    assert values.dtype == np.float32 and values.shape == tuple(dft["grid"]["shape"])
    assert job["result"]["dft"] == dft and job["content"] and job["format"] == "poscar"
    assert structure.lattice.abc == pytest.approx(h8().lattice.abc if best == "H8" else h4().lattice.abc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return Store(url)


def _screened_batch(store: Store, phis: list[float], **batch_options) -> list[str]:
    """A batch of done jobs (claimed and finished as a worker does) with these ML φ and Tc = 750φ − 85."""
    from elfscreen.app.store import new_id
    from elfscreen.model.structures import structure_to_dict

    batch_id, now = new_id(), 1.0
    rows = [{"id": new_id(), "batch_id": batch_id, "seq": k, "owner": "me", "name": f"s{k}", "format": "poscar",
             "content": h4().to(fmt="poscar"), "structure": structure_to_dict(h4()), "options": {},
             "cache_key": new_id(), "status": "queued", "cached": False, "created_at": now} for k in range(len(phis))]
    store.create_batch({"id": batch_id, "owner": "me", "created_at": now, "total": len(rows), **batch_options}, rows)
    for row, phi in zip(rows, phis):
        assert store.after_screening(batch_id) == []  # nothing before the batch is screened
        claim = store.claim(row["id"], "w", lease_s=60)
        assert store.finish(claim, result={"phi": phi, "tc": {"value_k": 750 * phi - 85}})
    return [r["id"] for r in rows]


def test_store_top_k_once_cancel_and_lost_workers(store):
    """verify_top queues the best k once; a cancelled verification cannot be claimed; one whose worker is
    lost 3 times fails with worker_lost; a finish without the claim writes nothing."""
    ids = _screened_batch(store, [0.3, 0.5, 0.4], verify_top=2, verify_by="phi", verify_state="pending")
    batch_id = store.job(ids[0], "me")["batch_id"]
    assert sorted(store.after_screening(batch_id)) == sorted([ids[1], ids[2]])  # φ 0.5 and 0.4, not 0.3
    assert store.after_screening(batch_id) == []  # taken once
    assert store.job(ids[0], "me")["verification"] is None
    assert {q["id"] for q in store.queued(dft=True)} == {ids[1], ids[2]}

    assert store.cancel_verification(ids[1], "me")["verification"]["status"] == "cancelled"
    assert store.claim_verification(ids[1], "w", lease_s=60) is None
    row, queued = store.request_verification(ids[1], "me")  # asked again after a cancel: queued afresh
    assert queued and row["verification"]["status"] == "queued" and row["verification"]["attempts"] == 0

    first = store.claim_verification(ids[2], "w1", lease_s=60)
    assert first.ml_phi == 0.4 and first.structure["species"] == ["H"] * 4
    assert store.claim_verification(ids[2], "w2", lease_s=60) is None  # alive elsewhere
    assert store.requeue_dead(0.0, dft=True) == [ids[2]]  # its heartbeat is stale at once with lease 0
    second = store.claim_verification(ids[2], "w2", lease_s=0.0)
    assert not store.finish_verification(first, result={"dft": {}, "delta_phi": None})  # the old claim is void
    store.claim_verification(ids[2], "w3", lease_s=0.0)
    assert second.token and store.claim_verification(ids[2], "w4", lease_s=0.0) is None
    v = store.job(ids[2], "me")["verification"]
    assert v["status"] == "failed" and v["error"]["error"]["code"] == "worker_lost" and v["attempts"] == 3
    events = store.event_counts(ids[2])
    assert events["verify_claimed"] == 3 and events["verify_failed"] == 1 and "verify_done" not in events
    assert list(store.verified()) == []


def test_no_pw_x_answers_503_and_screening_goes_on(tmp_path, monkeypatch):
    make_checkpoint(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}", sweep_every_s=0.5, embedded_workers=1)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/screenings", json=body({"H4": h4()}))
        assert r.status_code == 202, r.text
        job_id = r.json()["jobs"][0]["id"]
        monkeypatch.setenv("PATH", str(empty))
        for name in ("PW_X", "PP_X", "PROJWFC_X"):
            monkeypatch.delenv(name, raising=False)
        refused = client.post("/v1/screenings", json=body({"H8": h8()}, verify=True))
        assert refused.status_code == 503 and "pw.x" in refused.json()["error"]["message"], refused.text
        done = wait_for(lambda: client.get(f"/v1/screenings/{job_id}").json(), lambda j: j["status"] == "done", 120)
        assert done["status"] == "done" and done["verification"] is None
        r = client.post(f"/v1/screenings/{job_id}/verify")
        assert r.status_code == 503 and r.json()["error"]["code"] == "dft_unavailable"
        assert "pw.x" in r.json()["error"]["message"] and "projwfc.x" in r.json()["error"]["message"]
        assert client.get(f"/v1/screenings/{job_id}").json()["verification"] is None
        assert client.post("/v1/screenings", json=body({"H8": h8()})).status_code == 202  # screening unaffected


def test_submit_verify_top_cli_and_client(tmp_path):
    """`elfscreen submit --verify-top 1 --by phi` queues the best structure's verification on the server;
    the Python client follows it (wait_verified), verify() of a done one returns it as it is, and
    submit(verify_top=1) verifies the best of its own batch."""
    from elfscreen.client import Client, ClientError

    assert qe_available(), "QE (pw.x, pp.x, projwfc.x) must be installed for this test"
    for name, s in {"H8.vasp": h8(), "H4.vasp": h4()}.items():
        s.to(filename=str(tmp_path / name), fmt="poscar")
    env = {**CHEAP, "ELFSCREEN_WORKERS": "1", "ELFSCREEN_DFT_WORKERS": "1", "ELFSCREEN_SWEEP_EVERY_S": "1"}
    with live_server(tmp_path, **env) as url:
        run = subprocess.run([sys.executable, "-m", "elfscreen.app.cli", "submit", str(tmp_path / "H8.vasp"),
                              str(tmp_path / "H4.vasp"), "--server", url, "--spacing", str(SPACING),
                              "--verify-top", "1", "--by", "phi", "--out", str(tmp_path / "res.jsonl")],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        rows = [json.loads(line) for line in (tmp_path / "res.jsonl").read_text().splitlines()]
        best = max(rows, key=lambda r: r["phi"])
        assert f"verifying by DFT: {best['name']}" in run.stderr, run.stderr
        job_id = run.stderr.split("(job ")[1].split(",")[0]
        with Client(url) as client:
            job = client.wait_verified(job_id, timeout=240)
            assert job["name"] == best["name"] and job["verification"]["status"] == "done", job["verification"]
            assert job["result"]["phi"] == best["phi"] and job["result"]["delta_phi"] == pytest.approx(
                job["result"]["dft"]["phi"] - best["phi"], abs=1e-12)
            assert client.verify(job_id)["verification"] == job["verification"]  # done: left as it is
            batch = client.submit([tmp_path / "H8.vasp", tmp_path / "H4.vasp"], {"spacing_a": SPACING},
                                  verify_top=1, verify_by="tc")
            outcomes = batch.outcomes()
            assert [v["name"] for v in batch.verifications] == [
                sorted(outcomes, key=lambda o: -o.result["tc"]["value_k"])[0].name]
            assert client.wait_verified(batch.verifications[0]["id"], timeout=240)["verification"]["status"] == "done"
            with pytest.raises(ClientError):
                Client().verify(job_id)
        # the multipart form takes the same verification fields, checked alike
        r = httpx.post(f"{url}/v1/screenings", files=[("files", ("H8.vasp", h8().to(fmt="poscar")))],
                       data={"verify_by": "Tc"})
        assert r.status_code == 422 and "verify_by" in r.json()["error"]["input"], r.text
        bad = subprocess.run([sys.executable, "-m", "elfscreen.app.cli", "submit", str(tmp_path / "H8.vasp"),
                              "--verify-top", "2"], capture_output=True, text=True)
        assert bad.returncode == 2 and "--server" in bad.stderr


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


def test_celery_dft_worker_killed_mid_run_verification_finishes_once(pg_url, own_redis, tmp_path, monkeypatch):
    """A batch submitted with verify=true: the cpu worker screens it, the API's sweep sends the
    verification to the dft queue; its worker is killed (SIGKILL, with its pw.x) while the DFT runs; a
    second dft worker re-runs it after the lease; it finishes once (events: claimed 2, requeued 1, done 1)."""
    assert qe_available(), "QE (pw.x, pp.x, projwfc.x) must be installed for this test"
    make_checkpoint(tmp_path)
    for key, value in CHEAP.items():
        monkeypatch.setenv(key, value)
    cpu = Worker(own_redis.url, pg_url, "cpu", tmp_path / "w-cpu.log")
    dft = Worker(own_redis.url, pg_url, "dft", tmp_path / "w-dft.log")
    second = None
    try:
        with api(own_redis.url, pg_url, "cpu") as client:
            # the API's machine has no QE, the dft workers (started before) have it: accepted
            path, empty = os.environ["PATH"], tmp_path / "no-qe"
            empty.mkdir()
            monkeypatch.setenv("PATH", str(empty))
            r = client.post("/v1/screenings", json=body({"H8": h8()}, verify=True))
            monkeypatch.setenv("PATH", path)
            assert r.status_code == 202, r.text
            job_id = r.json()["jobs"][0]["id"]
            running = verification_state(client, job_id, ("running", "done", "failed"), every_s=0.05)
            assert running["verification"]["status"] == "running", (running, (tmp_path / "w-dft.log").read_text()[-3000:])
            ml = running["result"]
            dft.kill9()
            second = Worker(own_redis.url, pg_url, "dft", tmp_path / "w-dft-2.log")
            done = verification_state(client, job_id, ("done", "failed"))
            assert done["verification"]["status"] == "done", (done["verification"],
                                                              (tmp_path / "w-dft-2.log").read_text()[-3000:])
            assert done["verification"]["attempts"] == 2 and ml_part(done["result"]) == ml
            events = client.app.state.store.event_counts(job_id)
            assert events == {"created": 1, "claimed": 1, "done": 1, "verify_created": 1, "verify_claimed": 2,
                              "verify_requeued": 1, "verify_done": 1}, events
            assert client.get(f"/v1/screenings/{job_id}/dft.cube").status_code == 200
        # a dft-only worker never loads the ELF model; the cpu worker does
        assert "no ELF model loaded" in (tmp_path / "w-dft-2.log").read_text()
        assert "no ELF model loaded" not in (tmp_path / "w-cpu.log").read_text()
    finally:
        cpu.stop()
        dft.stop()
        if second:
            second.stop()
