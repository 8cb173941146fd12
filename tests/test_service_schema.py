"""schemathesis against the API's own OpenAPI spec: no generated request gets a 5xx."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from elfscreen.app.api import create_app  # noqa: E402
from elfscreen.app.config import Settings  # noqa: E402
from test_service_common import make_checkpoint  # noqa: E402

FOLDER = Path(tempfile.mkdtemp(prefix="elfscreen-schema-"))
APP = create_app(Settings(db_url=f"sqlite:///{FOLDER / 'jobs.db'}", max_grid_points=200_000))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def running_app():
    make_checkpoint(FOLDER)
    with TestClient(APP):  # runs the lifespan: store, embedded pool, sweep
        yield


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message", "input"}
