"""A real ``elfscreen serve`` for the client tests: a subprocess on a free port, embedded mode, its own
SQLite store in a temporary folder (no test helpers here)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_environ(folder: Path, **env: str) -> dict:
    """The environment of a service process: this one's without a broker (embedded), an SQLite store in
    ``folder``, one thread, then the ``ELFSCREEN_*`` overrides in ``env``."""
    environ = {k: v for k, v in os.environ.items() if k != "ELFSCREEN_BROKER_URL"}
    environ.update({"ELFSCREEN_DB_URL": f"sqlite:///{folder / 'jobs.db'}", "OMP_NUM_THREADS": "1"}, **env)
    return environ


@contextmanager
def live_server(folder: Path, **env: str):
    """Yield the base URL of ``elfscreen serve`` running in ``folder`` (environment: :func:`service_environ`)
    once ``/readyz`` answers 200 (model loaded); stop it afterwards."""
    with live_server_process(folder, **env) as (url, _):
        yield url


@contextmanager
def live_server_process(folder: Path, **env: str):
    """:func:`live_server`, yielding (base URL, the server's ``subprocess.Popen``)."""
    port = free_port()
    environ = service_environ(folder, **env)
    log = folder / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "elfscreen.app.cli", "serve", "--port", str(port)], cwd=folder, env=environ,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"elfscreen serve did not become ready:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
