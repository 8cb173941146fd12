"""Tests for model/dataset.py: structure generators, resumable generation, manifest, files.

Most tests replace the DFT step by a fake runner (a smooth synthetic ELF), so they run without QE;
one test runs the real pw.x/pp.x at a tiny cutoff when they are installed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from elfscreen.model.dataset import (
    FAMILIES,
    MIN_HH_A,
    GeneratorOptions,
    build_structure,
    entry_id,
    fluid_volume_per_atom,
    generate,
    h_volume_per_atom,
    load_entry,
    min_hh_distance,
    plan,
    read_jsonl,
    read_manifest,
    structure_hash,
    summary,
    summary_of,
)
from elfscreen.model.dft import DftError, DftSettings, qe_available
from elfscreen.model.prototypes import volume_guess
from elfscreen.model.structures import validate_structure
from elfscreen.model.volumetric import ElfGrid

SMALL = GeneratorOptions(crystal_atoms=(4, 8), crystal_small_atoms=(4, 8), fluid_atoms=(32, 34))


class FakeRunner:
    """Stands in for model.dft.elf_of: a Gaussian-sum 'ELF' in [0, 1) on an even grid."""

    def __init__(self, fail_ids=()):
        self.calls = []
        self.fail_ids = set(fail_ids)

    def __call__(self, structure, settings, workdir=None, relax_pressure_gpa=None, *, name="x"):
        self.calls.append(name)
        if name in self.fail_ids:
            raise DftError(name, "SCF did not converge in 1 iterations", {"failed_step": "scf", "scf": {"scf_converged": False}})
        shape = (12, 14, 16)
        f = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), axis=-1)
        values = np.zeros(shape)
        for site in structure:
            d = f - site.frac_coords
            d -= np.round(d)
            r2 = np.sum((d @ structure.lattice.matrix) ** 2, axis=-1)
            values += np.exp(-r2 / 0.3)
        values = 0.98 * values / (1.0 + values)
        record = {"qe_version": "fake", "settings": settings.to_dict(), "pseudopotentials": {"H": {"name": "fake"}},
                  "kmesh": [1, 1, 1], "pw_input": "fake", "pp_input": "fake",
                  "scf": {"scf_converged": True, "scf_iterations": 3, "wall_s": 0.1}, "pp": {"wall_s": 0.1},
                  "elf": {"shape": list(shape), "min": float(values.min()), "max": float(values.max())}, "rescaled": False}
        return ElfGrid(structure=structure, values=values, name=name), record


class StretchingRunner(FakeRunner):
    """A fake relaxation: the cell comes back with its third vector 10 % longer; records each start."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def __call__(self, structure, settings, workdir=None, relax_pressure_gpa=None, *, name="x"):
        self.starts.append(structure.copy())
        relaxed = Structure(Lattice(structure.lattice.matrix * np.array([[1.0], [1.0], [1.1]])), structure.species,
                            structure.frac_coords)
        return super().__call__(relaxed, settings, workdir, relax_pressure_gpa, name=name)


def test_prototype_entry_starts_from_its_prototype_relaxed_at_another_pressure(tmp_path):
    runner = StretchingRunner()
    generate(tmp_path, "hydride-prototype", 1000, options=replace(SMALL, prototypes=("MH4-I4/mmm",)),
             runner=runner, max_new=2)
    first, second = read_manifest(tmp_path)
    assert first["generator"]["substitution"] == second["generator"]["substitution"]
    assert "start" not in first["generator_result"]  # nothing relaxed before it: the prototype's guess
    assert second["generator_result"]["start"] == {"from": first["id"], "pressure_gpa": first["pressure_gpa"]}
    relaxed, start = load_entry(tmp_path / first["file"])[0], runner.starts[1]
    species = [site.specie.symbol for site in relaxed]
    ratio = volume_guess(species, second["pressure_gpa"]) / volume_guess(species, first["pressure_gpa"])
    assert start.volume == pytest.approx(relaxed.volume * ratio, rel=1e-9)
    assert np.allclose(start.frac_coords, relaxed.frac_coords)
    assert np.allclose(np.array(start.lattice.abc) / relaxed.lattice.abc, ratio ** (1 / 3))
    assert start.lattice.angles == pytest.approx(relaxed.lattice.angles)
    assert second["input_structure_hash"] != structure_hash(runner.starts[0])


def test_plan_is_deterministic_and_covers_the_families():
    plans = [plan("crystal", 0, i, relax_fraction=0.2) for i in range(70)]
    assert plans == [plan("crystal", 0, i, relax_fraction=0.2) for i in range(70)]
    assert {p["family"] for p in plans} == set(FAMILIES)
    assert {p["motif"] for p in plans} == {"atomic", "molecular"}
    assert all(4 <= p["n_atoms"] <= 48 and 2.0 <= p["volume_per_atom_a3"] <= 3.2 for p in plans)
    assert all(p["n_atoms"] % 2 == 0 for p in plans if p["motif"] == "molecular")
    assert any(p["relax_pressure_gpa"] == 100.0 for p in plans)
    assert all(plan("crystal", 1, i) != plan("crystal", 0, i) for i in range(10))  # another seed, other structures
    assert entry_id("crystal", 1, 0) != entry_id("crystal", 0, 0)


def test_element_filter_keeps_each_entrys_parameters_and_only_entries_with_the_elements():
    wanted = ("K", "Na")
    only = replace(GeneratorOptions(), elements=wanted)
    for kind in ("hydride-random", "hydride-prototype"):
        every = [plan(kind, 2, i, relax_fraction=0.0) for i in range(60)]
        kept = [plan(kind, 2, i, only, relax_fraction=0.0) for i in range(60)]
        chosen = [p for p in kept if p is not None]
        assert chosen and len(chosen) < len(every)
        for full, filtered in zip(every, kept):
            elements = set(full.get("species", full.get("substitution", [])))
            assert filtered == (full if elements & set(wanted) else None)


def test_command_line_element_filter_names_a_bad_element_or_kind(tmp_path, capsys):
    from elfscreen.app.cli import main

    for kind, elements, problem in (("hydride-random", "K,Xx", "unknown elements for hydride-random Xx; use some of Al, B"),
                                    ("hydride-prototype", "C", "unknown elements for hydride-prototype C"),
                                    ("hydride-random", ",", "no elements for hydride-random given"),
                                    ("crystal", "K", "only for the hydride kinds")):
        assert main(["dataset", "generate", "--out", str(tmp_path), "--kind", kind, "--count", "1",
                     "--elements", elements]) == 2
        assert problem in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_relaxed_crystals_meet_every_pressure_in_every_family_and_start_near_its_volume():
    options = GeneratorOptions()
    n = len(options.crystal_families) * len(options.relaxed_pressures_gpa)
    plans = [plan("crystal-relaxed", 0, i, options) for i in range(n)]
    assert {(p["family"], p["relax_pressure_gpa"]) for p in plans} == {
        (f, pressure) for f in options.crystal_families for pressure in options.relaxed_pressures_gpa}
    for p in plans:  # the crystal's draw (2.0–3.2 Å³/atom, centred on 2.6) scaled to the pressure's volume
        centre = h_volume_per_atom(p["relax_pressure_gpa"])
        assert 2.0 / 2.6 * centre - 1e-3 <= p["volume_per_atom_a3"] <= 3.2 / 2.6 * centre + 1e-3
        assert p["hh_tolerance_a"] <= options.crystal_hh_tolerance_a
    assert h_volume_per_atom(500.0) < h_volume_per_atom(150.0) < h_volume_per_atom(50.0)
    assert h_volume_per_atom(100.0) == pytest.approx(2.15)


def test_fluid_density_follows_the_pressure():
    assert fluid_volume_per_atom(100.0, 0.0) == pytest.approx(2.45)
    assert fluid_volume_per_atom(65.0, 0.0) == pytest.approx(2.8, abs=0.03)
    assert fluid_volume_per_atom(139.0) < fluid_volume_per_atom(76.0)


@pytest.mark.parametrize("index", [1, 2, 3, 5, 6])
def test_crystals_are_valid_at_the_target_volume(index):
    p = plan("crystal", 0, index, SMALL)
    s, info = build_structure("crystal", 0, index, p)
    validate_structure(s)
    assert min_hh_distance(s) >= MIN_HH_A
    assert info["n_atoms"] == len(s) and 4 <= len(s) <= 20
    assert s.volume / len(s) == pytest.approx(p["volume_per_atom_a3"], rel=1e-3)
    lo, hi = FAMILIES[p["family"]]
    assert lo <= info["space_group"] <= hi
    if p["motif"] == "molecular":
        d = s.distance_matrix + np.eye(len(s)) * 9
        assert np.isclose(d.min(axis=1), 0.74, atol=1e-3).all()  # every atom has its H2 partner


def test_fluid_snapshot_mixes_molecules_and_atoms():
    p = plan("fluid", 0, 0, SMALL)
    s, info = build_structure("fluid", 0, 0, p)
    assert len(s) == p["n_atoms"] == 2 * p["n_molecules"] + p["n_dissociated"]
    assert s.volume / len(s) == pytest.approx(p["volume_per_atom_a3"], rel=1e-6)
    assert min_hh_distance(s) >= MIN_HH_A
    assert len(info["bond_lengths_a"]) == p["n_molecules"] and np.std(info["bond_lengths_a"]) > 0


def test_generate_writes_files_and_manifest_and_resumes(tmp_path):
    runner = FakeRunner()
    out = tmp_path / "ds"
    counts = generate(out, "crystal", 2, seed=3, relax_fraction=0.0, options=SMALL, runner=runner)
    assert counts["done"] == 2 and counts["failed"] == 0 and len(runner.calls) == 2
    entries = read_manifest(out)
    assert {e["id"] for e in entries} == {entry_id("crystal", 3, 0), entry_id("crystal", 3, 1)}
    for e in entries:
        path = out / e["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == e["file_sha256"] and e["file_bytes"] == path.stat().st_size
        for key in ("structure_hash", "kind", "generator", "qe", "topology", "grid", "wall_s", "n_atoms"):
            assert key in e
        assert e["kind"] == "crystal" and e["qe"]["version"] == "fake" and e["qe"]["scf"]["scf_converged"]
        assert set(e["topology"]) >= {"phi", "phi_star", "phi_1d", "phi_2d"}
        assert e["grid"] == {**e["grid"], "stored_shape": [6, 7, 8], "full_shape": [12, 14, 16], "stride": 2, "dtype": "float16"}
        structure, grid = load_entry(path)
        assert structure_hash(structure) == e["structure_hash"]
        assert grid.shape == (6, 7, 8) and grid.values.dtype == np.float64
        with np.load(path) as z:
            assert z["elf"].dtype == np.float16 and int(z["stride"]) == 2
    # the stored grid is every second point of the full grid (no averaging)
    structure, grid = load_entry(out / entries[0]["file"])
    full, _ = FakeRunner()(structure, DftSettings(), name="again")
    assert np.allclose(grid.values, full.values[::2, ::2, ::2].astype(np.float16), atol=0)
    # a rerun does no new DFT; a larger count only adds the new ones
    again = FakeRunner()
    counts = generate(out, "crystal", 2, seed=3, relax_fraction=0.0, options=SMALL, runner=again)
    assert again.calls == [] and counts["skipped"] == 2 and counts["done"] == 0
    counts = generate(out, "crystal", 3, seed=3, relax_fraction=0.0, options=SMALL, runner=again)
    assert again.calls == [entry_id("crystal", 3, 2)] and len(read_manifest(out)) == 3
    assert summary(out)["entries"] == 3


def test_failed_runs_are_recorded_skipped_and_never_used(tmp_path):
    bad = entry_id("fluid", 0, 1)
    runner = FakeRunner(fail_ids=[bad])
    out = tmp_path / "fl"
    counts = generate(out, "fluid", 2, options=SMALL, runner=runner)
    assert counts["done"] == 1 and counts["failed"] == 1
    failed = read_jsonl(out / "failed.jsonl")
    assert [f["id"] for f in failed] == [bad] and "did not converge" in failed[0]["reason"]
    assert failed[0]["step"] == "scf" and failed[0]["record"]["scf"]["scf_converged"] is False
    assert bad not in {e["id"] for e in read_manifest(out)} and not (out / f"{bad}.npz").exists()
    again = FakeRunner()
    counts = generate(out, "fluid", 2, options=SMALL, runner=again)
    assert again.calls == [] and counts["skipped"] == 2
    assert summary(out)["failed"] == 1 and summary_of([out])["failed"] == 1
    # after a fix, --retry-failed runs it again: the entry is made, its failure stays as history
    fixed = FakeRunner()
    counts = generate(out, "fluid", 2, options=SMALL, runner=fixed, retry_failed=True)
    assert fixed.calls == [bad] and counts["done"] == 1 and counts["skipped"] == 1
    assert bad in {e["id"] for e in read_manifest(out)} and len(read_jsonl(out / "failed.jsonl")) == 1
    assert summary(out)["failed"] == 0 and summary_of([out])["failed"] == 0 and summary_of([out])["structures"] == 2


class FakeMd:
    """Stands in for model.dft.md: small random steps, a rising pressure."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def __call__(self, structure, temperature_k, nsteps, settings, *, name="x"):
        self.calls.append(name)
        if self.fail:
            raise DftError(name, "pw.x md stopped after 3 of 160 steps", {"step": "md"})
        rng = np.random.default_rng(len(self.calls))
        frames = [{"step": k, "temperature_k": temperature_k, "pressure_gpa": 100.0 + k,
                   "structure": Structure(structure.lattice, structure.species,
                                          structure.frac_coords + rng.normal(0, 1e-3, (len(structure), 3)))}
                  for k in range(1, nsteps + 1)]
        return frames, {"dt_fs": 0.7257, "ecutwfc_ry": 50.0, "qe_version": "fake"}


MD = replace(SMALL, md_steps=12, md_first_snapshot=4, md_snapshot_every=4)  # snapshots at 4, 8, 12


def test_md_snapshots_cycle_the_pressures_and_run_each_trajectory_once(tmp_path):
    fake = FakeMd()
    counts = generate(tmp_path, "fluid-md", 7, options=MD, runner=FakeRunner(), md_runner=fake)
    assert counts["done"] == 7 and fake.calls == ["md-s0-t0000", "md-s0-t0001", "md-s0-t0002"]
    entries = sorted(read_manifest(tmp_path), key=lambda e: e["index"])
    assert [e["generator"]["pressure_nominal_gpa"] for e in entries] == [76.0] * 3 + [115.0] * 3 + [139.0]
    assert [e["generator_result"]["step"] for e in entries] == [4, 8, 12] * 2 + [4]
    first = entries[0]
    assert first["generator_result"]["md_pressure_gpa"] == 104.0 and first["generator_result"]["time_fs"] == pytest.approx(2.9, abs=0.01)
    assert first["generator_result"]["trajectory_mean_pressure_gpa"] == pytest.approx(108.0)  # steps 4..12
    assert first["volume_per_atom_a3"] == pytest.approx(fluid_volume_per_atom(76.0), rel=1e-4)
    # snapshots of one trajectory differ; a rerun runs no MD and no DFT
    s0, _ = load_entry(tmp_path / entries[0]["file"])
    s1, _ = load_entry(tmp_path / entries[1]["file"])
    assert not np.allclose(s0.frac_coords, s1.frac_coords)
    again, runner = FakeMd(), FakeRunner()
    counts = generate(tmp_path, "fluid-md", 7, options=MD, runner=runner, md_runner=again)
    assert counts["skipped"] == 7 and again.calls == [] and runner.calls == []


def test_failed_md_trajectory_fails_its_snapshots_and_is_not_rerun(tmp_path):
    counts = generate(tmp_path, "fluid-md", 3, options=MD, runner=FakeRunner(), md_runner=FakeMd(fail=True))
    assert counts["failed"] == 3 and counts["done"] == 0
    failed = read_jsonl(tmp_path / "failed.jsonl")
    assert {f["step"] for f in failed} == {"md"} and all("trajectory failed" in f["reason"] or "stopped" in f["reason"] for f in failed)
    assert json.loads((tmp_path / "md" / "md-s0-t0000.json").read_text())["failed"]


def test_manifest_lines_are_json(tmp_path):
    generate(tmp_path, "crystal", 1, options=SMALL, runner=FakeRunner(), relax_fraction=0.0)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["index"] == 0


@pytest.mark.skipif(not qe_available(), reason="pw.x/pp.x (Debian quantum-espresso) not installed")
def test_real_dft_generation_is_resumable(tmp_path):
    tiny = DftSettings(ecutwfc=30.0, ecutrho=120.0)
    opts = replace(SMALL, crystal_atoms=(4, 6), crystal_small_atoms=(4, 6))
    counts = generate(tmp_path, "crystal", 2, settings=tiny, options=opts, relax_fraction=0.0)
    assert counts["done"] == 2 and counts["failed"] == 0, counts  # a failed DFT run is a failure here
    for e in read_manifest(tmp_path):
        assert e["qe"]["scf"]["scf_converged"] and e["qe"]["version"]
        assert "ecutwfc = 30.0" in e["qe"]["pw_input"]
        assert 0.0 <= e["elf"]["min"] and e["elf"]["max"] <= 1.0 and e["topology"]["phi"] is not None
        _, grid = load_entry(tmp_path / e["file"])
        assert 0.0 <= grid.values.min() and grid.values.max() <= 1.0

    def no_dft(*args, **kwargs):
        raise AssertionError("a rerun must not run DFT again")

    counts = generate(tmp_path, "crystal", 2, settings=tiny, options=opts, relax_fraction=0.0, runner=no_dft)
    assert counts["skipped"] == 2 and counts["done"] == 0


def test_command_line_summary_and_bad_kind(tmp_path, capsys):
    from elfscreen.app.cli import main

    generate(tmp_path, "crystal", 1, options=SMALL, runner=FakeRunner(), relax_fraction=0.0)
    assert main(["dataset", "summary", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    with pytest.raises(SystemExit):
        main(["dataset", "generate", "--out", str(tmp_path), "--kind", "gas", "--count", "1"])
