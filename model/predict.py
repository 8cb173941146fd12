"""Structure → predicted ELF grid: the descriptor streamed chunk by chunk into the network.

The grid follows elfscreen's convention (point (i, j, k) at fractional (i/N1, j/N2, k/N3)); its size
comes from a spacing in Å or is given exactly (to predict on a reference DFT grid).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pymatgen.core import Structure

from model.descriptor import iter_describe, pick_device
from model.network import ElfModel
from model.volumetric import ElfGrid

DEFAULT_SPACING_A = 0.1


def grid_shape(structure: Structure, spacing_a: float = DEFAULT_SPACING_A) -> tuple[int, int, int]:
    """Points per lattice vector so that neighbouring points are at most ``spacing_a`` Å apart."""
    if spacing_a <= 0:
        raise ValueError(f"grid spacing must be positive, got {spacing_a}")
    return tuple(max(2, math.ceil(length / spacing_a - 1e-9)) for length in structure.lattice.abc)


@dataclass
class Prediction:
    """``grid`` holds the ensemble-mean ELF; ``members`` (M, N1, N2, N3) each member's ELF."""

    grid: ElfGrid
    members: np.ndarray
    device: str
    timings_s: dict = field(default_factory=dict)

    @property
    def spread(self) -> np.ndarray:
        """Per-point ensemble standard deviation (population), zeros for a single member."""
        return self.members.std(axis=0)


def predict_grid(structure: Structure, model: ElfModel, shape: tuple[int, int, int] | None = None,
                 spacing_a: float = DEFAULT_SPACING_A, device: str | None = None, name: str = "<structure>",
                 max_chunk_mb: float = 256.0) -> Prediction:
    """Predict the ELF of ``structure`` on a grid of ``shape`` (or from ``spacing_a``)."""
    shape = tuple(int(n) for n in shape) if shape is not None else grid_shape(structure, spacing_a)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"grid must be three sizes ≥ 2, got {shape}")
    dev = pick_device(device)
    model.to(dev)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    frac = idx / np.array(shape)
    members = np.empty((len(model.members), len(frac)), dtype=np.float32)
    t_desc = t_net = 0.0
    start = time.perf_counter()
    for rows, feats in iter_describe(structure, frac, model.descriptor, dev, max_chunk_mb=max_chunk_mb):
        _sync(dev)
        t1 = time.perf_counter()
        t_desc += t1 - start
        with torch.no_grad():
            x = model.standardise(feats)
            out = torch.stack([m.eval()(x) for m in model.members])
        members[:, rows] = out.cpu().numpy()
        start = time.perf_counter()
        t_net += start - t1
    members = members.reshape(len(model.members), *shape)
    grid = ElfGrid(structure, members.mean(axis=0).astype(np.float64), name)
    return Prediction(grid, members, str(dev), {"descriptor": t_desc, "network": t_net})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
