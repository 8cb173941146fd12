"""From an input to a :class:`~elfscreen.model.result.ScreeningResult`: the one path the CLI, API and workers share."""
from __future__ import annotations

import os
import threading
import time
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elfscreen.model.calibration import calibrate, domain_flags
from elfscreen.model.errors import GridError, InputError
from elfscreen.model.hdos_model import h_dos_for
from elfscreen.model.result import GridInfo, ScreeningResult, build_result
from elfscreen.model.structures import check_species
from elfscreen.model.tc import estimate_tc, tc_sensitivity
from elfscreen.model.topology import Topology, analyze, values_at_events
from elfscreen.model.volumetric import ElfGrid, guess_grid_format, read_grid

if TYPE_CHECKING:  # torch is imported by the functions that predict, never by a grid's topology
    from elfscreen.model.network import ElfModel
    from elfscreen.model.predict import Prediction

COARSE_GRID_A = 0.15  # Å; coarser grids get a warning (the sweep's resolution error grows with spacing)


def example_path(name: str) -> Path:
    """Path of a shipped example ELF grid, e.g. ``h2_molecular_cubic`` (see :func:`examples`)."""
    path = Path(str(resources.files("elfscreen.model") / "examples" / f"{name}.ELF.cube.gz"))
    if not path.exists():
        raise GridError(name, f"is not a shipped example; choose one of {', '.join(examples())}")
    return path


def examples() -> list[str]:
    folder = resources.files("elfscreen.model") / "examples"
    return sorted(p.name.removesuffix(".ELF.cube.gz") for p in folder.iterdir() if p.name.endswith(".ELF.cube.gz"))


def grid_topology(grid: ElfGrid, *, source: str, h_dos: float | None = None, tc_model: str = "belli2021",
                  refine: bool = True, min_persistence: float = 0.005, rescaled_qe: bool = False,
                  timings_s: dict[str, float] | None = None, warnings: list[str] = (),
                  members: np.ndarray | None = None, model: ElfModel | None = None, device: str = "cpu",
                  field=None, refine_listed: bool = True) -> ScreeningResult:
    """Topology, Tc and provenance of an ELF grid (values must be ELF, in [0, 1]). ``members`` (M, N1, N2, N3):
    the ensemble members' ELF when ``grid`` is their mean, for the uncertainty (:func:`member_spread`).
    ``field``: the continuous field events are refined on (default the grid's Fourier interpolant);
    ``refine_listed``: whether the listed critical points are refined (:func:`~elfscreen.model.topology.analyze`)."""
    lo, hi = float(grid.values.min()), float(grid.values.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise GridError(grid.name, f"values span {lo:.4g}…{hi:.4g}, outside [0, 1]: not an ELF (a CHGCAR or density?)")
    timings = dict(timings_s or {})
    start = time.perf_counter()
    topo = analyze(grid, refine=refine, min_persistence=min_persistence, field=field, refine_listed=refine_listed)
    timings["topology"] = time.perf_counter() - start
    tc = estimate_tc(topo.phi, topo.h_fraction, h_dos, tc_model, topo.phi_star)
    uncertainty = None
    if members is not None and len(members) > 1:
        start = time.perf_counter()
        uncertainty = member_spread(grid, members, topo, h_dos=h_dos, tc_model=tc_model, refine=refine)
        timings["uncertainty"] = time.perf_counter() - start
    warnings = list(warnings)
    if topo.n_h == 0:
        warnings.append("the structure holds no hydrogen: φ* and H_f are not meaningful")
    spacing = grid.spacing_a
    if max(spacing) > COARSE_GRID_A:
        warnings.append(f"grid spacing up to {max(spacing):.3f} Å is coarser than the recommended {COARSE_GRID_A} Å")
    timings["total"] = sum(timings.values())
    info = GridInfo(shape=list(grid.shape), spacing_a=[round(s, 6) for s in spacing], source=source, rescaled_qe=rescaled_qe)
    options = {"connectivity": 6, "refine": refine, "interpolant": (("fourier" if field is None else "model") if refine else None),
               "listed_refined": refine and refine_listed,
               "min_persistence": min_persistence, "attractor_radius_bohr": 0.7}
    return build_result(grid.name, grid.structure, topo, tc, info, timings, options, warnings, uncertainty=uncertainty,
                        model_version=None if model is None else model.model_version,
                        descriptor=None if model is None else model.descriptor.to_dict(), device=device)


def topology_from_file(path: str | Path, fmt: str | None = None, *, rescale_qe: bool = False, **options) -> ScreeningResult:
    """Read an ELF grid file (cube or ELFCAR, optionally gzipped) and analyse it; see :func:`grid_topology`."""
    start = time.perf_counter()
    fmt = fmt or guess_grid_format(Path(path).name)
    grid = read_grid(path, fmt, rescale_qe=rescale_qe)
    parse = time.perf_counter() - start
    return grid_topology(grid, source=f"file:{fmt}", rescaled_qe=rescale_qe, timings_s={"parse": parse}, **options)


__all__ = ["example_path", "examples", "grid_topology", "topology_from_file"]


WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "elf-mh.pt"  # species-aware (H + 18 elements) since 0.12.0; elf-h.pt (H only) by name


class NoModelError(InputError):
    """No trained ELF model is installed or the one named cannot be used."""

    code = "no_model"


def model_path(path: str | Path | None = None) -> Path:
    """``path``, else ``$ELFSCREEN_MODEL``, else the default checkpoint shipped in ``model/weights/``. A
    bare name that is no file here but names a shipped checkpoint (``elf-h``, ``elf-mh``, with or
    without ``.pt``) means that checkpoint."""
    chosen = Path(path or os.environ.get("ELFSCREEN_MODEL") or WEIGHTS_DIR / DEFAULT_MODEL)
    shipped = WEIGHTS_DIR / (chosen.name if chosen.suffix == ".pt" else f"{chosen.name}.pt")
    if not chosen.exists() and chosen.parent == Path(".") and shipped.exists():
        return shipped
    return chosen


def load_model(path: str | Path | None = None, device: str | None = None) -> ElfModel:
    """The ELF model at :func:`model_path` (``path``, ``$ELFSCREEN_MODEL`` or the shipped one). Sizes the
    thread pools (:func:`~elfscreen.model.threads.configure_threads`: the count chosen before, else the
    usable cores or ``$ELFSCREEN_THREADS``)."""
    from elfscreen.model.network import CheckpointError, ElfModel
    from elfscreen.model.threads import configure_threads

    # torch is imported now: its pools get this process's count, chosen here (model.threads) when the
    # caller is a library user who never chose one, so that they never exceed the usable cores
    configure_threads()
    path = model_path(path)
    if not path.exists():
        if path.parent == WEIGHTS_DIR:
            raise NoModelError(path.name, "no trained ELF model is installed with elfscreen yet; pass --model CHECKPOINT "
                               "(`elfscreen topology` works on DFT ELF files without one)")
        raise NoModelError(path.name, "checkpoint file not found")
    try:
        return ElfModel.load(path, device=device or "cpu")
    except CheckpointError as exc:
        raise NoModelError(path.name, str(exc).split(": ", 1)[-1]) from exc


_model_lock = threading.Lock()


@lru_cache(maxsize=1)
def _cached_model(device: str | None) -> tuple[ElfModel, str]:
    from elfscreen.model.network import file_sha256

    path = model_path()
    model = load_model(None, device)
    return model, f"{model.model_version}:{file_sha256(path)[:16]}"


def get_model(device: str | None = None) -> tuple[ElfModel, str]:
    """The ELF model of this process (:func:`model_path`) and its identity (version and checkpoint hash),
    loaded on first use and kept. Raises :class:`NoModelError` when none is installed."""
    with _model_lock:
        return _cached_model(device)


def forget_model() -> None:
    """Drop the kept model: the next :func:`get_model` loads :func:`model_path` again (tests)."""
    _cached_model.cache_clear()


def screen_structure(structure, name: str, model: ElfModel, *, shape=None, spacing_a: float | None = None,
                     device: str | None = None, timings_s: dict | None = None, adaptive: bool = False,
                     fast: bool = False, **options) -> ScreeningResult:
    """Predict the ELF of ``structure`` and screen it: φ, φ*, Tc, ensemble uncertainty, provenance.
    ``spacing_a`` defaults to :data:`~elfscreen.model.options.DEFAULT_SPACING_A`; ``options`` are those of
    :func:`screen_prediction`. ``adaptive``: the answer of the grid ``shape`` or ``spacing_a`` (default
    :data:`~elfscreen.model.options.FINE_SPACING_A`) from a twice coarser one; ``fast``: the events of
    the grid ``shape`` or ``spacing_a`` (default ``FAST_SPACING_A``) with the whole ensemble only near them;
    both by :func:`screen_adaptive`."""
    from elfscreen.model.options import DEFAULT_SPACING_A
    from elfscreen.model.predict import predict_grid

    check_model_species(structure, model, name)  # before the costly part: a refused structure costs nothing
    if adaptive and fast:
        raise ValueError("choose one of adaptive and fast")
    if adaptive or fast:
        return screen_adaptive(structure, name, model, shape=shape, spacing_a=spacing_a, device=device,
                               timings_s=timings_s, fast=fast, **options)
    pred = predict_grid(structure, model, shape=shape, spacing_a=DEFAULT_SPACING_A if spacing_a is None else spacing_a, device=device, name=name)
    return screen_prediction(pred, model, timings_s=timings_s, **options)


def screen_adaptive(structure, name: str, model: ElfModel, *, shape=None, spacing_a: float | None = None,
                    device: str | None = None, timings_s: dict | None = None, h_dos: float | None = None,
                    tc_model: str = "belli2021", refine: bool = True, min_persistence: float = 0.005,
                    fast: bool = False) -> ScreeningResult:
    """The screening of a grid by adaptive evaluation (:mod:`~elfscreen.model.adaptive`), events refined
    on the model's own ELF. Default (``fast`` False): the fine grid (``shape``, or ``spacing_a``, default
    0.05 Å) from a grid twice as coarse, the ensemble spread read on the coarse grid (its members at the
    coarse grid's critical points). ``fast``: the grid (default ``FAST_SPACING_A``) with one member
    everywhere and the whole ensemble where the certificate needs it; the spread from the members near
    the events."""
    from elfscreen.model.adaptive import COARSE_RATIO, ModelField, adaptive_grid, member_estimate_grid
    from elfscreen.model.options import FAST_SPACING_A, FINE_SPACING_A
    from elfscreen.model.predict import grid_shape

    default_spacing = FAST_SPACING_A if fast else FINE_SPACING_A
    target = tuple(shape) if shape is not None else grid_shape(structure, spacing_a or default_spacing)
    if fast:
        ag = member_estimate_grid(structure, model, target, device=device, name=name)
    else:
        coarse_spacing = COARSE_RATIO * max(a / n for a, n in zip(structure.lattice.abc, target))
        ag = adaptive_grid(structure, model, coarse_spacing_a=coarse_spacing, fine_shape=target, device=device,
                           name=name)
    timings = {**(timings_s or {}), **{f"adaptive_{k}": v for k, v in ag.timings_s.items()}}
    flags = domain_flags(structure, model.meta)
    h_dos = h_dos_for(structure, h_dos, model.meta.get("hdos_model"))
    spread_here = fast and len(model.members) > 1
    result = grid_topology(ag.grid, source="predicted-fast" if fast else "predicted-adaptive", h_dos=h_dos,
                           tc_model=tc_model, refine=refine, min_persistence=min_persistence, timings_s=timings,
                           warnings=flags + ([] if ag.certified else ["adaptive evaluation not certified"]),
                           members=ag.estimate.members if spread_here else None, model=model,
                           device=ag.estimate.device, field=ModelField(structure, model) if refine else None,
                           refine_listed=not fast)
    uncertainty = result.uncertainty
    if spread_here:
        uncertainty["method"] = "members at the mean's critical points (fast: members exact near the events)"
    elif len(model.members) > 1:
        uncertainty = member_spread(ag.estimate.grid, ag.estimate.members, ag.estimate_topology, h_dos=h_dos,
                                    tc_model=tc_model, refine=refine)
        uncertainty["method"] = "members at the coarse grid's critical points (adaptive)"
    result.uncertainty = calibrate(uncertainty, model.meta.get("calibration"), flags,
                                   tc_sensitivity(result.phi, result.h_fraction, h_dos, tc_model, result.phi_star),
                                   result.h_dos.std)
    result.provenance.topology["adaptive"] = ag.summary()
    return result


def screen_prediction(pred: Prediction, model: ElfModel, *, h_dos: float | None = None, tc_model: str = "belli2021",
                      refine: bool = True, min_persistence: float = 0.005, timings_s: dict | None = None) -> ScreeningResult:
    """Screen a predicted grid (from :func:`~elfscreen.model.predict.predict_grid` with ``model``): the
    mean's topology, and the members' spread from :func:`member_spread`."""
    structure = pred.grid.structure
    check_model_species(structure, model, pred.grid.name)
    timings = {**(timings_s or {}), **pred.timings_s}
    flags = domain_flags(structure, model.meta)
    h_dos = h_dos_for(structure, h_dos, model.meta.get("hdos_model"))
    result = grid_topology(pred.grid, source="predicted", h_dos=h_dos, tc_model=tc_model, refine=refine,
                           min_persistence=min_persistence, timings_s=timings, warnings=flags,
                           members=pred.members if len(model.members) > 1 else None, model=model, device=pred.device)
    result.uncertainty = calibrate(result.uncertainty, model.meta.get("calibration"), flags,
                                   tc_sensitivity(result.phi, result.h_fraction, h_dos, tc_model, result.phi_star),
                                   result.h_dos.std)
    return result


def check_model_species(structure, model: ElfModel, name: str) -> None:
    """Refuse (:class:`~elfscreen.model.errors.UnsupportedElementError`) a structure with elements
    ``model``'s descriptor does not see, naming them, the supported ones and the model needed."""
    check_species(structure, tuple(model.descriptor.species), name,
                  f"model {model.model_version} (descriptor {model.descriptor.name})", bool(model.descriptor.embedding))


def member_spread(mean: ElfGrid, members: np.ndarray, topo: Topology, *, h_dos: float | None = None,
                  tc_model: str = "belli2021", refine: bool = True) -> dict:
    """Ensemble uncertainty of φ, φ* and Tc: each member's φ and φ* read at the critical points where the
    mean ``topo`` has them (:func:`~elfscreen.model.topology.values_at_events`, one Newton refinement per
    member and event instead of a full analysis per member), population standard deviations over the
    members (NaN members, with no such event, left out), and the mean per-point ELF spread."""
    phis, stars, tcs = [], [], []
    for values in members:
        at = values_at_events(ElfGrid(mean.structure, values.astype(np.float64), mean.name), topo, refine=refine)
        phis.append(np.nan if at["phi"] is None else at["phi"])
        stars.append(np.nan if at["phi_star"] is None else at["phi_star"])
        raw = estimate_tc(at["phi"], topo.h_fraction, h_dos, tc_model, at["phi_star"]).raw_k
        tcs.append(np.nan if raw is None else raw)
    return {"phi_std": _nanstd(phis), "phi_star_std": _nanstd(stars), "tc_std_k": _nanstd(tcs),
            "elf_std_mean": float(members.std(axis=0).mean()), "members": len(members),
            "method": "members at the mean's critical points"}


def _nanstd(x: list[float]) -> float | None:
    x = np.asarray(x, dtype=float)
    return float(np.nanstd(x)) if np.isfinite(x).any() else None
