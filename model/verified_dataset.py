"""The flywheel: verified structures (ML screening + DFT verification) written as a training dataset.

A verification (:func:`elfscreen.model.verify.verify`) leaves a DFT ELF grid and its ``dft`` block (φ, φ*,
H_DOS, settings, code versions) next to the ML result of a screening. :func:`export_verified` writes each
such structure in the layout of :mod:`elfscreen.model.dataset` — ``DIR/<id>.npz`` (float16 ELF, lattice,
species, fractional coordinates; :func:`~elfscreen.model.dataset.write_npz`) and one line of
``DIR/manifest.jsonl`` — so ``elfscreen train`` and ``elfscreen evaluate`` read it like any generated
folder. The manifest line carries the fields training reads (``id``, ``kind`` = ``verified``, ``file``,
``file_sha256``, ``h_dos`` as ``{"value": …}`` for the H_DOS model, ``topology`` with the DFT φ, φ*,
φ_1d, φ_2d), the DFT settings and code versions of the verification, and under ``screening`` what the
model said before DFT (job id, model version, φ, φ*, σφ, Tc) so the model's real-world error can be
read off the manifest alone.

An entry's id is ``verified-`` + 16 hex of SHA-256 over the structure hash
(:func:`~elfscreen.model.dataset.structure_hash`) and the DFT settings name: the same crystal verified at
the same settings twice (two jobs) is written once, and a rerun into the same folder adds only new ones.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from elfscreen.model import __version__
from elfscreen.model.dataset import (
    DATASET_FORMAT,
    append_jsonl,
    min_hh_distance,
    read_manifest,
    structure_hash,
    utc_now,
    write_npz,
)
from elfscreen.model.errors import InputError
from elfscreen.model.volumetric import ElfGrid

KIND = "verified"
DFT_KEYS = ("phi", "phi_star", "phi_1d", "phi_2d", "h_dos", "settings")


@dataclass(frozen=True)
class VerifiedStructure:
    """One verified structure: the screened structure, its DFT ELF values (on the structure's cell,
    ``dft_values[i, j, k]`` at fractional ``(i/n1, j/n2, k/n3)``), the ``dft`` block of
    :func:`~elfscreen.model.verify.verify`, and the screening's ML result (the ``screen`` object)."""

    job_id: str
    name: str
    structure: Structure
    dft_values: np.ndarray
    dft: dict
    ml_result: dict


def verified_id(structure: Structure, settings_name: str) -> str:
    """The dataset id of ``structure`` verified at the DFT settings named ``settings_name``."""
    key = f"{structure_hash(structure)} {settings_name}"
    return f"{KIND}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def manifest_entry(item: VerifiedStructure, eid: str, grid: ElfGrid, file_info: tuple[int, str, list[int]],
                   stride: int) -> dict:
    """The manifest line of one exported structure (``grid``: its whole DFT grid; ``file_info``: the
    file's size, SHA-256 and stored shape)."""
    s, dft, ml = item.structure, item.dft, item.ml_result
    size, sha, stored_shape = file_info
    settings = dict(dft["settings"])
    h_dos = dft.get("h_dos")
    uncertainty = ml.get("uncertainty") or {}
    return {
        "id": eid, "kind": KIND, "seed": None, "index": None,
        "generator": {"source": "elfscreen verification (DFT of a screened structure)", "job_id": item.job_id,
                      "name": item.name, "relax_pressure_gpa": None},
        "elfscreen_version": __version__, "dataset_format": DATASET_FORMAT, "created": utc_now(),
        "structure_hash": structure_hash(s), "n_atoms": len(s),
        "volume_per_atom_a3": round(s.volume / len(s), 5), "min_hh_a": round(min_hh_distance(s), 4),
        "species": sorted({site.specie.symbol for site in s}), "formula": s.composition.reduced_formula,
        "h_fraction": round(sum(site.specie.symbol == "H" for site in s) / len(s), 5),
        "relaxed": False, "pressure_gpa": None,
        "h_dos": None if h_dos is None else {"value": h_dos, "source": "elfscreen verify (projwfc.x; 1 for pure H)"},
        "cpu_s": dft.get("cpu_seconds"), "wall_s": dft.get("wall_seconds"),
        "file": f"{eid}.npz", "file_sha256": sha, "file_bytes": size,
        "grid": {"stored_shape": stored_shape, "full_shape": list(grid.shape), "stride": stride,
                 "subsampling": "every stride-th point of the DFT grid (no averaging)" if stride > 1 else "none",
                 "dtype": "float16", "spacing_full_a": [round(x, 5) for x in grid.spacing_a]},
        "topology": {"phi": dft["phi"], "phi_star": dft["phi_star"], "phi_1d": dft["phi_1d"], "phi_2d": dft["phi_2d"],
                     "grid": "full-resolution DFT grid of the verification (elfscreen verify, refined)"},
        "qe": {"version": (dft.get("code_version") or {}).get("qe"), "settings": settings},
        "dft_tc": dft.get("tc"),
        "code_version": dft.get("code_version"),
        "screening": {"job_id": item.job_id, "model_version": (ml.get("provenance") or {}).get("model_version"),
                      "phi": ml.get("phi"), "phi_star": ml.get("phi_star"), "phi_std": uncertainty.get("phi_std"),
                      "tc_k": (ml.get("tc") or {}).get("value_k"),
                      "delta_phi": None if ml.get("phi") is None or dft["phi"] is None else dft["phi"] - ml["phi"]},
    }


DATASET_SETTINGS = ("pure-h", "hydride")  # model.verify's names of the dataset settings (not lowered for tests)


def export_verified(out_dir: str | Path, items: Iterable[VerifiedStructure], stride: int = 1,
                    progress: Callable[[dict], None] | None = None, *, any_settings: bool = False) -> dict:
    """Write every verified structure of ``items`` into the dataset folder ``out_dir`` (created if needed):
    one ``.npz`` (every ``stride``-th DFT grid point per axis; 1 keeps the whole grid) and one manifest
    line each. Structures already in the folder (same :func:`verified_id`) are skipped; so are, unless
    ``any_settings``, verifications not run at the dataset settings (:data:`DATASET_SETTINGS`; e.g. a
    cutoff lowered by ``ELFSCREEN_VERIFY_ECUTWFC``, whose ELF is not training data). Returns counts
    ``written``, ``skipped`` and ``other_settings``; ``progress`` is called with each id and what happened to
    it. Raises :class:`~elfscreen.model.errors.InputError` for a record without its DFT grid or ``dft`` block."""
    if stride < 1:
        raise InputError("--stride", f"must be at least 1, not {stride}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    have = {e["id"] for e in read_manifest(out) if (out / e.get("file", "")).is_file()}
    counts = {"written": 0, "skipped": 0, "other_settings": 0}
    for item in items:
        missing = [k for k in DFT_KEYS if k not in (item.dft or {})]
        if missing or item.dft_values is None:
            raise InputError(item.name, f"job {item.job_id}: the verification lacks "
                             f"{', '.join(missing) if missing else 'its DFT grid'}")
        settings_name = item.dft["settings"]["name"]
        eid = verified_id(item.structure, settings_name)
        left_out = "skipped" if eid in have else None
        if left_out is None and not any_settings and settings_name not in DATASET_SETTINGS:
            left_out = "other_settings"
        if left_out:
            counts[left_out] += 1
            if progress:
                progress({"id": eid, "job_id": item.job_id, "status": left_out})
            continue
        grid = ElfGrid(item.structure, np.asarray(item.dft_values, dtype=np.float64), item.name)
        info = write_npz(out / f"{eid}.npz", grid, stride, eid)
        append_jsonl(out / "manifest.jsonl", manifest_entry(item, eid, grid, info, stride))
        have.add(eid)
        counts["written"] += 1
        if progress:
            progress({"id": eid, "job_id": item.job_id, "status": "written"})
    return counts
