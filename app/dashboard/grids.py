"""The ELF grid of a finished job, for the structure page's slice and isosurface and the cube download; and the
DFT grid of its verification, for the ML-vs-DFT slices.

A job keeps its grid only when submitted with ``options.keep_grid`` (float32 .npz: ~0.3 MB of store
per 10⁵ points). For every other job the grid is predicted again, on demand, from the job's stored structure
with its spacing and the same model: prediction is deterministic, so this is the grid the job was
screened on (to float rounding when the job ran on another device); for a ``fast`` or ``adaptive`` job, the
whole grid whose events it evaluated (those never keep theirs: their grid is the model's ELF only near the
events). It costs one prediction (~1 s for a small cell on one core) and is kept in memory for the next views. Predicting again needs the
model that screened the job: after a model change the answer is 409 ``model_changed``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from elfscreen.app.access import ApiError
from elfscreen.app.config import Settings
from elfscreen.app.dashboard.queries import computed_job
from elfscreen.app.schemas import grid_kept
from elfscreen.app.store import Store
from elfscreen.model.pipeline import get_model
from elfscreen.model.predict import predict_grid
from elfscreen.model.structures import StructureLimits, parse_structure
from elfscreen.model.volumetric import ElfGrid


class GridCache:
    """Grids of finished jobs by the id of the job that computed them, least recently used dropped
    first once they hold more than ``max_points`` grid points together (8 bytes each)."""

    def __init__(self, max_points: int = 16_000_000):
        self.max_points = max_points
        self._grids: OrderedDict[str, ElfGrid] = OrderedDict()
        self._lock = threading.Lock()  # guards _grids
        self._computing = threading.Lock()  # one load at a time: two views of a new job load it once

    def get(self, store: Store, row: dict, settings: Settings) -> ElfGrid:
        """The grid of the finished job ``row`` (a store row): kept, or predicted again."""
        key = row["cached_from"] or row["id"]
        return self._get(key, lambda: _load(store, row, key, settings))

    def get_dft(self, store: Store, row: dict, settings: Settings) -> ElfGrid:
        """The DFT ELF of the job ``row``'s done verification, on the job's own cell (the frame of :meth:`get`'s
        grid; the store keeps it on QE's orientation of that cell); 409 ``no_dft_grid`` when there is none."""
        ml = self.get(store, row, settings)  # first: loads are not nested (one lock)
        return self._get(f"dft:{row['id']}", lambda: _load_dft(store, row, ml))

    def _get(self, key: str, load) -> ElfGrid:
        grid = self._cached(key)
        if grid is None:
            with self._computing:
                grid = self._cached(key)  # loaded while this request waited
                if grid is None:
                    grid = load()
                    with self._lock:
                        self._grids[key] = grid
                        while len(self._grids) > 1 and sum(g.values.size for g in self._grids.values()) > self.max_points:
                            self._grids.popitem(last=False)
        return grid

    def _cached(self, key: str) -> ElfGrid | None:
        with self._lock:
            if key in self._grids:
                self._grids.move_to_end(key)
            return self._grids.get(key)


def _load(store: Store, row: dict, key: str, settings: Settings) -> ElfGrid:
    job = computed_job(store, row)
    structure = parse_structure(job["content"], job["format"], job["name"], StructureLimits(max_atoms=settings.max_atoms))
    if grid_kept(row):
        values = store.grid(key)
        if values is not None:
            return ElfGrid(structure, values.astype("float64"), row["name"])
    model, _ = get_model(settings.device)
    used = ((job["result"] or {}).get("provenance") or {}).get("model_version")
    if used != model.model_version:
        raise ApiError(409, "model_changed", f"the job was screened with model {used}; this server runs "
                       f"{model.model_version}, so its ELF cannot be predicted again (submit it again, or with "
                       "options.keep_grid = true to store the grid)", row["name"])
    return predict_grid(structure, model, spacing_a=job["options"]["spacing_a"], device=settings.device,
                        name=row["name"]).grid


def _load_dft(store: Store, row: dict, ml: ElfGrid) -> ElfGrid:
    dft = store.dft_grid(row["id"])
    if dft is None:
        raise ApiError(409, "no_dft_grid", f"job {row['id']} has no finished DFT verification", row["name"])
    same = np.allclose(dft.structure.lattice.abc, ml.structure.lattice.abc, atol=1e-4) and np.allclose(
        dft.structure.lattice.angles, ml.structure.lattice.angles, atol=1e-3)
    if not same:
        raise ApiError(409, "dft_cell_differs", "the DFT grid's cell is not the screened cell "
                       f"({dft.structure.lattice.abc} Å vs {ml.structure.lattice.abc} Å)", row["name"])
    return ElfGrid(ml.structure, dft.values, f"{row['name']} (DFT)")
