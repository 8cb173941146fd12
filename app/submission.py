"""A submission before it is stored: every structure read and checked in the sandbox, its cache key,
and the answer from the cache for structures this caller has screened before.

Bad input raises :class:`~elfscreen.model.errors.InputError` (HTTP 4xx) before anything is stored.
The structure text is parsed once, here, in a sandbox child (:func:`~elfscreen.app.intake.read_item` in a
:class:`~elfscreen.app.sandbox.Sandbox`): the job row keeps the validated structure as JSON, which the
grid-size check, the cache and the job use from then on.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from elfscreen.app.cache import same_crystal
from elfscreen.app.config import Settings
from elfscreen.app.intake import read_item
from elfscreen.app.sandbox import Sandbox
from elfscreen.app.store import Store, new_id
from elfscreen.model.errors import InputError
from elfscreen.model.limits import LimitError, StructureLimits, check_grid_shape
from elfscreen.model.pipeline import check_model_species, get_model
from elfscreen.model.predict import grid_shape
from elfscreen.model.structures import structure_from_dict


def prepare(items: list[dict], options: dict, settings: Settings, store: Store, owner: str, sandbox: Sandbox,
            callback_url: str | None = None) -> tuple[dict, list[dict]]:
    """Validate every structure (an element the model cannot see is refused here, with the others) and build
    the batch and job rows; structures ``owner`` already screened with the same model and options are
    answered from the cache (rows born ``done``, ``cached``).

    ``items`` hold ``name``, ``format`` (or None), ``content``, ``hdos`` (or None); ``options`` are validated
    :class:`~elfscreen.model.options.Options` (``spacing_a`` resolved for the ``evaluation``: the grid-size
    limit applies to the grid the job evaluates on, e.g. 0.05 Å for adaptive). Raises
    :class:`~elfscreen.model.limits.LimitError` or :class:`~elfscreen.model.errors.InputError` naming the
    first bad input; ``.others`` on the error lists the error objects of every bad input.
    """
    if len(items) > settings.max_structures:
        raise LimitError("request", f"holds {len(items)} structures; the limit is {settings.max_structures} per request")
    model, model_id = get_model(settings.device)
    limits = StructureLimits(max_atoms=settings.max_atoms)
    now, batch_id = time.time(), new_id()

    def check(item: dict) -> dict | InputError:
        try:
            checked = sandbox.run(item["name"], read_item, item, options, limits, model_id)
            structure = structure_from_dict(checked["structure"])
            check_model_species(structure, model, item["name"])
            shape = grid_shape(structure, options["spacing_a"])
            check_grid_shape(shape, item["name"], settings.max_grid_points)
            return checked
        except InputError as err:
            return err

    with ThreadPoolExecutor(max(1, min(len(items), settings.parse_workers))) as pool:  # every sandbox child busy
        outcomes = list(pool.map(check, items))
    errors = [o for o in outcomes if isinstance(o, InputError)]
    if errors:
        first = errors[0]
        first.others = [e.to_dict()["error"] for e in errors]
        raise first
    rows = [{"id": new_id(), "batch_id": batch_id, "seq": seq, "owner": owner, "name": item["name"],
             "content": item["content"], **checked, "status": "queued", "cached": False, "created_at": now}
            for seq, (item, checked) in enumerate(zip(items, outcomes))]
    candidates = store.cache_candidates([row["cache_key"] for row in rows], owner)
    for row in rows:
        hit = _cached(candidates.get(row["cache_key"], []), row["structure"])
        if hit is not None:
            row.update(status="done", cached=True, cached_from=hit["id"], result={**hit["result"], "name": row["name"]},
                       finished_at=now)
    batch = {"id": batch_id, "owner": owner, "created_at": now, "total": len(rows), "callback_url": callback_url,
             "callback_state": "pending" if callback_url else None}
    return batch, rows


def _cached(candidates: list[dict], structure: dict) -> dict | None:
    """The first candidate that is the same crystal as ``structure`` (keep_grid is part of the key)."""
    mine = structure_from_dict(structure)
    return next((c for c in candidates if same_crystal(mine, structure_from_dict(c["structure"]))), None)

