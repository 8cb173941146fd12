"""The XtalOpt objective script run exactly as XtalOpt runs it: in a fresh working directory holding
``output.POSCAR``, no arguments, then OUTFILE polled for and its first number read; against a live
``elfscreen serve`` and embedded."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elfscreen.client import Client
from live_server import ROOT, live_server
from test_service_common import structures

SCRIPT = ROOT / "clients" / "xtalopt" / "elfscreen-objective"
OUTFILE = "elfscreen.out"
SPACING = "0.3"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("server")) as url:
        yield url


def xtalopt_run(workdir: Path, poscar: str, detached: bool = False, **env: str) -> float:
    """Write output.POSCAR, run the script there without arguments, wait for OUTFILE (XtalOpt polls it every
    10 s; here every 0.1 s) and read its first number as XtalOpt does. ``detached``: the script must
    return before OUTFILE exists."""
    workdir.mkdir(parents=True)
    (workdir / "output.POSCAR").write_text(poscar)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ELFSCREEN_SERVER", "ELFSCREEN_OBJECTIVE"))}
    environ.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ['PATH']}", OMP_NUM_THREADS="1", **env)
    proc = subprocess.run([str(SCRIPT)], cwd=workdir, env=environ, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert not detached or not (workdir / OUTFILE).exists()
    deadline = time.monotonic() + 120
    while not (workdir / OUTFILE).exists():
        assert time.monotonic() < deadline, "OUTFILE never appeared"
        time.sleep(0.1)
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]  # written through a rename
    return float((workdir / OUTFILE).read_text().splitlines()[0].split()[0])


def server_result(server: str, poscar: str, name: str) -> dict:
    with Client(server) as client:
        return client.screen(poscar, {"spacing_a": float(SPACING)}, name=name, format="poscar")


def poscar_path(tmp_path: Path, s) -> Path:
    path = tmp_path / "candidate.POSCAR"
    path.write_text(s.to(fmt="poscar"))
    return path


def test_phi_and_tc_equal_the_servers_result(server, tmp_path):
    candidate = structures()["h6_hex"].to(fmt="poscar")
    phi = xtalopt_run(tmp_path / "00001x00001", candidate, ELFSCREEN_SERVER=server, ELFSCREEN_OBJECTIVE_SPACING=SPACING)
    tc = xtalopt_run(tmp_path / "00001x00002", candidate, ELFSCREEN_SERVER=server, ELFSCREEN_OBJECTIVE_SPACING=SPACING,
                     ELFSCREEN_OBJECTIVE="tc")
    expected = server_result(server, str(poscar_path(tmp_path, structures()["h6_hex"])), "check")
    assert phi == expected["phi"] and tc == expected["tc"]["value_k"] and tc > 0
    assert "phi = " in (tmp_path / "00001x00001" / "elfscreen-objective.log").read_text()


def test_keep_flag_from_a_config_file_next_to_the_input_detached(server, tmp_path):
    """The config file sits in the XtalOpt run folder, above the candidates' working directories; the
    rule's threshold lies between the two candidates' φ (as the server computes them)."""
    s = structures()
    phis = {name: server_result(server, str(poscar_path(tmp_path, s[name])), name)["phi"] for name in ("h6_hex", "h4_tet")}
    high, low = sorted(phis, key=phis.get, reverse=True)
    assert phis[high] - phis[low] > 0.02, phis  # the shipped model tells them apart
    (tmp_path / "elfscreen-objective.conf").write_text(
        f"# elfscreen objective for the fil line\nserver = {server}\nspacing = {SPACING}\n"
        f"objective = phi > {(phis[high] + phis[low]) / 2:.4f}\noutfile = {OUTFILE}\ndetach = yes\n")
    keep = xtalopt_run(tmp_path / "local" / "1x1", s[high].to(fmt="poscar"), detached=True)
    drop = xtalopt_run(tmp_path / "local" / "1x2", s[low].to(fmt="poscar"), detached=True)
    assert (keep, drop) == (1.0, 0.0)


def test_embedded_gives_the_servers_number(server, tmp_path):
    candidate = structures()["h4_tet"].to(fmt="poscar")
    value = xtalopt_run(tmp_path / "embedded", candidate, ELFSCREEN_OBJECTIVE_SPACING=SPACING)
    assert value == server_result(server, str(poscar_path(tmp_path, structures()["h4_tet"])), "h4")["phi"]


def test_fast_evaluation_gives_the_servers_fast_number(server, tmp_path):
    """``evaluation = fast`` at its default spacing, embedded, equals the server's fast screening."""
    candidate = structures()["h4_tet"].to(fmt="poscar")
    value = xtalopt_run(tmp_path / "fast", candidate, ELFSCREEN_OBJECTIVE_EVALUATION="fast")
    with Client(server) as client:
        expected = client.screen(str(poscar_path(tmp_path, structures()["h4_tet"])), {"evaluation": "fast"},
                                 name="h4", format="poscar")
    assert expected["grid"]["source"] == "predicted-fast"
    assert value == expected["phi"]


@pytest.mark.parametrize("env", [{}, {"ELFSCREEN_OBJECTIVE": "entropy"}, {"ELFSCREEN_OBJECTIVE_EVALUATION": "dft"}],
                         ids=["bad-poscar", "bad-objective", "bad-evaluation"])
def test_failures_write_nan_and_log_why(server, tmp_path, env):
    poscar = "H4\n1.0\n3 0 0\n0 3 0\n0 0 3\nH\n4\ndirect\n0 0 0\n" if not env else structures()["h4_tet"].to(fmt="poscar")
    value = xtalopt_run(tmp_path / "bad", poscar, ELFSCREEN_SERVER=server, **env)
    assert math.isnan(value)
    log = (tmp_path / "bad" / "elfscreen-objective.log").read_text()
    assert "ERROR" in log and ("output.POSCAR" in log if not env else ("'entropy'" in log or "'dft'" in log))


def test_help_prints_usage_and_writes_nothing(tmp_path):
    """``elfscreen-objective --help`` is what a user tries first: usage on stdout, exit 0, no OUTFILE or
    log in the working directory; any other argument is refused with exit 2, also writing nothing."""
    command = [sys.executable, "-m", "elfscreen.client.xtalopt"]
    shown = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: elfscreen-objective") and "OUTFILE" in shown.stdout
    refused = subprocess.run([*command, "--outfile", "x"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unexpected arguments: --outfile x" in refused.stderr
    assert list(tmp_path.iterdir()) == []
