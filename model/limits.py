"""Every size and number limit elfscreen applies to its inputs, in one place.

The CLI uses the defaults; the service may choose tighter values (``ELFSCREEN_MAX_ATOMS``,
``ELFSCREEN_MAX_GRID_POINTS``) and passes them through the same checks. Each check runs *before* the
work it guards (parsing that expands symmetry, an allocation, a neighbour search, spglib), so an
input that is too large costs a few microseconds, never the memory or time it asks for.
Lengths in Å, volumes in Å³.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from elfscreen.model.errors import GridError, InputError

MAX_ATOMS = 2000  # atoms in one structure
MAX_GRID_POINTS = 16_000_000  # N1·N2·N3 of a predicted grid: ≈ 250³, ~10 GB and ~20 min on 2 cores (1M points: 80 s, 0.6 GB)
MAX_LENGTH_A = 1000.0  # |a|, |b|, |c| and every Cartesian coordinate
MAX_FRACTIONAL = 1000.0  # |x| of a fractional coordinate (far outside the cell is a broken file)
MAX_SYMMETRY_IMAGES = 2_500  # CIF: symmetry operations × listed sites, before duplicates are merged (≤ ~1.5 s)
MIN_VOLUME_A3 = 1.0
MAX_VOLUME_A3 = 100_000.0
MIN_DISTANCE_A = 0.3  # closest two atoms may be (periodic images included)


class LimitError(InputError):
    """An input is larger than elfscreen accepts (the service answers HTTP 413)."""

    code = "too_large"


@dataclass(frozen=True)
class StructureLimits:
    """What a structure must satisfy to be screened (Å, Å³); the defaults are the CLI's."""

    max_atoms: int = MAX_ATOMS
    min_volume_a3: float = MIN_VOLUME_A3
    max_volume_a3: float = MAX_VOLUME_A3
    min_distance_a: float = MIN_DISTANCE_A
    max_length_a: float = MAX_LENGTH_A
    max_fractional: float = MAX_FRACTIONAL
    max_symmetry_images: int = MAX_SYMMETRY_IMAGES


def check_grid_shape(shape, name: str, max_points: int = MAX_GRID_POINTS) -> None:
    """Raise unless ``shape`` is three positive integers whose product is at most ``max_points``:
    :class:`~elfscreen.model.errors.GridError` for an unusable shape, :class:`LimitError` for a too large one.
    Call it before allocating the grid."""
    dims = list(shape)
    if len(dims) != 3 or not all(isinstance(n, int) or float(n).is_integer() for n in dims):
        raise GridError(name, f"grid shape {tuple(dims)} is not three whole numbers")
    dims = [int(n) for n in dims]
    if min(dims) < 1:
        raise GridError(name, f"grid shape {tuple(dims)} has a dimension below 1")
    points = math.prod(dims)  # Python ints: no overflow
    if points > max_points:
        size = f"{points:,}-point grid {tuple(dims)}" if points < 10**15 else f"grid of {float(points):.3g} points"
        raise LimitError(name, f"needs a {size}; the limit is {max_points:,} (use a coarser spacing)")
