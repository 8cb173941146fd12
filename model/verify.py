"""DFT verification of one screened structure: the science, as one pure function.

structure → :func:`elfscreen.model.dft.elf_of` at the dataset settings (norm-conserving, H_DOS by
projwfc.x) → :func:`elfscreen.model.pipeline.grid_topology` on the DFT grid → the ``dft`` block and
``delta_phi`` (DFT φ − ML φ). Pure-H structures use the pure-H dataset settings (``DftSettings()``),
hydrides :data:`HYDRIDE_SETTINGS`; ``ELFSCREEN_VERIFY_ECUTWFC`` (Ry) lowers the cutoff for cheap tests
(ecutrho follows at the same ratio). Called alike by the embedded pool, the Celery ``dft`` task and
``elfscreen verify``.
"""
from __future__ import annotations

import dataclasses
import os
import time

from pymatgen.core import Structure

from elfscreen.model import __version__
from elfscreen.model.dft import HYDRIDE_SETTINGS, DftSettings, elf_of
from elfscreen.model.volumetric import ElfGrid


def verify_settings(structure: Structure) -> tuple[str, DftSettings]:
    """The dataset settings for ``structure`` (name, settings), with H_DOS on and the env cutoff override."""
    pure_h = {e.symbol for e in structure.composition.elements} == {"H"}
    name, settings = ("pure-h", DftSettings()) if pure_h else ("hydride", HYDRIDE_SETTINGS)
    settings = dataclasses.replace(settings, h_dos=True)
    override = os.environ.get("ELFSCREEN_VERIFY_ECUTWFC")
    if override:
        ecut = float(override)
        settings = dataclasses.replace(settings, ecutwfc=ecut, ecutrho=ecut * settings.ecutrho / settings.ecutwfc)
        name += f"@ecutwfc={ecut:g}"
    return name, settings


def verify(structure: Structure, ml_phi: float | None = None, *, name: str = "structure",
           workdir=None) -> tuple[ElfGrid, dict]:
    """DFT ELF and its topology for ``structure``: (DFT grid, ``{"dft": {...}, "delta_phi": ...}``).

    ``dft`` holds phi, phi_star, phi_1d, phi_2d, h_dos, insulator, tc (None for an insulator), grid,
    settings, code_version, cpu_seconds and wall_seconds; ``delta_phi`` is DFT φ − ``ml_phi`` (None without an ML φ). Raises DftError.
    """
    from elfscreen.model.pipeline import grid_topology

    start = time.monotonic()
    settings_name, settings = verify_settings(structure)
    grid, record = elf_of(structure, settings, workdir, name=name)
    h_dos = (record.get("h_dos") or {}).get("value")
    insulator = bool((record.get("h_dos") or {}).get("insulator"))
    result = grid_topology(grid, source="dft", h_dos=h_dos, rescaled_qe=bool(record.get("rescaled")))
    r = result.model_dump(mode="json")
    # An insulator at the DFT level has no Tc: Belli's φ–Tc relation holds for metals only.
    dft = {"phi": r["phi"], "phi_star": r["phi_star"], "phi_1d": r["phi_1d"], "phi_2d": r["phi_2d"],
           "h_dos": h_dos, "insulator": insulator, "tc": None if insulator else r["tc"], "grid": r.get("grid"),
           "settings": {"name": settings_name, **settings.to_dict()},
           "code_version": {"elfscreen": __version__, "qe": record.get("qe_version")},
           "cpu_seconds": record.get("cpu_s"), "wall_seconds": round(time.monotonic() - start, 2)}
    delta = None if ml_phi is None or dft["phi"] is None else dft["phi"] - ml_phi
    return grid, {"dft": dft, "delta_phi": delta}
