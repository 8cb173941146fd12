"""The sandbox that reads submitted structures: a call that hangs, crashes its process or allocates too
much becomes an InputError naming the input, the child is replaced, and the next call works."""
from __future__ import annotations

import os
import time

import pytest

from elfscreen.app.intake import read_item
from elfscreen.app.sandbox import WALL_FACTOR, Sandbox
from elfscreen.model.errors import StructureError
from elfscreen.model.limits import StructureLimits

POSCAR = "H2\n1.0\n3 0 0\n0 3 0\n0 0 3\nH\n2\nDirect\n0 0 0\n0.5 0.5 0.5\n"


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(workers=1, memory_mb=512, timeout_s=2.0)
    yield box
    box.close()


def works(sandbox) -> None:
    item = {"name": "POSCAR", "format": None, "content": POSCAR}
    out = sandbox.run("POSCAR", read_item, item, {"spacing_a": 0.3}, StructureLimits(), "model-id")
    assert out["format"] == "poscar" and out["structure"]["species"] == ["H", "H"] and len(out["cache_key"]) == 64


def test_a_structure_is_read_validated_and_keyed(sandbox):
    works(sandbox)
    with pytest.raises(StructureError) as info:
        sandbox.run("bad.xyz", read_item, {"name": "bad.xyz", "format": None, "content": "10000000000000\n\nH 0 0 0\n"},
                    {"spacing_a": 0.3}, StructureLimits(), "model-id")
    assert str(info.value).startswith("bad.xyz: line 1 declares")


def test_a_loop_is_killed_when_its_cpu_time_is_spent(sandbox):
    start = time.monotonic()
    with pytest.raises(StructureError, match="loop.cif: took longer than 2 s"):
        sandbox.run("loop.cif", busy, 600)
    assert time.monotonic() - start < 2 * WALL_FACTOR
    works(sandbox)


def test_a_call_that_blocks_is_killed_at_the_wall_clock_backstop(sandbox):
    start = time.monotonic()
    with pytest.raises(StructureError, match="slow.cif: took longer than 2 s"):
        sandbox.run("slow.cif", time.sleep, 600)
    assert 2 * WALL_FACTOR <= time.monotonic() - start < 2 * WALL_FACTOR + 5
    works(sandbox)


def test_a_crash_is_an_input_error(sandbox):
    with pytest.raises(StructureError, match="crash.cif: made the structure reader crash"):
        sandbox.run("crash.cif", os.abort)
    works(sandbox)


def test_memory_beyond_the_limit_is_refused(sandbox):
    with pytest.raises(StructureError, match="big.cif: needs more than 512 MiB"):
        sandbox.run("big.cif", bytearray, 2**31)
    works(sandbox)


def busy(seconds: float) -> None:
    """Compute for ``seconds`` of wall time (a parser stuck in a loop)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_bug_in_the_reader_is_an_input_error_and_logged(sandbox, caplog):
    with pytest.raises(StructureError, match="odd.cif: could not be read: an internal error"):
        sandbox.run("odd.cif", int, "not a number")
    assert "ValueError" in caplog.text and "Traceback" in caplog.text
    works(sandbox)
