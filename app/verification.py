"""Running a DFT verification wherever it executes (the embedded DFT pool or a Celery ``dft`` worker):
claim it, run :func:`elfscreen.model.verify.verify` on the job's stored structure, finish it.

A verification is written only under its claim (:meth:`~elfscreen.app.store.Store.claim_verification`), so
one delivered twice still finishes once; its heartbeat is kept fresh by the process's heartbeat thread
(:mod:`elfscreen.app.heartbeat`). While it runs, a watcher thread checks that the claim still holds; when
the verification is cancelled (``DELETE /v1/screenings/{id}/verify``) or taken over, it kills this
process's QE children (pw.x, pp.x, projwfc.x), so the DFT stops at once and nothing is written.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from elfscreen.app.config import Settings
from elfscreen.app.heartbeat import heartbeats
from elfscreen.app.store import Store, VerifyClaim
from elfscreen.model.dft import find_executable, kmesh
from elfscreen.model.errors import InputError
from elfscreen.model.structures import structure_from_dict
from elfscreen.model.verify import verify, verify_settings

log = logging.getLogger("elfscreen.verification")
QE_PROGRAMS = ("pw.x", "pp.x", "projwfc.x")
DFT_NICE = 10  # niceness of DFT processes: screening jobs on the same cores come first


def missing_qe() -> list[str]:
    """The QE programs a verification needs that are not installed (on PATH, or named by PW_X etc.)."""
    return [name for name in QE_PROGRAMS if not find_executable(name)]


def time_limit_s(structure: dict, base_s: float) -> float:
    """Hard time limit of one verification: ``base_s`` for ≤ 8 atoms and ≤ 64 k-points, × (atoms/8)²
    (plane waves × bands) × (k-points/64) above that, k-points of the structure's dataset settings."""
    s = structure_from_dict(structure)
    k_points = math.prod(kmesh(s.lattice, verify_settings(s)[1].kspacing))
    return base_s * max(1.0, (len(s) / 8) ** 2) * max(1.0, k_points / 64)


def run_verification(store: Store, job_id: str, settings: Settings, worker: str) -> str | None:
    """Claim and run the verification of ``job_id``; its final status, or None when it was not ours to
    run (finished, cancelled, or alive elsewhere) or was cancelled while it ran."""
    claim = store.claim_verification(job_id, worker, settings.lease_s)
    if claim is None:
        return None
    every = max(settings.lease_s / 4, 0.5)
    with heartbeats(store, settings).hold(claim.token), _stop_when_lost(store, claim.token, every):
        outcome = verify_claim(claim)
    if not store.finish_verification(claim, worker=worker, **outcome):
        log.info("verification of %s was cancelled or taken over; its outcome is dropped", job_id)
        return None
    return "failed" if "error" in outcome else "done"


def verify_claim(claim: VerifyClaim) -> dict:
    """The outcome of one verification: ``result`` ({"dft", "delta_phi"}) and ``grid``, or ``error``."""
    try:
        grid, result = verify(structure_from_dict(claim.structure), claim.ml_phi, name=claim.name)
        return {"result": result, "grid": grid}
    except InputError as exc:  # DftError: a QE run failed or did not converge (its message says which)
        return {"error": exc.to_dict()}
    except Exception as exc:
        log.error("verification of %s (%s) failed", claim.job_id, claim.name, exc_info=exc)
        return {"error": {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                                    "input": claim.name}}}


@contextmanager
def _stop_when_lost(store: Store, token: str, every_s: float):
    """While the block runs, check every ``every_s`` that ``token`` still holds its verification; when it
    does not (cancelled, taken over), kill this process's child processes (the QE run)."""
    done = threading.Event()

    def watch():
        while not done.wait(every_s):
            try:
                held = store.verification_held(token)
            except Exception as exc:  # the store is down: keep computing; finish decides
                log.warning("could not check the verification's claim (%s)", exc)
                continue
            if not held:
                _kill_children()
                return

    thread = threading.Thread(target=watch, name="elfscreen-verify-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _kill_children() -> None:
    """SIGKILL every child process of this process (Linux: /proc)."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue
