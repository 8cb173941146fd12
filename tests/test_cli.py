"""The `elfscreen` command as a user runs it: a real subprocess, JSON on stdout, exit codes."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "qe"
CONTRACT = {"phi", "phi_star", "phi_1d", "phi_2d", "h_fraction", "tc", "bottleneck", "critical_points", "grid", "name"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "elfscreen.app.cli", *args], capture_output=True, text=True, timeout=300)


def test_topology_of_shipped_example():
    proc = run("topology", "--example", "h2_molecular_cubic")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert CONTRACT <= set(out)
    assert out["tc"]["model"] == "belli2021"
    # Belli's relation from the reported φ_DOS (= φ for pure H), clipped at 0 K
    assert out["phi_dos"] == pytest.approx(out["phi"]) and out["tc"]["raw_k"] == pytest.approx(750 * out["phi_dos"] - 85)
    assert out["tc"]["value_k"] == max(0.0, out["tc"]["raw_k"])
    assert {"value_k", "raw_k"} <= set(out["tc"]) and out["h_dos"] == {"value": 1.0, "assumed": False, "std": 0.0, "source": "definition"}
    assert out["grid"]["shape"] == [32, 32, 32]
    assert out["provenance"]["elfscreen_version"] and "topology" in out["provenance"]["timings_s"]
    assert out["spacegroup"] == "Pa-3"
    assert 0 < out["phi"] < out["phi_star"] <= 1


def test_topology_of_file_with_options(tmp_path):
    path = DATA / "h_hexagonal.ELF.cube.gz"
    proc = run("topology", str(path), "--tc-model", "sr2", "--hdos", "0.8", "--indent", "0")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["name"] == path.name and out["tc"]["model"] == "sr2"
    assert out["h_dos"] == {"value": 0.8, "assumed": False, "std": None, "source": "user"}


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = gzip.decompress((DATA / "h_hexagonal.ELF.cube.gz").read_bytes()).decode()
    lines = good.splitlines()
    files = {
        "truncated": "\n".join(lines[: len(lines) // 2]),
        "not a grid": "hello\nthis is not\na cube file\n",
        "NaN": "\n".join(lines[:10] + [lines[10].replace(lines[10].split()[0], "NaN", 1)] + lines[11:]),
        "wrong counts": good.replace(lines[3].split()[0], str(int(lines[3].split()[0]) + 3), 1),
    }
    out = {}
    for label, text in files.items():
        p = tmp_path / f"{label.replace(' ', '_')}.cube"
        p.write_text(text)
        out[label] = p
    return out


@pytest.mark.parametrize("label", ["truncated", "not a grid", "NaN", "wrong counts"])
def test_bad_files_exit_2_with_a_clear_message(tmp_path, label):
    path = _bad_files(tmp_path)[label]
    proc = run("topology", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"elfscreen: error: {path.name}: ")
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "invalid_grid" and err["input"] == path.name


def test_missing_file_and_bad_hdos(tmp_path):
    proc = run("topology", str(tmp_path / "nope.cube"))
    assert proc.returncode == 2 and "cannot be read" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("topology", "--example", "h_hexagonal", "--hdos", "3")
    assert proc.returncode == 2 and "--hdos" in proc.stderr


def test_density_file_is_refused(tmp_path):
    text = gzip.decompress((DATA / "h_hexagonal.ELF.cube.gz").read_bytes()).decode().splitlines()
    head = 6 + int(text[2].split()[0])
    scaled = [" ".join(f"{float(x) * 50:.5E}" for x in line.split()) for line in text[head:]]
    path = tmp_path / "density.cube"
    path.write_text("\n".join(text[:head] + scaled) + "\n")
    proc = run("topology", str(path))
    assert proc.returncode == 2 and "not an ELF" in proc.stderr


def test_a_reader_that_goes_away_is_not_an_error():
    """`elfscreen … | head -c 0`: the pipe is closed before anything is written; no traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "elfscreen.app.cli", "examples"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "Broken" not in err


def small_cif(tmp_path: Path) -> Path:
    """A 3 Å cubic H2 cell: tiny to screen, and its low density (13.5 Å³/atom) draws a warning."""
    from pymatgen.core import Lattice, Structure

    path = tmp_path / "h2.cif"
    Structure(Lattice.cubic(3.0), ["H", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(path))
    return path


@pytest.mark.parametrize("command", ["screen", "predict"])
@pytest.mark.parametrize("option, problem", [
    (["--grid", "2000", "2000", "2000"], "limit"),  # 8e9 points: 149 GiB of descriptors before the check existed
    (["--spacing", "0.001"], "limit"),  # 3000³ points on a 3 Å cell
    (["--grid", "300", "300", "300"], "limit"),  # 27M points: ~40 min and ~16 GB, refused before any work
    (["--grid", "0", "0", "0"], "below 1"),
    (["--spacing", "0"], "must be positive"),
])
def test_grid_options_beyond_the_limits_exit_2_naming_the_option(tmp_path, command, option, problem):
    from elfscreen.model.limits import MAX_GRID_POINTS

    extra = ["--out", str(tmp_path / "out.cube")] if command == "predict" else []
    proc = run(command, str(small_cif(tmp_path)), *option, *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"elfscreen: error: {option[0]}") and problem in proc.stderr
    if problem == "limit":
        assert f"{MAX_GRID_POINTS:,}" in proc.stderr and json.loads(proc.stdout)["error"]["code"] == "too_large"
    assert not (tmp_path / "out.cube").exists()


def test_screen_prints_each_results_warnings_on_stderr(tmp_path):
    proc = run("screen", str(small_cif(tmp_path)), "--spacing", "0.2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["warnings"] and any("density 13.50" in w for w in result["warnings"])
    printed = [line for line in proc.stderr.splitlines() if line.startswith("elfscreen: warning: ")]
    assert printed == [f"elfscreen: warning: h2.cif: {w}" for w in result["warnings"]]
