"""Structure → predicted ELF grid: the descriptor streamed chunk by chunk into the network.

The grid follows elfscreen's convention (point (i, j, k) at fractional (i/N1, j/N2, k/N3)); its size
comes from a spacing in Å or is given exactly (to predict on a reference DFT grid). :func:`predict_grids`
predicts several structures with one network call per round of chunks (a GPU worker's batches).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pymatgen.core import Structure

from elfscreen.model.descriptor import DescriptorParams, iter_describe, pick_device
from elfscreen.model.descriptor_grid import grid_memory_mb, iter_describe_grid, reciprocal_count
from elfscreen.model.network import ElfModel
from elfscreen.model.options import DEFAULT_SPACING_A
from elfscreen.model.volumetric import ElfGrid

# grid points per reciprocal vector kept above which the FFT path beats the direct one (measured, one CPU
# thread, compiled kernels: even at ≈0.01 (0.3 Å), 1.4–1.5× at 0.2 Å (≈0.037), 1.5–1.9× at 0.15 Å;
# CUDA (H200, torch path): 4.4× at 0.28, 9.4× on a 1.3M-point grid)
GRID_PATH_MIN_RATIO = {"cpu": 0.02, "cuda": 0.1}
GRID_PATH_MAX_MB = 1024.0  # largest coefficient array the FFT path may hold; larger grids go direct
# rows per network call on a CPU: a block's hidden activations stay in the cache (measured, CPU time of
# 5 members on 65k rows, one thread: 0.62 s in blocks of 1–2k rows, 0.84 s of 16k, 1.2 s in one call)
CPU_BLOCK_ROWS = 2048


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
    return predict_grids([structure], model, shapes=[shape], spacing_a=spacing_a, device=device, names=[name],
                         max_chunk_mb=max_chunk_mb)[0]


def predict_grids(structures: Sequence[Structure], model: ElfModel,
                  shapes: Sequence[tuple[int, int, int] | None] | None = None, spacing_a: float = DEFAULT_SPACING_A,
                  device: str | None = None, names: Sequence[str] | None = None,
                  max_chunk_mb: float = 256.0) -> list[Prediction]:
    """Predict the ELF of several structures, batched: one network call per round of descriptor chunks.

    The descriptor is computed per structure (as :func:`predict_grid` does); each round takes the next
    chunk of every structure that has one left and runs the ensemble once on their concatenation, so a
    GPU sees one large call instead of one small call per structure. Each result equals
    :func:`predict_grid` of that structure alone (to float rounding of the matrix products, ≤ 1e-6).
    ``shapes`` (one per structure, None: from ``spacing_a``) and ``names`` default per structure; the
    descriptor's working memory, ``max_chunk_mb``, is shared by the structures of the batch. Timings
    per structure: its own descriptor time and its share (by points) of the network calls. Any error
    (a bad shape, out of memory) is raised for the whole batch: callers that must isolate failures run
    the structures again one by one.
    """
    structures = list(structures)
    count = len(structures)
    shapes = [None] * count if shapes is None else list(shapes)
    names = ["<structure>"] * count if names is None else list(names)
    if len(shapes) != count or len(names) != count:
        raise ValueError(f"{count} structures need as many shapes and names, got {len(shapes)} and {len(names)}")
    if not count:
        return []
    sizes = []
    for i, structure in enumerate(structures):
        shape = tuple(int(n) for n in shapes[i]) if shapes[i] is not None else grid_shape(structure, spacing_a)
        if len(shape) != 3 or min(shape) < 2:
            raise ValueError(f"grid must be three sizes ≥ 2, got {shape}")
        sizes.append(shape)
    dev = pick_device(device)
    model.to(dev)
    n_members = len(model.members)
    members = [np.empty((n_members, math.prod(shape)), dtype=np.float32) for shape in sizes]
    # a suspended stream keeps its last chunk's working tensors: the memory cap is shared
    streams = [describe_stream(s, shape, model.descriptor, dev, max_chunk_mb / count)
               for s, shape in zip(structures, sizes)]
    t_desc, t_net = [0.0] * count, [0.0] * count
    live = list(range(count))
    while live:
        parts = []
        for i in live:
            start = time.perf_counter()
            chunk = next(streams[i], None)
            _sync(dev)
            t_desc[i] += time.perf_counter() - start
            if chunk is not None:
                parts.append((i, *chunk))
        if not parts:
            break
        start = time.perf_counter()
        out = member_outputs(model, parts[0][2] if len(parts) == 1 else torch.cat([f for _, _, f in parts]))
        at = 0
        for i, rows, _ in parts:
            members[i][:, rows] = out[:, at:at + len(rows)]
            at += len(rows)
        elapsed = time.perf_counter() - start
        for i, rows, _ in parts:
            t_net[i] += elapsed * len(rows) / at
        live = [i for i, _, _ in parts]
    preds = []
    for i, (structure, shape) in enumerate(zip(structures, sizes)):
        values = members[i].reshape(n_members, *shape)
        grid = ElfGrid(structure, values.mean(axis=0).astype(np.float64), names[i])
        preds.append(Prediction(grid, values, str(dev), {"descriptor": t_desc[i], "network": t_net[i]}))
    return preds


@torch.no_grad()
def member_outputs(model: ElfModel, features: torch.Tensor, members: Sequence[int] | None = None) -> np.ndarray:
    """Each member's ELF (M, p) at the rows of raw ``features`` (p, n_features), as float32; ``members``
    picks some (indices), default all. On a CPU the rows go through in blocks of ``CPU_BLOCK_ROWS``."""
    nets = model.members if members is None else [model.members[k] for k in members]
    x = model.standardise(features)
    if x.device.type != "cpu":
        return torch.stack([m.eval()(x) for m in nets]).cpu().numpy()
    out = np.empty((len(nets), len(x)), dtype=np.float32)
    for start in range(0, len(x), CPU_BLOCK_ROWS):
        block = x[start:start + CPU_BLOCK_ROWS]
        for k, m in enumerate(nets):
            out[k, start:start + len(block)] = m.eval()(block).numpy()
    return out


def use_grid_path(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams,
                  device: str | torch.device = "cpu") -> bool:
    """The FFT path (``descriptor_grid``) when the grid is fine enough for it to be faster on ``device``
    (CPU: spacings ≲ 0.25 Å; CUDA: ≲ 0.15 Å; see GRID_PATH_MIN_RATIO) and its coefficients fit in
    GRID_PATH_MAX_MB; else the direct method."""
    ratio = GRID_PATH_MIN_RATIO["cuda" if torch.device(device).type == "cuda" else "cpu"]
    return (math.prod(shape) >= ratio * reciprocal_count(structure, params)
            and grid_memory_mb(shape, params) <= GRID_PATH_MAX_MB)


def describe_stream(structure: Structure, shape: tuple[int, int, int], params: DescriptorParams,
                    device: torch.device, max_chunk_mb: float = 256.0):
    """(indices, features) chunks over the grid's points in C order, by the faster of the two paths."""
    if use_grid_path(structure, shape, params, device):
        return iter_describe_grid(structure, shape, params, device, max_chunk_mb=max_chunk_mb)
    return iter_describe(structure, _grid_points(shape), params, device, max_chunk_mb=max_chunk_mb)


def _grid_points(shape: tuple[int, int, int]) -> np.ndarray:
    """Fractional coordinates of every point of the grid, in C order of (i, j, k)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return idx / np.array(shape)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
