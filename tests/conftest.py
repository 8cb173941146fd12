"""Guards shared by every test module."""
from __future__ import annotations

import os

import pytest


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
    from app import jobs

    jobs._load.cache_clear()
