"""Batching: several structures per network call (``predict_grids``), several jobs per Celery message
(``run_jobs`` one after another, ``run_batch`` as one GPU batch), on the CPU, against a SQLite store.

Each job of a batch must still be claimed before it runs, finish exactly once, and fail alone."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from elfscreen.app import jobs, screening
from elfscreen.app.config import Settings
from elfscreen.app.dispatch import messages
from elfscreen.app.heartbeat import heartbeats
from elfscreen.app.sandbox import Sandbox
from elfscreen.app.submission import prepare
from elfscreen.app.store import Store
from elfscreen.model.network import ElfModel
from elfscreen.model.pipeline import load_model, screen_structure
from elfscreen.model.predict import predict_grid, predict_grids
from elfscreen.model.structures import parse_structure
from test_service_common import SPACING, comparable, make_checkpoint, many_structures, same, structures

FULL_OPTIONS = {"spacing_a": SPACING, "tc_model": "belli2021", "h_dos": None, "refine": True, "min_persistence": 0.005,
                "keep_grid": False}


@pytest.fixture(scope="module")
def ensemble():
    model = ElfModel.untrained(n_members=3, seed=4)
    model.feature_mean = torch.rand(165) * 0.01
    model.feature_std = torch.rand(165) + 0.5
    return model


def test_predict_grids_equals_predict_grid_one_by_one(ensemble):
    structs = list(structures().values())
    shapes = [None, (9, 10, 11), None]
    names = ["h6", "cah4", "h4"]
    # a small memory cap: several chunks per structure, cut differently than one structure alone
    batch = predict_grids(structs, ensemble, shapes=shapes, spacing_a=0.3, device="cpu", names=names, max_chunk_mb=2)
    assert len(batch) == 3
    for s, shape, name, pred in zip(structs, shapes, names, batch):
        alone = predict_grid(s, ensemble, shape=shape, spacing_a=0.3, device="cpu", name=name)
        assert pred.grid.shape == alone.grid.shape and pred.grid.name == name and pred.device == "cpu"
        assert pred.members.shape == alone.members.shape == (3, *alone.grid.shape)
        assert np.abs(pred.members - alone.members).max() <= 1e-6
        assert np.abs(pred.grid.values - alone.grid.values).max() <= 1e-6
        assert set(pred.timings_s) == {"descriptor", "network"}
    assert batch[1].grid.shape == (9, 10, 11)
    assert predict_grids([], ensemble) == []
    with pytest.raises(ValueError, match="shapes"):
        predict_grids(structs, ensemble, shapes=[None])
    with pytest.raises(ValueError, match="grid must be"):
        predict_grids(structs[:1], ensemble, shapes=[(1, 4, 4)])


def test_messages_split_every_job_once_in_order():
    ids = [f"j{i}" for i in range(40)]
    guided = messages(ids, 8)
    assert [len(m) for m in guided] == [8, 8, 6, 5, 4, 3, 2, 1, 1, 1, 1]  # ends with single jobs
    assert [i for m in guided for i in m] == ids
    assert [len(m) for m in messages(ids[:20], 8, guided=False)] == [8, 8, 4]
    assert messages(ids, 1) == [[i] for i in ids] and messages([], 8) == []


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(workers=1, memory_mb=1024, timeout_s=60)
    yield box
    box.close()


@pytest.fixture()
def setup(tmp_path, sandbox):
    make_checkpoint(tmp_path)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'jobs.db'}", device="cpu")
    store = Store(settings.db_url)
    yield store, settings, sandbox
    store.engine.dispose()


def stored(sandbox, store, settings, structs, spoil=(), options=FULL_OPTIONS):
    """Validate and store one batch of ``structs`` (name → Structure); the names in ``spoil`` are stored
    as a job from before structures were kept with their jobs, with garbage for text. The job ids in order.
    ``options`` as stored (the default, without ``evaluation``, as jobs stored before the option existed)."""
    items = [{"name": n, "format": "poscar", "content": s.to(fmt="poscar"), "hdos": None} for n, s in structs.items()]
    batch, rows = prepare(items, options, settings, store, "anon", sandbox)
    for row in rows:
        if row["name"] in spoil:
            row.update(content="not a POSCAR at all", structure=None)
    store.create_batch(batch, rows)
    store.mark_published([r["id"] for r in rows], None)
    return [r["id"] for r in rows]


def direct(structs) -> dict[str, dict]:
    """What ``elfscreen screen`` gives for each structure (read from the same POSCAR text), one at a time."""
    model = load_model()
    return {n: screen_structure(parse_structure(s.to(fmt="poscar"), "poscar", n), n, model, spacing_a=SPACING,
                                device="cpu").model_dump(mode="json") for n, s in structs.items()}


def job(store, job_id) -> dict:
    return store.job(job_id, "anon")


def test_batch_task_finishes_several_jobs_like_the_single_path(setup):
    store, settings, box = setup
    structs = many_structures(4, seed=5)
    ids = stored(box, store, settings, structs)
    assert jobs.run_batch(store, ids, settings, "gpu-worker") == ["done"] * 4
    expected = direct(structs)
    for job_id, name in zip(ids, structs):
        row = job(store, job_id)
        assert row["status"] == "done" and row["attempts"] == 1 and row["worker"] == "gpu-worker"
        assert same(comparable(row["result"]), comparable(expected[name]))
        assert store.event_counts(job_id) == {"created": 1, "claimed": 1, "done": 1}
        assert row["pipeline_s"] > 0 and row["started_at"] <= row["finished_at"]
    # a second delivery of the same message runs nothing
    assert jobs.run_batch(store, ids, settings, "other") == [None] * 4
    assert all(store.event_counts(i) == {"created": 1, "claimed": 1, "done": 1} for i in ids)


def test_fast_and_adaptive_jobs_of_a_batch_run_alone_and_the_grid_jobs_together(setup, monkeypatch):
    """A GPU batch mixing evaluations: the whole-grid jobs' grids are still predicted in one
    ``predict_grids`` call, the fast and adaptive jobs are screened one by one as ``screen_structure``
    screens them (with the same spacing)."""
    store, settings, box = setup
    structs = many_structures(4, seed=13)
    names = list(structs)
    evaluations = {names[0]: "fast", names[1]: "grid", names[2]: "adaptive", names[3]: "grid"}
    ids = [stored(box, store, settings, {n: structs[n]}, options={**FULL_OPTIONS, "evaluation": e})[0]
           for n, e in evaluations.items()]
    batched = []

    def recording(structures, *args, **kwargs):  # the real predict_grids, recording which jobs it predicts
        batched.append(kwargs["names"])
        return predict_grids(structures, *args, **kwargs)

    monkeypatch.setattr(screening, "predict_grids", recording)
    assert jobs.run_batch(store, ids, settings, "gpu-worker") == ["done"] * 4
    assert batched == [[names[1], names[3]]]
    model = load_model()
    for job_id, (name, evaluation) in zip(ids, evaluations.items()):
        row = job(store, job_id)
        flags = {"fast": evaluation == "fast", "adaptive": evaluation == "adaptive"}
        want = screen_structure(parse_structure(structs[name].to(fmt="poscar"), "poscar", name), name, model,
                                spacing_a=SPACING, device="cpu", **flags).model_dump(mode="json")
        assert same(comparable(row["result"]), comparable(want)), name
        assert row["result"]["grid"]["source"] == {"fast": "predicted-fast", "grid": "predicted",
                                                   "adaptive": "predicted-adaptive"}[evaluation]


def test_one_bad_structure_fails_only_its_job(setup):
    store, settings, box = setup
    structs = many_structures(3, seed=6)
    bad = list(structs)[1]
    ids = stored(box, store, settings, structs, spoil={bad})
    assert jobs.run_batch(store, ids, settings, "w") == ["done", "failed", "done"]
    error = job(store, ids[1])["error"]["error"]
    assert error["code"] == "invalid_structure" and error["input"] == bad and bad in error["message"]
    expected = direct(structs)
    for i in (0, 2):
        assert same(comparable(job(store, ids[i])["result"]), comparable(expected[list(structs)[i]]))
    assert all(store.event_counts(i).get("claimed") == 1 for i in ids)


def test_a_batch_that_cannot_run_together_runs_one_by_one(setup, monkeypatch):
    store, settings, box = setup
    structs = many_structures(3, seed=8)
    ids = stored(box, store, settings, structs)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(screening, "predict_grids", out_of_memory)
    assert jobs.run_batch(store, ids, settings, "w") == ["done"] * 3
    expected = direct(structs)
    for job_id, name in zip(ids, structs):
        assert same(comparable(job(store, job_id)["result"]), comparable(expected[name]))


def test_a_job_lost_before_runs_alone_after_the_batch(setup):
    store, settings, box = setup
    structs = many_structures(3, seed=9)
    ids = stored(box, store, settings, structs)
    assert store.claim(ids[0], "dead-worker", settings.lease_s) is not None  # then its worker died
    time.sleep(0.02)
    assert store.requeue_dead(0.01) == [ids[0]]
    claims = store.claim_many(ids, "probe", settings.lease_s, fresh_only=True)
    assert [c.job_id for c in claims] == ids[1:]  # a batch takes only jobs never claimed
    for c in claims:  # give them back as their worker would have lost them
        store.finish(c, error={"error": {"code": "probe", "message": "", "input": None}})
    more = stored(box, store, settings, many_structures(2, seed=10))
    assert jobs.run_batch(store, [ids[0], *more], settings, "w") == ["done", "done", "done"]
    assert job(store, ids[0])["attempts"] == 2 and store.event_counts(ids[0])["done"] == 1
    assert [job(store, i)["attempts"] for i in more] == [1, 1]


def test_jobs_of_one_message_run_one_after_another_and_a_lost_holder_is_swept(setup):
    store, settings, box = setup
    structs = many_structures(3, seed=12)
    ids = stored(box, store, settings, structs)
    # a worker takes the message and dies before claiming anything: its reservation goes stale
    store.reserve(ids, "dying-worker")
    assert store.requeue_dead(60) == [] and all(job(store, i)["status"] == "queued" for i in ids)
    time.sleep(0.02)
    assert sorted(store.requeue_dead(0.01)) == sorted(ids)
    assert all(job(store, i)["published_at"] is None for i in ids)  # the sweep sends them again
    assert store.queued(older_than_s=0) and store.requeue_dead(0.01) == []
    # the re-sent message runs them, each claimed just before it runs
    assert jobs.run_jobs(store, ids, settings, "w") == ["done"] * 3
    expected = direct(structs)
    for job_id, name in zip(ids, structs):
        row = job(store, job_id)
        assert row["attempts"] == 1 and same(comparable(row["result"]), comparable(expected[name]))
        assert store.event_counts(job_id) == {"created": 1, "requeued": 1, "claimed": 1, "done": 1}
    assert jobs.run_jobs(store, ids, settings, "w") == [None] * 3


def test_heartbeats_keep_reserved_and_claimed_jobs_alive(setup):
    store, _, box = setup
    settings = Settings(db_url=store.url, device="cpu", lease_s=1.0)  # a beat every 0.5 s
    ids = stored(box, store, settings, many_structures(2, seed=13))
    token = store.reserve(ids[:1], "w")
    claim = store.claim(ids[1], "w", settings.lease_s)
    with heartbeats(store, settings).hold(token, claim.token):
        time.sleep(1.6)
        assert store.requeue_dead(1.0) == []  # both beaten within the last 0.5 s (and some slack)
    time.sleep(1.2)
    assert sorted(store.requeue_dead(1.0)) == sorted(ids)  # no beats once nothing holds them
