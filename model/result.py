"""The screening result: one pydantic object for the CLI, the API, the client and the dashboard.

Field names and units are a contract (``../shared/notes/result-schema.md``): add fields, never rename.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from pydantic import BaseModel, Field
from pymatgen.core import Structure

from elfscreen.model import __version__
from elfscreen.model.tc import TcEstimate
from elfscreen.model.topology import Topology

SCHEMA_VERSION = "1.0"
SYMPREC = 0.1  # Å, for the space group reported


class HDos(BaseModel):
    value: float
    assumed: bool = Field(description="true when H_DOS was neither given nor predicted for a compound (source 'assumed')")
    std: Optional[float] = Field(None, description="σ of H_DOS: calibrated for 'model', 0 for 'definition', null when unknown")
    source: str = Field("assumed", description="'user' (given), 'model' (predicted from the geometry), "
                                                "'definition' (pure hydrogen: 1) or 'assumed' (1, so Tc is an upper bound)")


class Tc(BaseModel):
    model: str
    formula: str
    value_k: Optional[float] = Field(description="Tc estimate in K, ≥ 0; null when φ is undefined")
    raw_k: Optional[float] = Field(description="the relation's raw value in K; negative means not superconducting")
    note: Optional[str] = None


class GridInfo(BaseModel):
    shape: list[int]
    spacing_a: list[float]
    source: str = Field(description="where the ELF came from, e.g. 'file:cube' or 'predicted'")
    rescaled_qe: bool = False


class Provenance(BaseModel):
    elfscreen_version: str = __version__
    model_version: Optional[str] = Field(None, description="ELF model version; null when the ELF came from a file")
    descriptor: Optional[dict[str, Any]] = None
    grid: GridInfo
    device: str = "cpu"
    symprec_a: float = SYMPREC
    topology: dict[str, Any]
    timings_s: dict[str, float]


class ScreeningResult(BaseModel):
    schema_version: str = SCHEMA_VERSION
    name: str
    formula: str = Field(description="the cell's formula, every atom counted, e.g. 'H6S2'")
    reduced_formula: str = Field(description="the formula per formula unit, e.g. 'H3S'")
    n_atoms: int
    n_h: int
    spacegroup: str
    volume_per_atom_a3: float
    phi: Optional[float] = Field(description="networking value, unrounded")
    phi_star: Optional[float] = Field(description="molecularity index, unrounded")
    phi_1d: Optional[float]
    phi_2d: Optional[float]
    thresholds_grid: dict[str, Optional[float]] = Field(description="the same four values on the raw grid, before refinement")
    h_fraction: float
    h_dos: HDos
    phi_dos: Optional[float]
    tc: Tc
    uncertainty: Optional[dict[str, Any]] = None
    bottleneck: Optional[dict[str, Any]]
    molecular_bottleneck: Optional[dict[str, Any]]
    critical_points: dict[str, Any]
    grid: GridInfo
    warnings: list[str] = []
    provenance: Provenance


def spacegroup_symbol(structure: Structure) -> str:
    try:
        # spglib itself, as pymatgen's SpacegroupAnalyzer (same tolerances) calls it: that module imports scipy (~0.2 s)
        import spglib

        cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
        return spglib.get_symmetry_dataset(cell, symprec=SYMPREC, angle_tolerance=5.0).international
    except Exception:  # spglib can fail on pathological cells; the rest of the result still stands
        return "unknown"


def build_result(name: str, structure: Structure, topology: Topology, tc: TcEstimate, grid: GridInfo,
                 timings_s: dict[str, float], topology_options: dict[str, Any], warnings: list[str] = (),
                 uncertainty: dict[str, float] | None = None, model_version: str | None = None, descriptor: dict | None = None, device: str = "cpu") -> ScreeningResult:
    """Assemble the result object from the pieces the pipeline computed."""
    cps = topology.critical_points
    return ScreeningResult(
        name=name,
        formula=structure.composition.formula.replace(" ", ""),
        reduced_formula=structure.composition.reduced_formula,
        n_atoms=len(structure),
        n_h=topology.n_h,
        spacegroup=spacegroup_symbol(structure),
        volume_per_atom_a3=structure.volume / len(structure),
        phi=topology.phi,
        phi_star=topology.phi_star,
        phi_1d=topology.phi_1d,
        phi_2d=topology.phi_2d,
        thresholds_grid=topology.thresholds_grid,
        h_fraction=topology.h_fraction,
        h_dos=HDos(value=tc.h_dos, assumed=tc.h_dos_assumed, std=tc.h_dos_std, source=tc.h_dos_source),
        phi_dos=tc.phi_dos,
        tc=Tc(model=tc.model, formula=tc.formula, value_k=tc.value_k, raw_k=tc.raw_k, note=tc.note),
        uncertainty=uncertainty,
        bottleneck=None if topology.bottleneck is None else asdict(topology.bottleneck),
        molecular_bottleneck=None if topology.molecular_bottleneck is None else asdict(topology.molecular_bottleneck),
        critical_points={**cps, "points": [asdict(p) for p in cps["points"]]},
        grid=grid,
        warnings=list(warnings) + topology.warnings + ([tc.note] if tc.note else []),
        provenance=Provenance(model_version=model_version, descriptor=descriptor, grid=grid, device=device,
                              topology=topology_options, timings_s={k: round(v, 4) for k, v in timings_s.items()}),
    )
