"""The service with Celery workers (real subprocesses), Redis and PostgreSQL: results, and faults —
a worker killed with SIGKILL mid-batch and a Redis restart mid-batch — after which every job still
finishes exactly once in the store."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from elfscreen.app.api import create_app
from elfscreen.app.config import Settings
from elfscreen.app.store import jobs
from elfscreen.model.pipeline import load_model, screen_structure
from elfscreen.model.structures import parse_structure
from test_service_common import (OPTIONS, SPACING, as_files, comparable, make_checkpoint, many_structures, same,
                                 structures, wait_for)

ROOT = Path(__file__).resolve().parents[1]
LEASE_S = 3.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model"))


class RedisServer:
    """A redis-server of this test on a free port, which it may kill and restart (no persistence)."""

    def __init__(self, folder: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder, self.proc = folder, None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), bool, 10, 0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


class Worker:
    """``celery -A elfscreen.worker.celery_app worker`` as a subprocess in its own process group."""

    def __init__(self, broker: str, db_url: str, queue: str, log: Path, concurrency: int = 1, env: dict | None = None):
        env = {**os.environ, "ELFSCREEN_BROKER_URL": broker, "ELFSCREEN_DB_URL": db_url, "ELFSCREEN_LEASE_S": str(LEASE_S),
               **(env or {})}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "elfscreen.worker.celery_app", "worker", "-Q", queue, "-c", str(concurrency),
             "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"{log.stem}@%h", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


def api(broker: str, db_url: str, queue: str) -> TestClient:
    settings = Settings(db_url=db_url, broker_url=broker, queue=queue, lease_s=LEASE_S, sweep_every_s=0.5)
    return TestClient(create_app(settings))


def finished(client, batch_id, timeout_s=150):
    return wait_for(lambda: client.get(f"/v1/batches/{batch_id}").json(), lambda b: b["finished"], timeout_s, 0.3)


# The fault tests catch a batch mid-way (a job running, messages still in Redis): on a fine grid each job
# takes a few tenths of a second, so those states last long enough to be seen (at OPTIONS' coarse spacing a
# job takes ~20 ms and a batch of 6 can finish between two polls).
FAULT_OPTIONS = {**OPTIONS, "spacing_a": 0.08}


def submit(client, structs, options: dict = OPTIONS) -> dict:
    body = {"structures": [{"name": n, "format": "poscar", "content": s.to(fmt="poscar")} for n, s in structs.items()],
            "options": options}
    r = client.post("/v1/screenings", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def assert_exactly_once(client, batch):
    store = client.app.state.store
    assert batch["counts"]["done"] == batch["total"], batch["counts"]
    for job in batch["jobs"]:
        events = store.event_counts(job["id"])
        assert events.get("done") == 1 and "failed" not in events, (job["name"], events)


def test_celery_worker_redis_postgres_end_to_end(checkpoint, pg_url, tmp_path):
    queue = f"test-{uuid.uuid4().hex[:8]}"
    broker = "redis://127.0.0.1:6379/0"
    worker = Worker(broker, pg_url, queue, tmp_path / "w-e2e.log", concurrency=2)
    try:
        with api(broker, pg_url, queue) as client:
            files = as_files(structures())
            r = client.post("/v1/screenings", files=[("files", (n, t)) for n, t in files.items()],
                            data={"options": json.dumps(OPTIONS)})
            assert r.status_code == 202, r.text
            batch = finished(client, r.json()["batch_id"])
            assert batch["counts"]["done"] == 3, (batch["counts"], (tmp_path / "w-e2e.log").read_text()[-3000:])
            model = load_model()
            for job in batch["jobs"]:
                fmt = "cif" if job["name"].endswith(".cif") else "poscar"
                direct = screen_structure(parse_structure(files[job["name"]], fmt, job["name"]), job["name"], model,
                                          spacing_a=SPACING)
                assert comparable(job["result"]) == comparable(direct.model_dump(mode="json"))
            ready = client.get("/readyz").json()
            assert ready["checks"]["dispatcher"]["mode"] == "celery"
            again = client.post("/v1/screenings", files=[("files", (n, t)) for n, t in files.items()],
                                data={"options": json.dumps(OPTIONS)}).json()
            assert all(j["cached"] and j["status"] == "done" for j in again["jobs"])
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("the fault tests start their own redis-server, which is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


def test_worker_killed_mid_batch_every_job_finishes_once(checkpoint, pg_url, own_redis, tmp_path):
    queue = "cpu"
    first = Worker(own_redis.url, pg_url, queue, tmp_path / "w-killed.log")
    second = None
    try:
        with api(own_redis.url, pg_url, queue) as client:
            batch = submit(client, many_structures(6, seed=21), FAULT_OPTIONS)
            # kill the worker while it runs a job, after it finished at least one
            mid = wait_for(lambda: client.get(f"/v1/batches/{batch['batch_id']}").json(),
                           lambda b: b["counts"]["done"] >= 1 and b["counts"]["running"] == 1, 150, 0.1)
            assert mid["counts"]["running"] == 1, (mid["counts"], (tmp_path / "w-killed.log").read_text()[-3000:])
            first.kill9()
            second = Worker(own_redis.url, pg_url, queue, tmp_path / "w-second.log")
            done = finished(client, batch["batch_id"])
            assert_exactly_once(client, done)
            assert max(j["attempts"] for j in done["jobs"]) == 2  # the killed job ran again, once
    finally:
        first.stop()
        if second:
            second.stop()


def test_redis_restart_mid_batch_every_job_finishes_once(checkpoint, pg_url, own_redis, tmp_path):
    queue = "cpu"
    worker = Worker(own_redis.url, pg_url, queue, tmp_path / "w-restart.log")
    try:
        with api(own_redis.url, pg_url, queue) as client:
            batch = submit(client, many_structures(6, seed=31), FAULT_OPTIONS)
            mid = wait_for(lambda: client.get(f"/v1/batches/{batch['batch_id']}").json(),
                           lambda b: b["counts"]["done"] >= 1, 150, 0.1)
            assert mid["counts"]["queued"] >= 2, mid["counts"]  # messages that only Redis held
            own_redis.kill()  # the queue in Redis is gone with it
            time.sleep(1.0)
            own_redis.start()
            done = finished(client, batch["batch_id"])
            assert_exactly_once(client, done)
    finally:
        worker.stop()


def test_worker_killed_holding_several_jobs_every_job_finishes_once(checkpoint, pg_url, own_redis, tmp_path):
    """Several jobs travel in one message; the jobs it still holds when its worker dies are re-sent by the
    sweep after the lease (they were reserved), not left to the broker's redelivery hours later."""
    queue = "cpu"
    first = Worker(own_redis.url, pg_url, queue, tmp_path / "w-held.log")
    second = None
    try:
        with api(own_redis.url, pg_url, queue) as client:
            batch = submit(client, many_structures(12, seed=41))  # messages of 3, 3, 2, 1, 1, 1, 1 jobs
            held = [j["id"] for j in batch["jobs"][:3]]

            def states(b):
                return [j["status"] for j in b["jobs"] if j["id"] in held]

            mid = wait_for(lambda: client.get(f"/v1/batches/{batch['batch_id']}").json(),
                           lambda b: "running" in states(b) and "queued" in states(b), 150, 0.05)
            assert "queued" in states(mid), (states(mid), (tmp_path / "w-held.log").read_text()[-3000:])
            first.kill9()
            second = Worker(own_redis.url, pg_url, queue, tmp_path / "w-held-2.log")
            done = finished(client, batch["batch_id"])
            assert_exactly_once(client, done)
            store = client.app.state.store
            waiting = [j for j in mid["jobs"] if j["id"] in held and j["status"] == "queued"]
            for j in waiting:
                assert store.event_counts(j["id"]).get("requeued") == 1
                assert next(d for d in done["jobs"] if d["id"] == j["id"])["attempts"] == 1  # never ran before
    finally:
        first.stop()
        if second:
            second.stop()


def _claims_waiting(engine) -> int:
    """How many sessions of this database wait on a lock to write a job event (a claim writes one)."""
    with engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO job_events%'")).scalar_one()


def test_worker_killed_before_claiming_its_single_job_the_sweep_resends_it_after_the_lease(
        checkpoint, pg_url, own_redis, tmp_path):
    """A message of one job is reserved as soon as it arrives, as a message of several is: its worker killed
    (kill -9) after taking the message but before claiming the job, the sweep re-sends the job after the
    lease, not after ``requeue_after_s`` (an hour). The worker is stopped inside its claim by a lock on the
    event log (a claim writes an event, a reservation does not); the claim's transaction dies uncommitted
    with the worker's connection, which leaves the store as a kill just before the claim would."""
    queue = "cpu"
    first = second = None
    try:
        with api(own_redis.url, pg_url, queue) as client:
            batch = submit(client, many_structures(1, seed=61))  # one message of one job, waiting in Redis
            job_id = batch["jobs"][0]["id"]
            store = client.app.state.store
            with store.engine.connect() as lock:
                lock.execute(sa.text("LOCK TABLE job_events IN EXCLUSIVE MODE"))
                first = Worker(own_redis.url, pg_url, queue, tmp_path / "w-single.log")
                assert wait_for(lambda: _claims_waiting(store.engine), bool, 90, 0.1), \
                    (tmp_path / "w-single.log").read_text()[-3000:]
                first.kill9()
                lock.rollback()
            second = Worker(own_redis.url, pg_url, queue, tmp_path / "w-single-2.log")
            events = wait_for(lambda: store.event_counts(job_id), lambda e: "requeued" in e, LEASE_S + 20, 0.2)
            assert events.get("requeued") == 1, (events, "not re-sent within the lease (+20 s) of the kill")
            done = finished(client, batch["batch_id"])
            assert_exactly_once(client, done)
            assert done["jobs"][0]["attempts"] == 1  # the killed worker's claim never committed
    finally:
        for worker in (first, second):
            if worker:
                worker.stop()


def _job_row(store, job_id: str):
    with store.engine.connect() as c:
        return c.execute(sa.select(jobs.c.status, jobs.c.claim, jobs.c.worker, jobs.c.attempts)
                         .where(jobs.c.id == job_id)).one()


def test_worker_killed_while_its_pool_process_starts_the_sweep_resends_the_job_after_the_lease(
        checkpoint, pg_url, own_redis, tmp_path):
    """A message that the worker's main process took from Redis while no pool process was ready to run it
    (a pool process starting: here held 120 s by ELFSCREEN_TEST_PROCESS_INIT_DELAY_S before it loads the
    model) is reserved by the main process on receipt: the whole worker killed (kill -9 of its group) in that
    state, the sweep re-sends the job after the lease, not after ``requeue_after_s`` (an hour; the message
    itself stays unacknowledged in Redis for hours)."""
    queue = f"slow-{uuid.uuid4().hex[:8]}"  # this test's message alone
    first = second = None
    try:
        with api(own_redis.url, pg_url, queue) as client:
            batch = submit(client, many_structures(1, seed=71))
            job_id = batch["jobs"][0]["id"]
            store = client.app.state.store
            broker = redis.Redis(port=own_redis.port)
            assert wait_for(lambda: broker.llen(queue), lambda n: n == 1, 10, 0.05) == 1
            log = tmp_path / "w-slow.log"
            first = Worker(own_redis.url, pg_url, queue, log, env={"ELFSCREEN_TEST_PROCESS_INIT_DELAY_S": "120"})
            assert wait_for(lambda: broker.llen(queue), lambda n: n == 0, 90, 0.05) == 0, log.read_text()[-3000:]
            # the main process holds the message; it reserves the job within milliseconds (the old code never did)
            held = wait_for(lambda: _job_row(store, job_id), lambda r: r.claim is not None, 5, 0.05)
            first.kill9()
            after = _job_row(store, job_id)
            assert after.status == "queued" and after.attempts == 0, (after, log.read_text()[-3000:])  # never claimed
            second = Worker(own_redis.url, pg_url, queue, tmp_path / "w-slow-2.log")
            events = wait_for(lambda: store.event_counts(job_id), lambda e: "requeued" in e, LEASE_S + 20, 0.2)
            assert events.get("requeued") == 1, (events, held, "not re-sent within the lease (+20 s) of the kill")
            assert held.worker.endswith(f":{first.proc.pid}"), held  # reserved by the main process
            done = finished(client, batch["batch_id"])
            assert_exactly_once(client, done)
            assert done["jobs"][0]["attempts"] == 1
    finally:
        for worker in (first, second):
            if worker:
                worker.stop()


def test_a_replacement_pool_process_slower_to_start_than_4_s_is_not_killed(checkpoint, pg_url, own_redis, tmp_path):
    """A pool process killed alone is replaced; the replacement loads the model before it reports ready
    (here held 6 s by ELFSCREEN_TEST_PROCESS_INIT_DELAY_S). Celery's default worker_proc_alive_timeout (4 s)
    killed such a replacement again and again, and no job ran; ELFSCREEN_PROCESS_START_S (300 s) lets it start."""
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "w-restart.log"
    worker = Worker(own_redis.url, pg_url, queue, log, env={"ELFSCREEN_TEST_PROCESS_INIT_DELAY_S": "6"})
    try:
        def children() -> list[int]:
            out = subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True).stdout
            return [int(x) for x in out.split()]

        first = wait_for(children, lambda c: len(c) == 1, 30, 0.1)
        assert len(first) == 1, log.read_text()[-3000:]
        time.sleep(8)  # the first pool process is up (6 s delay, then the model)
        os.kill(first[0], signal.SIGKILL)
        with api(own_redis.url, pg_url, queue) as client:
            batch = submit(client, many_structures(1, seed=72))
            done = finished(client, batch["batch_id"], timeout_s=60)
            assert done["finished"], (done["counts"], log.read_text()[-3000:])
            assert_exactly_once(client, done)
        assert "Timed out waiting for UP message" not in log.read_text()
    finally:
        worker.stop()


def test_gpu_queue_screens_a_message_as_one_batch(checkpoint, pg_url, own_redis, tmp_path):
    """A worker on the gpu queue takes the jobs of a message together (batched prediction; the CPU here)
    with results equal to the one-structure pipeline."""
    worker = Worker(own_redis.url, pg_url, "gpu", tmp_path / "w-gpu.log")
    try:
        with api(own_redis.url, pg_url, "gpu") as client:
            structs = many_structures(5, seed=51)
            batch = finished(client, submit(client, structs)["batch_id"])
            assert_exactly_once(client, batch)
            assert len({j["started_at"] for j in batch["jobs"]}) == 1, (tmp_path / "w-gpu.log").read_text()[-3000:]
            model = load_model()
            for job in batch["jobs"]:
                s = parse_structure(structs[job["name"]].to(fmt="poscar"), "poscar", job["name"])
                expected = screen_structure(s, job["name"], model, spacing_a=SPACING).model_dump(mode="json")
                assert same(comparable(job["result"]), comparable(expected))
    finally:
        worker.stop()
