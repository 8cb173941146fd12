"""Throughput and per-job overhead of the screening service: embedded, and Celery with 1 and 2 workers,
idle and while 20 clients keep submitting.

    python bench/service.py [--jobs 40] [--spacing 0.4] [--atoms 4] [--model untrained|shipped|CKPT]
                            [--modes embedded,celery1,celery2]
                            [--load-clients 20] [--broker redis://127.0.0.1:6379/0]
                            [--db postgresql://postgres@127.0.0.1:5432/postgres]

Each mode starts the real processes (``elfscreen serve`` with one job process per usable core,
``celery … worker``), warms them up with a small batch, then times one batch of distinct structures
from the POST to the last finished job: once with nothing else going on (``idle``), once while
``--load-clients`` threads submit without pause (``loaded``): each re-submits an already screened
structure (validated in full, answered from the cache: it costs the API, not the job pool) and reads
its batch back; the clients run in a child process at nice 10, so that on this small machine their
own CPU is not charged to the server.

* jobs/hour: jobs / wall time.
* overhead per job (ms): wall time × worker processes / jobs − mean time inside ``screen_structure``:
  what a worker slot spends on anything but the science (HTTP, validation, store writes, queueing,
  rebuilding the structure). With 2 workers on a small machine the pipeline itself slows down
  (shared cores), which this does not count as overhead.
* in-worker overhead (ms): mean (finished − started) − pipeline time, from the store.
* gap (ms): mean idle time of a worker slot between two of its jobs (store writes after the finish
  time, handing over the next job, a Celery message round trip).
* submit (ms): the POST's answer time per job (sandboxed validation, cache key, store, publishing).
* pool jobs/h: the job pool's throughput, jobs ÷ (last finish − first start), from the store, idle
  and ``loaded``; ``kept`` = loaded ÷ idle (target ≥ 50 %). ``loaded wall s``: POST to last finish of
  the loaded batch (its 200 structures wait for validation behind the clients' requests);
  ``load req/s``: the clients' requests answered meanwhile; loaded pipeline / in-worker ms: as above,
  for the loaded batch.
* load: the 1-minute load average when the mode finished (the machine is shared: compare runs made
  side by side only).
Target: overhead ≤ 20 ms per job. Small grids (coarse ``--spacing``) make the overhead visible.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa
from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elfscreen.app.config import usable_cores  # noqa: E402
from elfscreen.app.store import Store, jobs  # noqa: E402
from elfscreen.model.network import ElfModel  # noqa: E402
from elfscreen.model.pipeline import DEFAULT_MODEL, WEIGHTS_DIR  # noqa: E402


def crystals(n: int, seed: int, atoms: int = 4) -> list[tuple[str, str]]:
    """``n`` distinct random H cells of ``atoms`` atoms (4.4 Å³ per H, no pair closer than 0.7 Å) as (name,
    POSCAR text); distinct so the cache never answers."""
    rng = np.random.default_rng(seed)
    scale = (atoms / 4) ** (1 / 3)
    out = []
    while len(out) < n:
        s = Structure(Lattice.tetragonal(2.5 * scale + 0.01 * len(out), 2.8 * scale), ["H"] * atoms, rng.random((atoms, 3)))
        if s.get_neighbor_list(r=0.7)[3].size == 0:
            out.append((f"b{seed}_{len(out):04d}", s.to(fmt="poscar")))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_batch(base: str, items: list[tuple[str, str]], spacing: float) -> tuple[str, float, float]:
    """POST one batch and wait for it; (batch id, seconds to answer the POST, seconds until finished)."""
    body = {"structures": [{"name": n, "format": "poscar", "content": c} for n, c in items],
            "options": {"spacing_a": spacing}}
    t0 = time.perf_counter()
    r = httpx.post(f"{base}/v1/screenings", json=body, timeout=300)
    r.raise_for_status()
    posted = time.perf_counter() - t0
    batch_id = r.json()["batch_id"]
    while True:
        b = httpx.get(f"{base}/v1/batches/{batch_id}", params={"limit": 1}, timeout=60).json()
        if b["finished"]:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if b["counts"]["done"] != len(items):
        raise SystemExit(f"batch ended with {b['counts']}")
    return batch_id, posted, wall


class Load:
    """``clients`` threads that submit ``item`` (already screened: a cache hit) and read the batch back,
    without pause, until stopped; :attr:`answered` counts their answered requests. They run in a child
    process at low priority: on a real deployment the clients are other machines, and on this small one
    their own CPU must not be charged to the server."""

    def __init__(self, base: str, item: tuple[str, str], spacing: float, clients: int):
        body = {"structures": [{"name": item[0], "format": "poscar", "content": item[1]}],
                "options": {"spacing_a": spacing}}
        ctx = multiprocessing.get_context("fork")
        self._count, self._stop = ctx.Value("q", 0), ctx.Event()
        self._proc = ctx.Process(target=_clients, args=(base, body, clients, self._count, self._stop), daemon=True)

    @property
    def answered(self) -> int:
        return self._count.value

    def __enter__(self) -> "Load":
        self._proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._proc.join(60)


def _clients(base: str, body: dict, clients: int, count, stop) -> None:
    os.nice(10)

    def loop() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            while not stop.is_set():
                r = client.post("/v1/screenings", json=body)
                client.get(f"/v1/batches/{r.json()['batch_id']}", params={"limit": 1})
                with count.get_lock():
                    count.value += 2

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def job_times(db_url: str, batch_id: str) -> tuple[float, float, list[float], float]:
    """Of a batch's jobs, from the store: mean pipeline time, mean in-worker overhead, the gaps (idle
    time of a worker slot between two of its jobs: message round trip, polling, …), in s; and the job
    pool's throughput in jobs/hour (jobs ÷ first start to last finish)."""
    store = Store(db_url)
    with store.engine.connect() as c:
        rows = c.execute(sa.select(jobs.c.pipeline_s, jobs.c.started_at, jobs.c.finished_at, jobs.c.worker)
                         .where(jobs.c.batch_id == batch_id)).all()
    store.engine.dispose()
    gaps = []
    for slot in {r.worker for r in rows}:
        mine = sorted((r.started_at, r.finished_at) for r in rows if r.worker == slot)
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(mine)]
    span = max(r.finished_at for r in rows) - min(r.started_at for r in rows)
    return (float(np.mean([r.pipeline_s for r in rows])),
            float(np.mean([r.finished_at - r.started_at - r.pipeline_s for r in rows])), gaps, len(rows) / span * 3600)


def measure(mode: str, args, env: dict, folder: Path) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db_url = args.db if mode != "embedded" and args.db else f"sqlite:///{folder / (mode + '.db')}"
    env = {**env, "ELFSCREEN_DB_URL": db_url}
    procs, workers = [], usable_cores()
    env["ELFSCREEN_WORKERS"] = str(workers)
    if mode.startswith("celery"):
        workers = int(mode[-1])
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        env.update(ELFSCREEN_BROKER_URL=args.broker, ELFSCREEN_QUEUE=queue)
        procs.append(start([sys.executable, "-m", "celery", "-A", "elfscreen.worker.celery_app", "worker", "-Q", queue,
                            "-c", str(workers), "--without-gossip", "--without-mingle", "--without-heartbeat",
                            "-l", "WARNING"], env, folder / f"{mode}-worker.log"))
    procs.append(start([sys.executable, "-m", "elfscreen.app.cli", "serve", "--port", str(port)], env, folder / f"{mode}-api.log"))
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        warm = crystals(2 * workers, seed=uuid.uuid4().int % 10**6, atoms=args.atoms)
        run_batch(base, warm, args.spacing)  # warm-up: imports, numba, model
        batch_id, posted, wall = run_batch(base, crystals(args.jobs, seed=uuid.uuid4().int % 10**6, atoms=args.atoms), args.spacing)
        loaded_wall = load_rate = loaded_pipeline = loaded_in_worker = loaded_rate = float("nan")
        if args.load_clients:
            with Load(base, warm[0], args.spacing, args.load_clients) as load:
                time.sleep(2)  # every client is going
                before, t0 = load.answered, time.perf_counter()
                loaded_id, _, loaded_wall = run_batch(base, crystals(args.jobs, seed=uuid.uuid4().int % 10**6, atoms=args.atoms), args.spacing)
                load_rate = (load.answered - before) / (time.perf_counter() - t0)
            loaded_pipeline, loaded_in_worker, _, loaded_rate = job_times(db_url, loaded_id)
        pipeline, in_worker, gaps, rate = job_times(db_url, batch_id)
        return {"mode": mode, "workers": workers, "jobs": args.jobs, "wall_s": wall,
                "jobs_per_hour": args.jobs / wall * 3600, "pipeline_ms": pipeline * 1e3,
                "overhead_ms": (wall * workers / args.jobs - pipeline) * 1e3, "in_worker_ms": in_worker * 1e3,
                "gap_ms": float(np.mean(gaps)) * 1e3 if gaps else float("nan"),
                "submit_ms": posted / args.jobs * 1e3, "pool_jobs_per_hour": rate, "loaded_jobs_per_hour": loaded_rate,
                "loaded_wall_s": loaded_wall,
                "load_rate": load_rate, "loaded_pipeline_ms": loaded_pipeline * 1e3,
                "loaded_in_worker_ms": loaded_in_worker * 1e3}
    finally:
        for p in procs:
            stop(p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--spacing", type=float, default=0.4, help="grid spacing in Å (coarse: overhead dominates)")
    p.add_argument("--modes", default="embedded,celery1,celery2")
    p.add_argument("--load-clients", type=int, default=20, help="clients submitting during the loaded run (0: none)")
    p.add_argument("--atoms", type=int, default=4, help="H atoms per random cell")
    p.add_argument("--model", default="untrained",
                   help="'untrained' (a 2-member untrained network: the overhead), 'shipped' or a checkpoint path")
    p.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    p.add_argument("--db", default=None, help="store URL for the Celery modes (default: SQLite in a temp folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model == "untrained":
            ckpt = folder / "bench.pt"
            ElfModel.untrained(n_members=2).save(ckpt)
        else:
            ckpt = WEIGHTS_DIR / DEFAULT_MODEL if args.model == "shipped" else Path(args.model)
        env = {**os.environ, "ELFSCREEN_MODEL": str(ckpt), "ELFSCREEN_SWEEP_EVERY_S": "5"}
        print(f"{'mode':<10}{'jobs':>6}{'wall s':>9}{'jobs/h':>10}{'pipeline ms':>13}{'overhead ms':>13}"
              f"{'in-worker ms':>14}{'gap ms':>9}{'submit ms':>11}{'pool jobs/h':>13}{'loaded':>9}{'kept':>7}"
              f"{'loaded wall s':>15}{'load req/s':>12}{'loaded pipeline/in-worker ms':>30}  load",
              flush=True)
        for mode in args.modes.split(","):
            r = measure(mode, args, env, folder)
            print(f"{r['mode']:<10}{r['jobs']:>6}{r['wall_s']:>9.1f}{r['jobs_per_hour']:>10.0f}{r['pipeline_ms']:>13.1f}"
                  f"{r['overhead_ms']:>13.1f}{r['in_worker_ms']:>14.1f}{r['gap_ms']:>9.1f}{r['submit_ms']:>11.2f}"
                  f"{r['pool_jobs_per_hour']:>13.0f}{r['loaded_jobs_per_hour']:>9.0f}"
                  f"{r['loaded_jobs_per_hour'] / r['pool_jobs_per_hour']:>7.0%}{r['loaded_wall_s']:>15.1f}{r['load_rate']:>12.1f}{r['loaded_pipeline_ms']:>21.1f} / {r['loaded_in_worker_ms']:<6.1f}"
                  f"  {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
