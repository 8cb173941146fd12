"""Guards shared by every test module, and the CI rule: under ``CI=true`` a skipped test is a failure.

Tests skip when a tool they need is missing (pw.x, Chromium, redis-server, playwright, schemathesis).
On a developer's machine that is a convenience; in CI it would let whole suites pass unseen, so there
each skip — at collection (``importorskip``) or at setup/run (``skipif``, ``pytest.skip``) — is
reported as a failure carrying the skip's reason, which names the missing tool.
"""
from __future__ import annotations

import os
import uuid

import pytest

PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"  # the machine's PostgreSQL, trust auth


def skips_fail() -> bool:
    """True under CI (``CI=true``, as GitHub Actions, GitLab and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _fail_instead_of_skip(report) -> None:
    if not (skips_fail() and report.skipped) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true: a skipped test is a failure (install what it needs). Skip reason: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_instead_of_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_instead_of_skip(outcome.get_result())


@pytest.fixture(scope="module", autouse=True)
def _model_setting_stays_in_its_module():
    """The service tests point ``ELFSCREEN_MODEL`` at an untrained checkpoint (test_service_common.
    make_checkpoint); later modules (client, XtalOpt, dashboard) must see the shipped model again."""
    before = os.environ.get("ELFSCREEN_MODEL")
    yield
    if before is None:
        os.environ.pop("ELFSCREEN_MODEL", None)
    else:
        os.environ["ELFSCREEN_MODEL"] = before
    from elfscreen.model.pipeline import forget_model

    forget_model()


@pytest.fixture(scope="module")
def pg_url():
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    import psycopg

    name = f"elfscreen_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
