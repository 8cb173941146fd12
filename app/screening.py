"""A claimed job's science: its stored structure → ``model.pipeline`` → the outcome the store records.

The structure was parsed and validated once, at submission, and stored as plain JSON with the job
(:func:`~elfscreen.model.structures.structure_to_dict`); here it is only rebuilt. An outcome is the
keyword arguments of :meth:`~elfscreen.app.store.Store.finish`: ``result`` (the ``screen`` JSON),
``grid`` (the ELF values, when the job keeps its grid) and ``pipeline_s``; or ``error``.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import numpy as np
import torch

from elfscreen.app.config import Settings
from elfscreen.app.store import Claim
from elfscreen.model.descriptor import pick_device
from elfscreen.model.errors import InputError
from elfscreen.model.limits import StructureLimits
from elfscreen.model.options import PIPELINE_OPTIONS, evaluation_flags
from elfscreen.model.pipeline import get_model, screen_prediction, screen_structure
from elfscreen.model.predict import grid_shape, predict_grid, predict_grids
from elfscreen.model.structures import parse_structure, structure_from_dict

log = logging.getLogger("elfscreen.screening")


def claim_structure(claim: Claim, settings: Settings):
    """The job's structure as validated at submission (a job stored before structures were kept with
    their jobs is parsed and validated again)."""
    if claim.structure is not None:
        return structure_from_dict(claim.structure)
    return parse_structure(claim.content, claim.format, claim.name, StructureLimits(max_atoms=settings.max_atoms))


def screen_claim(claim: Claim, settings: Settings) -> dict:
    """The outcome of one job."""
    try:
        model, _ = get_model(settings.device)
        start = time.perf_counter()
        structure = claim_structure(claim, settings)
        return _screen(claim, structure, model, settings, time.perf_counter() - start)
    except Exception as exc:
        return failure(exc, claim)


def screen_claims(claims: list[Claim], settings: Settings) -> Iterator[tuple[Claim, dict]]:
    """(claim, outcome) of each claim, as soon as it is known: the grids of the jobs screened on the whole
    grid (``evaluation`` "grid") predicted as one batch, the topology and Tc per structure; then the fast and
    adaptive jobs, one by one (:func:`~elfscreen.model.pipeline.screen_structure`: they evaluate the model
    where their own grids need it). If the batch cannot be predicted (one bad structure, out of memory),
    each structure is predicted alone, so only the jobs that fail alone fail."""
    try:
        model, _ = get_model(settings.device)
    except Exception as exc:  # no model: every job fails with the message
        for claim in claims:
            yield claim, failure(exc, claim)
        return
    ready = []  # (claim, structure, seconds to rebuild it)
    for claim in claims:
        start = time.perf_counter()
        try:
            ready.append((claim, claim_structure(claim, settings), time.perf_counter() - start))
        except Exception as exc:
            yield claim, failure(exc, claim)
    batched = [r for r in ready if _whole_grid(r[0])]
    start = time.perf_counter()
    try:
        shapes = [grid_shape(s, c.options["spacing_a"]) for c, s, _ in batched]
        preds = predict_grids([s for _, s, _ in batched], model, shapes=shapes, device=settings.device,
                              names=[c.name for c, _, _ in batched]) if batched else []
        points = [math.prod(shape) for shape in shapes]
        shares = [(time.perf_counter() - start) * n / sum(points) for n in points]
    except Exception as exc:
        log.warning("a batch of %d structures failed (%s: %s); predicting them one by one", len(batched),
                    type(exc).__name__, exc)
        preds, shares = [None] * len(batched), [0.0] * len(batched)
        _free_device_memory(settings.device)
    for k, (claim, structure, parse_s) in enumerate(batched):
        pred = preds[k]
        preds[k] = None  # the grid lives only as long as its job
        try:
            outcome = _screen(claim, structure, model, settings, parse_s, pred, shares[k])
        except Exception as exc:
            outcome = failure(exc, claim)
        yield claim, outcome
    for claim, structure, parse_s in ready:
        if not _whole_grid(claim):
            try:
                outcome = _screen(claim, structure, model, settings, parse_s)
            except Exception as exc:
                outcome = failure(exc, claim)
            yield claim, outcome


def _screen(claim: Claim, structure, model, settings: Settings, parse_s: float, pred=None,
            predicted_s: float = 0.0) -> dict:
    """The outcome of one job whose structure is rebuilt (``parse_s`` seconds). ``pred``: its grid when already
    predicted (in a batch, its share ``predicted_s`` s of the batch's time), for the whole-grid evaluation."""
    start = time.perf_counter()
    opts = claim.options
    kwargs = {k: opts[k] for k in PIPELINE_OPTIONS if k != "spacing_a"}
    if not _whole_grid(claim):  # fast or adaptive: no whole grid is predicted, none is kept (Options refuses keep_grid)
        result = screen_structure(structure, claim.name, model, spacing_a=opts["spacing_a"], device=settings.device,
                                  timings_s={"parse": parse_s}, **evaluation_flags(opts), **kwargs)
        grid = None
    else:
        if pred is None:
            pred = predict_grid(structure, model, spacing_a=opts["spacing_a"], device=settings.device, name=claim.name)
        result = screen_prediction(pred, model, timings_s={"parse": parse_s}, **kwargs)
        grid = _kept(pred, opts)
    return {"result": result.model_dump(mode="json"), "grid": grid,
            "pipeline_s": predicted_s + time.perf_counter() - start}  # the pipeline alone: the rest is overhead


def _whole_grid(claim: Claim) -> bool:
    """Whether the job is screened on the whole predicted grid (``evaluation`` "grid"; jobs stored before the
    option existed were). Any other value goes through :func:`_screen`, which fails the job on a bad one."""
    return claim.options.get("evaluation", "grid") == "grid"


def failure(exc: Exception, claim: Claim) -> dict:
    """The outcome of a job that raised ``exc``: an input problem fails with its message; anything else is
    a bug or a resource failure, logged with its traceback and reported without it."""
    if isinstance(exc, InputError):
        return {"error": exc.to_dict()}
    log.error("job %s (%s) failed", claim.job_id, claim.name, exc_info=exc)
    return {"error": {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                                "input": claim.name}}}


def _kept(pred, options: dict) -> np.ndarray | None:
    return pred.grid.values.astype(np.float32) if options.get("keep_grid") else None


def _free_device_memory(device: str | None) -> None:
    if pick_device(device).type == "cuda":
        torch.cuda.empty_cache()
