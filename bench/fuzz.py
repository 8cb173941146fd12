"""The service fuzzer of tests/test_fuzz.py, longer: ≥ 10,000 seeded mutated submissions against a real
``elfscreen serve`` (embedded mode, its own SQLite store in a temporary folder).

    python bench/fuzz.py [--requests 10000] [--seed 1] [--threads 4] [--timeout 5]

Prints a Markdown table: answers by status code (and the kinds of request behind any 5xx), requests
with no answer within the timeout, the slowest answer, /healthz failures, whether the server died, and
the server process's peak resident memory (/proc/<pid>/status VmRSS, sampled after every answer).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fuzzing import requests, run  # noqa: E402
from live_server import live_server_process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a request may take before it counts as unanswered")
    args = parser.parse_args()
    reqs = requests(args.seed, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        with live_server_process(Path(tmp), ELFSCREEN_PARSE_TIMEOUT_S="2") as (url, proc):
            report = run(url, proc.pid, reqs, threads=args.threads, timeout_s=args.timeout,
                         alive=lambda: proc.poll() is None)
        tracebacks = (Path(tmp) / "server.log").read_text().count("Traceback")
    print(f"{report.requests:,} requests (seed {args.seed}, {args.threads} threads) in {report.wall_s:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| status | count |\n|---|---|")
    for status, count in sorted(report.statuses.items()):
        print(f"| {status} | {count:,} |")
    print(f"| no answer within {args.timeout:g} s | {len(report.no_answer)} |")
    print(f"\n| measure | value |\n|---|---|")
    print(f"| 5xx answers | {sum(c for s, c in report.statuses.items() if s >= 500)} |")
    print(f"| max latency | {report.max_latency_s:.2f} s ({report.slowest_kind}) |")
    print(f"| /healthz failures | {report.health_failures} |")
    print(f"| server deaths | {int(report.server_died)} |")
    print(f"| peak RSS of the server process | {report.peak_rss_mb:.0f} MiB |")
    print(f"| tracebacks in the server log | {tracebacks} |")
    if report.by_kind_5xx:
        print("\n5xx by request kind:", dict(report.by_kind_5xx))
    if report.no_answer:
        print("\nunanswered (first 10):", report.no_answer[:10])


if __name__ == "__main__":
    main()
