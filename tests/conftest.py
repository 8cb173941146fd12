"""Guards shared by every test module."""
from __future__ import annotations

import os
import uuid

import pytest

PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"  # the machine's PostgreSQL, trust auth


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
    from elfscreen.app import jobs

    jobs._load.cache_clear()


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
