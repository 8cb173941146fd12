"""``elfscreen submit``, ``watch`` and ``rank`` as a user runs them (subprocesses) on the output of a
structure search: pyxtal crystals as CIF/POSCAR, AIRSS ``.res`` concatenations, multi-frame extxyz, a
broken file; against a live ``elfscreen serve`` and embedded."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
from live_server import live_server
from pymatgen.io.res import ResIO
from pyxtal import pyxtal
from test_service_common import h_only, structures

SPACING = "0.3"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("server")) as url:
        yield url


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ELFSCREEN_SERVER", "ELFSCREEN_API_KEY")}
    return subprocess.run([sys.executable, "-m", "elfscreen.app.cli", *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**env, "OMP_NUM_THREADS": "1"})


def random_crystals(n: int) -> list:
    """``n`` small random symmetric hydrogen crystals from pyxtal (as a structure search makes them)."""
    out = []
    for seed, (group, atoms) in enumerate([(229, 2), (194, 4), (166, 6), (221, 8)][:n]):
        crystal = pyxtal()
        crystal.from_random(3, group, ["H"], [atoms], random_state=seed)
        out.append(crystal.to_pymatgen())
    return out


def airss(structure, label: str) -> str:
    """A ``.res`` block as AIRSS writes it (TITL: seed, pressure, volume, enthalpy, …)."""
    text = ResIO.structure_to_str(structure)
    return text.replace("TITL", f"TITL {label} 100.00 {structure.volume:.3f} -31.52 0 0 {len(structure)} (P1) n - 1", 1)


def search_folder(root: Path) -> dict[str, int]:
    """A folder as a search leaves it; returns each structure file (relative) and how many structures it holds."""
    xtals, more = random_crystals(4), [h_only(s) for s in structures().values()]  # the shipped model sees H only
    files = {"cif/a.cif": xtals[0].to(fmt="cif"), "vasp/POSCAR": xtals[1].to(fmt="poscar"),
             "vasp/b.vasp": more[2].to(fmt="poscar"),
             "airss/all.res": airss(xtals[2], "H6-1") + airss(xtals[3], "H8-2"),
             "broken.cif": "data_broken\n_cell_length_a 3.0\nloop_\n_atom_site_label\nH1\n",
             "notes.txt": "not a structure", ".hidden/POSCAR": more[0].to(fmt="poscar")}
    frames = io.StringIO()
    ase.io.write(frames, [s.to_ase_atoms() for s in more[:2]], format="extxyz")
    files["frames.extxyz"] = frames.getvalue()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return {"cif/a.cif": 1, "vasp/POSCAR": 1, "vasp/b.vasp": 1, "airss/all.res": 2, "broken.cif": 1, "frames.extxyz": 2}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_submit_a_search_folder_with_a_broken_file(server, tmp_path):
    root = tmp_path / "search"
    expected = search_folder(root)
    out = tmp_path / "results.jsonl"
    proc = run("submit", str(root), "--server", server, "--out", str(out), "--spacing", SPACING)
    assert proc.returncode == 1, proc.stderr
    records = lines(out)
    per_file = {}
    for r in records:
        per_file.setdefault(str(Path(r["file"]).relative_to(root)), []).append(r)
    assert {f: len(rs) for f, rs in per_file.items()} == expected  # one line per structure, hidden/other files skipped
    assert [r["index"] for r in per_file["airss/all.res"]] == [0, 1] and per_file["cif/a.cif"][0]["index"] is None
    assert [r["name"] for r in per_file["frames.extxyz"]] == [f"{root / 'frames.extxyz'}#{k}" for k in (0, 1)]
    broken = per_file["broken.cif"][0]
    assert broken["error"]["code"] == "invalid_structure" and "phi" not in broken
    assert all(r["phi"] is not None and r["tc"]["value_k"] is not None for f, rs in per_file.items() if f != "broken.cif"
               for r in rs)
    assert "screened 7 of 8 structures; 1 failed" in proc.stderr
    assert f"  {root / 'broken.cif'}: " in proc.stderr and "Traceback" not in proc.stderr

    proc = run("rank", str(out), "--by", "phi", "--top", "3")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.splitlines()
    assert table[0].split()[:3] == ["#", "structure", "formula"] and len(table) == 4
    best = sorted((r for r in records if "phi" in r), key=lambda r: r["phi"], reverse=True)[:3]
    assert [row.split()[1] for row in table[1:]] == [r["name"] for r in best]
    assert [float(row.split()[4]) for row in table[1:]] == [round(r["phi"], 4) for r in best]
    assert "1 of 8 lines have no phi" in proc.stderr


def test_submit_embedded_globs_to_csv_then_rank(tmp_path):
    root = tmp_path / "search"
    search_folder(root)
    out = tmp_path / "results.csv"
    proc = run("submit", str(root / "**" / "*.res"), str(root / "vasp"), "--out", str(out), "--spacing", SPACING)
    assert proc.returncode == 0, proc.stderr
    assert "screened 4 of 4 structures; 0 failed" in proc.stderr
    header, *rows = out.read_text().splitlines()
    assert header.startswith("file,index,name,status,formula") and len(rows) == 4
    proc = run("rank", str(out), "--by", "tc")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 5, proc.stderr
    tcs = [float(row.split()[6]) for row in proc.stdout.splitlines()[1:]]  # then the warnings
    assert tcs == sorted(tcs, reverse=True)


def test_randspg_output_folder_needs_format(server, tmp_path):
    """RandSpg writes extension-less POSCARs named <composition>_<spg>-<index> into its outputDir."""
    out_dir = tmp_path / "randSpgOut"
    out_dir.mkdir()
    for k, s in enumerate(random_crystals(2), 1):
        text = s.to(fmt="poscar").splitlines(keepends=True)
        (out_dir / f"H{len(s)}_{s.get_space_group_info()[1]}-{k}").write_text(
            f"H{len(s)} -- randSpg with spg of: {s.get_space_group_info()[1]}\n" + "".join(text[1:]))
    assert run("submit", str(out_dir), "--server", server).returncode == 1  # no name tells the format
    proc = run("submit", str(out_dir), "--format", "poscar", "--server", server, "--spacing", SPACING)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(line)["name"] for line in proc.stdout.splitlines()) == sorted(
        str(p) for p in out_dir.iterdir())


def test_submit_fast_and_adaptive_on_the_server_and_embedded(server, tmp_path):
    """``--fast``/``--adaptive`` become the service's ``evaluation`` (with its default spacing when none is
    given) and the in-process client's; the two flags exclude each other, as for ``elfscreen screen``."""
    path = tmp_path / "POSCAR"
    path.write_text(structures()["h4_tet"].to(fmt="poscar"))
    served, embedded = tmp_path / "served.jsonl", tmp_path / "embedded.jsonl"
    proc = run("submit", str(path), "--fast", "--server", server, "--out", str(served))
    assert proc.returncode == 0, proc.stderr
    proc = run("submit", str(path), "--fast", "--out", str(embedded))
    assert proc.returncode == 0, proc.stderr
    (a,), (b,) = lines(served), lines(embedded)
    for r in (a, b):
        assert r["grid"]["source"] == "predicted-fast" and r["provenance"]["topology"]["adaptive"]["certified"]
        assert max(r["grid"]["spacing_a"]) <= 0.12 < max(r["grid"]["spacing_a"]) * 1.2  # the fast default, 0.12 Å
    assert a["grid"]["shape"] == b["grid"]["shape"] and abs(a["phi"] - b["phi"]) < 1e-6
    proc = run("submit", str(path), "--adaptive", "--spacing", "0.2", "--server", server)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["grid"]["source"] == "predicted-adaptive" and max(out["grid"]["spacing_a"]) <= 0.2
    both = run("submit", str(path), "--fast", "--adaptive")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_evaluation_help_states_the_default_spacings():
    """The --fast/--adaptive help lines (written out: ``elfscreen --help`` imports no pydantic) say
    ``model.options``' default spacings."""
    from elfscreen.model.options import EVALUATIONS

    for command in ("submit", "screen"):
        text = " ".join(run(command, "--help").stdout.split())
        assert f"default {EVALUATIONS['adaptive']} Å with this flag" in text
        assert f"default {EVALUATIONS['fast']} Å with this flag" in text
        assert f"default {EVALUATIONS['grid']}" in text


def test_nothing_found_exits_1(tmp_path):
    proc = run("submit", str(tmp_path / "nowhere"), str(tmp_path / "*.cif"))
    assert proc.returncode == 1 and "no structure file found" in proc.stderr
    assert "nowhere: no such file" in proc.stderr


def test_watch_screens_each_file_once_when_complete(server, tmp_path):
    root, out = tmp_path / "search", tmp_path / "watched.jsonl"
    root.mkdir()
    xtals = random_crystals(3)
    args = ["watch", str(root), "--server", server, "--out", str(out), "--spacing", SPACING, "--settle", "1.5",
            "--interval", "0.3"]
    env = {k: v for k, v in os.environ.items() if k != "ELFSCREEN_SERVER"}
    watcher = subprocess.Popen([sys.executable, "-m", "elfscreen.app.cli", *args, "--timeout", "12"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        (root / "gen1").mkdir()
        (root / "gen1" / "a.cif").write_text(xtals[0].to(fmt="cif"))
        slow = xtals[1].to(fmt="poscar").splitlines(keepends=True)
        with (root / "gen1" / "POSCAR_b").open("w") as f:  # written in two parts, as a slow writer does
            f.write("".join(slow[:6]))
            f.flush()
            time.sleep(0.8)
            f.write("".join(slow[6:]))
        _, stderr = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, stderr
    first = lines(out)
    assert sorted(r["name"] for r in first) == [str(root / "gen1" / "POSCAR_b"), str(root / "gen1" / "a.cif")]
    assert all(r["phi"] is not None for r in first)

    # a restart redoes nothing; a new file is screened, a broken one fails alone (exit 1)
    proc = run(*args, "--once")
    assert proc.returncode == 0 and lines(out) == first, proc.stderr
    (root / "gen2.res").write_text(airss(xtals[2], "H6-3"))
    (root / "bad.cif").write_text("data_bad\n")
    proc = run(*args, "--once")
    assert proc.returncode == 1, proc.stderr
    new = lines(out)[len(first):]
    assert {r["name"]: "error" in r for r in new} == {str(root / "gen2.res"): False, str(root / "bad.cif"): True}
    state = [json.loads(line)["file"] for line in (root / ".elfscreen-watch.jsonl").read_text().splitlines()]
    assert sorted(state) == ["bad.cif", "gen1/POSCAR_b", "gen1/a.cif", "gen2.res"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Record:
    """What ResultWriter needs of an outcome: its results line."""

    def __init__(self, record: dict):
        self.record = lambda: record


def test_csv_escapes_formulas_and_rank_shows_reduced_formula_and_warnings(tmp_path, capsys):
    from elfscreen.app.batch import ResultWriter, rank, read_results

    records = [{"file": "=cmd|' /C calc'!A0.cif", "index": None, "name": "-2+3", "formula": "H6S2", "reduced_formula": "H3S",
                "spacegroup": "Im-3m", "phi": 0.7, "phi_star": 0.7, "tc": {"value_k": 200.0, "raw_k": 200.0, "model": "belli2021"},
                "warnings": ["species S are ignored by the descriptor", "@odd"]},
               {"file": "b.cif", "index": None, "name": "b", "formula": "H8", "reduced_formula": "H2", "spacegroup": "Pa-3",
                "phi": 0.3, "phi_star": 0.9, "tc": {"value_k": 0.0, "raw_k": -10.0, "model": "belli2021"}, "warnings": []}]
    out = tmp_path / "r.csv"
    writer = ResultWriter(str(out))
    for record in records:
        writer.write(_Record(record))
    writer.close()
    rows = list(csv.reader(io.StringIO(out.read_text())))[1:]
    text_cells = [c for row in rows for c in row if not _is_number(c)]
    assert not [c for c in text_cells if c.startswith(("=", "+", "-", "@"))], text_cells
    back = read_results(str(out))  # the escaping is undone on reading
    assert [r["file"] for r in back] == ["=cmd|' /C calc'!A0.cif", "b.cif"] and back[0]["name"] == "-2+3"
    assert back[1]["tc_raw_k"] == -10.0  # numbers are not escaped
    assert rank(str(out), "tc", None) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "warnings" and first.split()[2] == "H3S" and second.split()[2] == "H2"
    assert first.endswith("species S are ignored by the descriptor | @odd") and second.endswith("-")
