"""From an input to a :class:`~model.result.ScreeningResult`: the one path the CLI, API and workers share."""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path


from model.errors import GridError
from model.result import GridInfo, ScreeningResult, build_result
from model.tc import estimate_tc
from model.topology import analyze
from model.volumetric import ElfGrid, guess_grid_format, read_grid

COARSE_GRID_A = 0.15  # Å; coarser grids get a warning (the sweep's resolution error grows with spacing)


def example_path(name: str) -> Path:
    """Path of a shipped example ELF grid, e.g. ``h2_molecular_cubic`` (see :func:`examples`)."""
    path = Path(str(resources.files("model") / "examples" / f"{name}.ELF.cube.gz"))
    if not path.exists():
        raise GridError(name, f"is not a shipped example; choose one of {', '.join(examples())}")
    return path


def examples() -> list[str]:
    folder = resources.files("model") / "examples"
    return sorted(p.name.removesuffix(".ELF.cube.gz") for p in folder.iterdir() if p.name.endswith(".ELF.cube.gz"))


def grid_topology(grid: ElfGrid, *, source: str, h_dos: float | None = None, tc_model: str = "belli2021",
                  refine: bool = True, min_persistence: float = 0.005, rescaled_qe: bool = False,
                  timings_s: dict[str, float] | None = None) -> ScreeningResult:
    """Topology, Tc and provenance of an ELF grid (values must be ELF, in [0, 1])."""
    lo, hi = float(grid.values.min()), float(grid.values.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise GridError(grid.name, f"values span {lo:.4g}…{hi:.4g}, outside [0, 1]: not an ELF (a CHGCAR or density?)")
    timings = dict(timings_s or {})
    start = time.perf_counter()
    topo = analyze(grid, refine=refine, min_persistence=min_persistence)
    timings["topology"] = time.perf_counter() - start
    tc = estimate_tc(topo.phi, topo.h_fraction, h_dos, tc_model, topo.phi_star)
    warnings = []
    if topo.n_h == 0:
        warnings.append("the structure holds no hydrogen: φ* and H_f are not meaningful")
    spacing = grid.spacing_a
    if max(spacing) > COARSE_GRID_A:
        warnings.append(f"grid spacing up to {max(spacing):.3f} Å is coarser than the recommended {COARSE_GRID_A} Å")
    timings["total"] = sum(timings.values())
    info = GridInfo(shape=list(grid.shape), spacing_a=[round(s, 6) for s in spacing], source=source, rescaled_qe=rescaled_qe)
    options = {"connectivity": 6, "refine": refine, "interpolant": "fourier" if refine else None,
               "min_persistence": min_persistence, "attractor_radius_bohr": 0.7}
    return build_result(grid.name, grid.structure, topo, tc, info, timings, options, warnings)


def topology_from_file(path: str | Path, fmt: str | None = None, *, rescale_qe: bool = False, **options) -> ScreeningResult:
    """Read an ELF grid file (cube or ELFCAR, optionally gzipped) and analyse it; see :func:`grid_topology`."""
    start = time.perf_counter()
    fmt = fmt or guess_grid_format(Path(path).name)
    grid = read_grid(path, fmt, rescale_qe=rescale_qe)
    parse = time.perf_counter() - start
    return grid_topology(grid, source=f"file:{fmt}", rescaled_qe=rescale_qe, timings_s={"parse": parse}, **options)


__all__ = ["example_path", "examples", "grid_topology", "topology_from_file"]
