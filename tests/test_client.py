"""The Python client against a live ``elfscreen serve`` (a subprocess, API keys on) and embedded: the same
results either way, failures per structure, retries through a flaky proxy, API keys."""
from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ase.io
import httpx
import pytest
from elfscreen.client import Client, ClientError, ScreeningFailed, ServerError
from elfscreen.client.inputs import as_items, split_structures
from live_server import live_server
from test_service_common import comparable, h_only, same, structures

KEY = "client-test-key"
OPTIONS = {"spacing_a": 0.3}
SCIENCE = ("formula", "spacegroup", "phi", "phi_star", "phi_1d", "phi_2d", "phi_dos", "tc", "bottleneck",
           "molecular_bottleneck", "critical_points", "uncertainty", "warnings")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("server"), ELFSCREEN_API_KEYS=f"{KEY},other-key") as url:
        yield url


def inputs(tmp_path) -> list:
    """pymatgen structures, an ASE Atoms and a file (the shipped model sees H only: CaH4 without its Ca)."""
    s = structures()
    structs = [s["h6_hex"], h_only(s["cah4"]), s["h4_tet"]]
    path = tmp_path / "POSCAR_file"
    path.write_text(structs[2].to(fmt="poscar"))
    atoms = io.StringIO()
    ase.io.write(atoms, structs[1].to_ase_atoms(), format="extxyz")
    return [structs[0], ase.io.read(io.StringIO(atoms.getvalue()), format="extxyz"), path]


def test_server_and_embedded_give_the_same_results(server, tmp_path):
    seen = []
    with Client(server, api_key=KEY) as remote:
        batch = remote.submit(inputs(tmp_path), OPTIONS)
        served = batch.wait(progress=lambda outcome, n, total: seen.append((outcome.name, n, total))).outcomes()
    embedded = Client().submit(inputs(tmp_path), OPTIONS).outcomes()

    assert [o.name for o in served] == ["H2-0", "H4-1", str(tmp_path / "POSCAR_file")]  # reduced formula, ASE formula
    assert sorted(n for _, n, _ in seen) == [1, 2, 3] and {t for _, _, t in seen} == {3}
    for a, b in zip(served, embedded):
        assert a.ok and b.ok and a.job_id and b.job_id is None
        # The server runs one thread (live_server sets OMP_NUM_THREADS=1), the embedded client this
        # process's count: torch sums the network's float32 products in another order, so the ELF can
        # differ by a few float32 ulps (1e-8 seen on φ) and so can all derived numbers. `same` allows
        # 1e-6 relative (far below any difference that matters: φ is read to 1e-3, Tc to 1 K) and
        # keeps every key, string, count and list length exact.
        assert same({k: a.result[k] for k in SCIENCE}, {k: b.result[k] for k in SCIENCE})
        assert same(comparable(a.result), comparable(b.result))  # everything but timings
        assert a.result["phi"] is not None and a.result["tc"]["value_k"] is not None
    assert served[2].record()["file"] == str(tmp_path / "POSCAR_file") and served[2].record()["index"] is None


def test_a_bad_structure_fails_alone_with_the_same_error_either_way(server, tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 3\nloop_\n_atom_site_label\nH1\n")
    good = structures()["h4_tet"]
    with Client(server, api_key=KEY) as remote:
        served = remote.submit([bad, good], OPTIONS).outcomes()
        with pytest.raises(ScreeningFailed) as failed:
            remote.screen(bad, OPTIONS)
    embedded = Client().submit([bad, good], OPTIONS).outcomes()
    for outcomes in (served, embedded):
        assert [o.status for o in outcomes] == ["failed", "done"]
        assert outcomes[0].error["code"] == "invalid_structure" and outcomes[0].error["input"] == str(bad)
        assert outcomes[0].record() == {"file": str(bad), "index": None, "name": str(bad), "error": outcomes[0].error}
    assert served[0].error == embedded[0].error
    assert failed.value.error["code"] == "invalid_structure"


def test_api_key_is_required_and_bad_options_raise(server, monkeypatch):
    s = structures()["h4_tet"]
    monkeypatch.delenv("ELFSCREEN_API_KEY", raising=False)
    with Client(server) as anonymous, pytest.raises(ServerError) as err:
        anonymous.submit(s, OPTIONS)
    assert err.value.status == 401 and err.value.code == "unauthorized"
    monkeypatch.setenv("ELFSCREEN_API_KEY", KEY)  # the default key
    with Client(server) as keyed:
        assert keyed.screen(s, OPTIONS, name="tet")["name"] == "tet"
        with pytest.raises(ServerError) as err:
            keyed.submit(s, {"spacing_a": 5.0})
    assert err.value.status == 422 and "spacing_a" in err.value.message
    with pytest.raises(ClientError, match="spacing_a"):
        Client().submit(s, {"spacing_a": 5.0})


def test_fast_evaluation_either_way_and_keep_grid_refused(server):
    s = structures()["h4_tet"]
    options = {**OPTIONS, "evaluation": "fast"}
    with Client(server, api_key=KEY) as remote:
        served = remote.screen(s, options)
        with pytest.raises(ServerError) as err:
            remote.submit(s, {**options, "keep_grid": True})
    embedded = Client().screen(s, options)
    assert served["grid"]["source"] == embedded["grid"]["source"] == "predicted-fast"
    assert served["provenance"]["topology"]["adaptive"]["certified"] is True
    assert same(comparable(served), comparable(embedded))
    assert err.value.status == 422 and "keep_grid needs evaluation \"grid\", not 'fast'" in err.value.message
    with pytest.raises(ClientError, match="^options: Value error, keep_grid needs evaluation"):
        Client().submit(s, {**options, "keep_grid": True})
    with pytest.raises(ClientError, match="^options.evaluation: Input should be"):
        Client().submit(s, {"evaluation": "exact"})


class FlakyProxy(ThreadingHTTPServer):
    """Forwards to ``upstream``, except that the first requests meet the planned ``faults``: ``"drop"``
    (connection closed without an answer) or an HTTP status (429 with ``Retry-After: 1``)."""

    def __init__(self, upstream: str, faults: list):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.faults, self.log = upstream, list(faults), []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _ProxyHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _handle(self):
        proxy = self.server
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        fault = proxy.faults.pop(0) if proxy.faults else None
        proxy.log.append((self.command, self.path, fault))
        if fault == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            payload = json.dumps({"error": {"code": "test_fault", "message": f"planned {fault}", "input": None}}).encode()
            self.send_response(fault)
            if fault == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        answer = httpx.request(self.command, proxy.upstream + self.path, headers=headers, content=body, timeout=60)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


def test_transient_errors_are_retried(server):
    proxy = FlakyProxy(server, ["drop", 503, 429, 502, 504])
    try:
        with Client(proxy.url, api_key=KEY, backoff_s=0.05) as client:
            result = client.screen(structures()["h4_tet"], OPTIONS, name="through-proxy")
        assert result["name"] == "through-proxy" and result["phi"] is not None
        assert [fault for _, _, fault in proxy.log[:6]] == ["drop", 503, 429, 502, 504, None]
        assert proxy.log[5][:2] == ("POST", "/v1/screenings")  # the submission got through after five faults

        proxy.faults = [503] * 3
        with Client(proxy.url, api_key=KEY, retries=2, backoff_s=0.01) as client, pytest.raises(ServerError) as err:
            client.submit(structures()["h4_tet"], OPTIONS)
        assert err.value.status == 503 and not proxy.faults
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_unreachable_server_raises_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with Client(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01) as client, pytest.raises(ClientError, match="cannot reach"):
        client.submit(structures()["h4_tet"], OPTIONS)


def test_multi_structure_texts_are_split(tmp_path):
    structs = list(structures().values())
    xyz = io.StringIO()
    ase.io.write(xyz, [s.to_ase_atoms() for s in structs], format="extxyz")
    assert len(split_structures(xyz.getvalue(), "extxyz")) == 3
    cif = "".join(s.to(fmt="cif") for s in structs[:2])
    assert len(split_structures(cif, "cif")) == 2
    path = tmp_path / "frames.xyz"
    path.write_text(xyz.getvalue())
    items = as_items(path)
    assert [(i.name, i.index, i.source) for i in items] == [(f"{path}#{k}", k, str(path)) for k in range(3)]
    with pytest.raises(ValueError, match="unique"):
        as_items([structs[0], structs[0]], names=["same", "same"])
