"""ELF grids: one type, and readers/writers for VASP ELFCAR and Gaussian cube files.

Convention everywhere in elfscreen: ``values[i, j, k]`` is the field at fractional coordinates
``(i/N1, j/N2, k/N3)`` of ``structure.lattice`` (a grid node at the cell origin, no repeated
boundary plane). ELFCAR files list ``i`` fastest; cube files list ``k`` fastest, lengths in bohr.
Values are kept exactly as the file holds them (an ELFCAR holds ELF itself, never ρ·V).
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from elfscreen.model.errors import GridError

BOHR_A = 0.529177210903  # CODATA 2018, Å per bohr
GRID_FORMATS = ("cube", "elfcar", "npz")


@dataclass
class ElfGrid:
    """An ELF field on a periodic grid.

    ``values`` has shape ``(N1, N2, N3)``, float64; ``values[i, j, k]`` sits at fractional
    ``(i/N1, j/N2, k/N3)`` of ``structure.lattice``. ``name`` is the input's name.
    """

    structure: Structure
    values: np.ndarray
    name: str = "<grid>"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.values.shape)

    @property
    def spacing_a(self) -> tuple[float, float, float]:
        """Distance between neighbouring grid points along each lattice vector (Å)."""
        return tuple(float(a / n) for a, n in zip(self.structure.lattice.abc, self.values.shape))

    def frac_of_index(self, ijk) -> np.ndarray:
        """Fractional coordinates of (possibly non-integer) grid indices ``ijk`` (..., 3)."""
        return np.asarray(ijk, dtype=float) / np.asarray(self.shape, dtype=float)


def guess_grid_format(name: str) -> str:
    """``cube`` for ``*.cube``/``*.cub`` (optionally ``.gz``), ``elfcar`` for names holding ELFCAR/CHGCAR,
    ``npz`` for an elfscreen dataset file (``*.npz``)."""
    lower = Path(name).name.lower().removesuffix(".gz")
    if lower.endswith((".cube", ".cub")):
        return "cube"
    if lower.endswith(".npz"):
        return "npz"
    if "elfcar" in lower or "chgcar" in lower or lower.endswith(".vasp"):
        return "elfcar"
    raise GridError(name, "cannot tell the grid format from the name; give --format cube, elfcar or npz")


def qe_rescale(values: np.ndarray) -> np.ndarray:
    """Undo the spin-scaling slip in the ELF written by Quantum ESPRESSO 6.8–7.5 (non-spin-polarised):
    ELF' = 1 / (1 + 2^(4/3) (1/ELF − 1)). QE ≤ 6.7 and VASP need no rescale."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore"):
        out = 1.0 / (1.0 + 2.0 ** (4.0 / 3.0) * (1.0 / v - 1.0))
    return np.where(v > 0, out, 0.0)


def read_grid(path: str | Path, fmt: str | None = None, *, rescale_qe: bool = False) -> ElfGrid:
    """Read an ELF grid from a cube or ELFCAR file (plain or ``.gz``) or an elfscreen dataset ``.npz``
    (:func:`read_npz`).

    ``rescale_qe`` applies :func:`qe_rescale` (for ELF written by QE 6.8–7.5). Every problem raises
    :class:`~elfscreen.model.errors.GridError` naming the file.
    """
    path = Path(path)
    name = path.name
    fmt = (fmt or guess_grid_format(name)).lower()
    if fmt not in GRID_FORMATS:
        raise GridError(name, f"unknown grid format {fmt!r}; use cube, elfcar or npz")
    if fmt == "npz":
        grid = read_npz(path)
        if rescale_qe:
            grid.values = qe_rescale(grid.values)
        return grid
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8", errors="replace")
    except (OSError, EOFError, zlib.error) as exc:
        raise GridError(name, f"cannot be read ({exc})") from exc
    grid = parse_grid(text, fmt, name)
    if rescale_qe:
        grid.values = qe_rescale(grid.values)
    return grid


def read_npz(path: str | Path) -> ElfGrid:
    """Read an elfscreen dataset file (``model.dataset``: arrays ``elf`` float16 with ``elf[i, j, k]`` at
    fractional ``(i/n1, j/n2, k/n3)``, ``lattice`` 3×3 Å rows, ``species``, ``frac_coords``); values
    come back as float64."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            structure = Structure(Lattice(z["lattice"]), [str(x) for x in z["species"]], z["frac_coords"])
            values = z["elf"].astype(np.float64)
    except (OSError, KeyError, ValueError, zlib.error) as exc:
        raise GridError(path.name, f"is not a readable elfscreen dataset file ({exc})") from exc
    if values.ndim != 3:
        raise GridError(path.name, f"its ELF array has {values.ndim} dimensions, not 3")
    return ElfGrid(structure=structure, values=values, name=path.stem)


def parse_grid(text: str, fmt: str, name: str = "<grid>") -> ElfGrid:
    """Parse the text of a cube (``fmt='cube'``) or ELFCAR (``fmt='elfcar'``) file."""
    lines = text.splitlines()
    try:
        structure, shape, data_start = (_cube_header if fmt == "cube" else _elfcar_header)(lines, name)
    except GridError:
        raise
    except (ValueError, IndexError) as exc:
        raise GridError(name, f"is not a readable {fmt} file: its header cannot be read ({exc})") from exc
    flat = _read_values(lines, data_start, shape, name, allow_more=(fmt == "elfcar"))
    if fmt == "cube":
        values = flat.reshape(shape)
    else:
        values = np.ascontiguousarray(flat.reshape(shape[::-1]).transpose(2, 1, 0))
    return ElfGrid(structure=structure, values=values, name=name)


def _read_values(lines: list[str], start: int, shape: tuple[int, int, int], name: str, allow_more: bool) -> np.ndarray:
    n = shape[0] * shape[1] * shape[2]
    body = " ".join(lines[start:])
    tokens = body.split(maxsplit=n)
    if len(tokens) < n:
        raise GridError(name, f"is truncated: it holds {len(tokens)} values, the header's {shape[0]}×{shape[1]}×{shape[2]} grid needs {n}")
    rest = tokens[n] if len(tokens) > n else ""
    try:
        values = np.array(tokens[:n], dtype=float)
    except ValueError:
        bad = next(i for i, t in enumerate(tokens[:n]) if not _is_float(t))
        raise GridError(name, f"grid value #{bad + 1} is not a number ({tokens[bad][:20]!r})") from None
    if rest.strip():
        head = rest.split(maxsplit=3)[:3]
        next_block = [int(t) for t in head if t.isdigit()] == list(shape)
        if not (allow_more and (next_block or rest.lstrip().lower().startswith("augmentation"))):
            raise GridError(name, f"holds more values than the header's {shape[0]}×{shape[1]}×{shape[2]} grid")
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise GridError(name, f"grid value #{bad + 1} is {values[bad]} (NaN or infinite)")
    return values


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _grid_shape(fields: list[str], name: str) -> tuple[int, int, int]:
    shape = tuple(int(f) for f in fields[:3])
    if len(shape) != 3 or min(shape) < 2:
        raise GridError(name, f"has an invalid grid size {shape}; every dimension must be ≥ 2")
    return shape


def _elfcar_header(lines: list[str], name: str):
    # POSCAR block: title, scale, 3 lattice lines, [species], counts, [Selective], Direct/Cartesian, positions.
    counts_line = 5
    if not all(_is_float(t) for t in lines[5].split()):
        counts_line = 6
    n_atoms = sum(int(t) for t in lines[counts_line].split())
    coord_line = counts_line + 1
    if lines[coord_line].strip().lower().startswith("s"):
        coord_line += 1
    end = coord_line + 1 + n_atoms
    from pymatgen.io.vasp import Poscar  # here: pymatgen.io.vasp imports scipy (~0.8 s), cube files need none of it

    try:
        poscar = Poscar.from_str("\n".join(lines[:end]) + "\n")
    except Exception as exc:
        raise GridError(name, f"is not a readable elfcar file: its structure block cannot be read ({exc})") from exc
    i = end
    while not lines[i].strip():
        i += 1
    return poscar.structure, _grid_shape(lines[i].split(), name), i + 1


def _cube_header(lines: list[str], name: str):
    n_atoms_field, *origin = lines[2].split()[:4]
    n_atoms = int(n_atoms_field)
    if n_atoms < 0:
        raise GridError(name, "is an orbital cube file (negative atom count); elfscreen reads one scalar field")
    origin = np.array([float(x) for x in origin])
    counts, vectors = [], []
    for line in lines[3:6]:
        fields = line.split()
        counts.append(int(fields[0]))
        vectors.append([float(x) for x in fields[1:4]])
    # A negative count means the axis vectors are in Å, not bohr (Gaussian convention).
    unit = np.array([BOHR_A if n > 0 else 1.0 for n in counts])
    shape = _grid_shape([str(abs(n)) for n in counts], name)
    voxel = np.array(vectors) * unit[:, None]
    lattice = Lattice(voxel * np.array(shape)[:, None])
    if abs(lattice.volume) < 1e-9:
        raise GridError(name, "has a degenerate cell (zero volume)")
    species, coords = [], []
    for line in lines[6 : 6 + n_atoms]:
        fields = line.split()
        z = int(fields[0])
        if z < 1:
            raise GridError(name, f"lists an atom with atomic number {z}")
        species.append(Element.from_Z(z))
        coords.append([float(x) for x in fields[2:5]])
    if len(species) != n_atoms:
        raise GridError(name, f"is truncated: the header promises {n_atoms} atoms")
    cart_a = (np.array(coords).reshape(-1, 3) - origin) * (BOHR_A if counts[0] > 0 else 1.0)
    structure = Structure(lattice, species, cart_a, coords_are_cartesian=True, to_unit_cell=True)
    return structure, shape, 6 + n_atoms


def write_grid(grid: ElfGrid, path: str | Path, fmt: str | None = None, digits: int | None = None) -> Path:
    """Write ``grid`` as a cube or ELFCAR file (gzip-compressed when ``path`` ends in ``.gz``).

    ``digits`` is the number of significant digits written (default 5 for cube, as Gaussian writes,
    and 11 for ELFCAR, as VASP writes CHGCAR); reading a file and writing it back with at least the
    file's own digits is lossless.
    """
    path = Path(path)
    fmt = (fmt or guess_grid_format(path.name)).lower()
    text = _cube_text(grid, digits or 5) if fmt == "cube" else _elfcar_text(grid, digits or 11)
    data = text.encode()
    path.write_bytes(gzip.compress(data, compresslevel=6) if path.suffix == ".gz" else data)
    return path


def _rows(values: np.ndarray, per_line: int, digits: int) -> str:
    """Lines of ``per_line`` values each; each row of ``values`` (2D) starts a new line."""
    width = digits + 8
    n = values.shape[1]
    full, rem = divmod(n, per_line)
    fmt = (f"%{width}.{digits - 1}E" * per_line + "\n") * full + ((f"%{width}.{digits - 1}E" * rem + "\n") if rem else "")
    return "".join(fmt % tuple(row) for row in values)


def _cube_text(grid: ElfGrid, digits: int) -> str:
    s = grid.structure
    shape = grid.shape
    voxel_bohr = s.lattice.matrix / np.array(shape)[:, None] / BOHR_A
    out = [f"elfscreen ELF grid: {grid.name}", "ELF on the periodic grid; k fastest, no repeated boundary plane"]
    out.append(f"{len(s):5d} {0.0:16.10f} {0.0:16.10f} {0.0:16.10f}")
    for n, v in zip(shape, voxel_bohr):
        out.append(f"{n:5d} {v[0]:16.10f} {v[1]:16.10f} {v[2]:16.10f}")
    for site in s:
        z = site.specie.Z
        x, y, zc = site.coords / BOHR_A
        out.append(f"{z:5d} {float(z):16.10f} {x:16.10f} {y:16.10f} {zc:16.10f}")
    return "\n".join(out) + "\n" + _rows(grid.values.reshape(-1, shape[2]), 6, digits)


def _elfcar_text(grid: ElfGrid, digits: int) -> str:
    from pymatgen.io.vasp import Poscar

    header = Poscar(grid.structure, comment=grid.name).get_str(significant_figures=12)
    n1, n2, n3 = grid.shape
    flat = grid.values.transpose(2, 1, 0).reshape(1, -1)  # i fastest
    body = _rows(flat, 5, digits)
    return header + "\n" + f"{n1:5d}{n2:5d}{n3:5d}\n" + body
