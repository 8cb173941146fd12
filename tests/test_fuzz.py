"""Fuzzing the live service: 2,000 seeded mutated submissions (nan/inf/1e10…1e308 numbers, huge atom
counts, symmetry bombs, empty atom loops, binary garbage, truncations, wrong formats, degenerate and
huge lattices, duplicate atoms, broken JSON and multipart bodies, internal callback URLs) against a
real ``elfscreen serve`` (embedded). No 5xx, every answer within ``ANSWER_S`` (a hang detector: answers
take milliseconds, but one multipart request of 2,000 took over 5 s on a 2-core machine running other test
suites at the same time), ``/healthz`` up throughout, the server alive at the end with its resident
memory under 2 GB."""
from __future__ import annotations

from fuzzing import requests, run
from live_server import live_server_process

N_REQUESTS = 2000
SEED = 20261128
ANSWER_S = 15.0


def test_fuzzed_submissions_never_break_the_server(tmp_path):
    reqs = requests(SEED, N_REQUESTS)
    kinds = {r.kind.split("/")[1] for r in reqs}
    assert {"number", "count", "bomb", "empty-loop", "garbage", "truncate", "lattice", "duplicate",
            "not-json", "callback"} <= kinds  # every class of input is in the run
    with live_server_process(tmp_path, ELFSCREEN_PARSE_TIMEOUT_S="2") as (url, proc):
        report = run(url, proc.pid, reqs, timeout_s=ANSWER_S, alive=lambda: proc.poll() is None)
        log = (tmp_path / "server.log").read_text()
    assert not report.no_answer, report.no_answer[:5]
    assert not report.by_kind_5xx, report.by_kind_5xx
    assert sum(report.statuses.values()) == N_REQUESTS
    assert report.max_latency_s < ANSWER_S, report.slowest_kind
    assert report.health_failures == 0 and not report.server_died
    assert 0 < report.peak_rss_mb < 2048
    assert report.statuses[202] > 0 and report.statuses[422] > 0  # both sides of the validation were reached
    assert "Traceback" not in log, log[-3000:]
