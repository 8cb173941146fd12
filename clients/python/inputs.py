"""What can be screened, as named text items: structure files (one or several structures each), folders
and globs of them, pymatgen ``Structure`` and ASE ``Atoms`` objects.

The server and the embedded pipeline read exactly these texts, so both see the same input. A file
that holds several structures (a multi-frame extxyz, concatenated AIRSS ``.res`` or a CIF with several
``data_`` blocks) becomes one item per structure, named ``FILE#INDEX`` (0-based).
"""
from __future__ import annotations

import glob
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

_STARTS = {"res": re.compile(r"^TITL\b", re.IGNORECASE | re.MULTILINE), "cif": re.compile(r"^data_", re.MULTILINE)}


@dataclass(frozen=True)
class Item:
    """One structure to screen."""

    name: str
    """The result's ``name``; unique within a submission."""
    format: str
    """``cif``, ``poscar``, ``extxyz`` or ``res``."""
    content: str
    """The structure file's text (lengths in Å, as in the file)."""
    source: str | None = None
    """The file it was read from (None for an in-memory object)."""
    index: int | None = None
    """Its position in a multi-structure file, 0-based; None when the file holds one structure."""
    hdos: float | None = None
    """H share of the DOS at the Fermi level for this structure, in (0, 1]; None: the options' ``h_dos``."""


StructureLike = Union[Item, str, Path, "Structure", "Atoms"]
"""One input: an :class:`Item`, a structure file's path, a pymatgen ``Structure`` or an ASE ``Atoms``."""


def file_format(path: str | Path) -> str | None:
    """The structure format of a file from its name (``elfscreen screen``'s rule), or None."""
    from elfscreen.model.errors import StructureError
    from elfscreen.model.structures import guess_format

    try:
        return guess_format(str(path))
    except StructureError:
        return None


def find_structure_files(patterns: Iterable[str | Path], fmt: str | None = None) -> tuple[list[Path], list[str]]:
    """Expand paths into structure files, without duplicates: a file is taken as it is; a folder gives,
    recursively and sorted, every file whose name tells a structure format (every file when ``fmt`` is
    given, e.g. RandSpg's extension-less POSCARs), hidden ones skipped; a glob (``**`` recursive) gives
    the matching files and folders that way. Also returns the patterns that matched nothing."""
    def wanted(path: Path) -> bool:
        return fmt is not None or file_format(path) is not None

    found: dict[Path, Path] = {}  # resolved → as found
    missing = []
    for pattern in patterns:
        text = str(pattern)
        if glob.has_magic(text):
            hits = [f for p in sorted(glob.glob(text, recursive=True)) for f in _expand(Path(p), wanted) if wanted(f)]
        else:
            hits = _expand(Path(text), wanted)
        if not hits:
            missing.append(text)
        for f in hits:
            found.setdefault(f.resolve(), f)
    return list(found.values()), missing


def _expand(path: Path, wanted) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path) and wanted(p))
    return [path] if path.exists() else []


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def split_structures(text: str, fmt: str) -> list[str]:
    """The structures of a file's text: frames of an extxyz, ``TITL`` blocks of a ``.res``, ``data_``
    blocks of a CIF; a POSCAR is one structure. Text that does not split cleanly is returned whole (the
    parser then says what is wrong with it)."""
    if fmt == "extxyz":
        return _xyz_frames(text)
    starts = _STARTS.get(fmt)
    if starts is None:
        return [text]
    offsets = [m.start() for m in starts.finditer(text)]
    if len(offsets) < 2:
        return [text]
    return [text[a:b] for a, b in zip(offsets, offsets[1:] + [len(text)])]


def _xyz_frames(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    frames, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            return [text]
        if n < 0 or i + n + 2 > len(lines):
            return [text]
        frames.append("".join(lines[i:i + n + 2]))
        i += n + 2
    return frames or [text]


def read_file(path: str | Path, fmt: str | None = None, name: str | None = None) -> list[Item]:
    """The structures of one file, one :class:`Item` each (format from the name unless given; ``name``:
    the result's name, default the path as given). Raises ``OSError`` when the file cannot be read and
    ``ValueError`` when no format is given and the name does not tell it."""
    path = Path(path)
    fmt = fmt or file_format(path)
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the structure format from the name; give the format (cif, poscar, "
                         "extxyz or res)")
    name = name or str(path)
    texts = split_structures(path.read_text(errors="replace"), fmt)
    if len(texts) == 1:
        return [Item(name, fmt, texts[0], source=str(path))]
    return [Item(f"{name}#{k}", fmt, text, source=str(path), index=k) for k, text in enumerate(texts)]


def as_items(structures: StructureLike | Iterable[StructureLike], names: Iterable[str] | None = None,
             fmt: str | None = None) -> list[Item]:
    """Items from one structure or an iterable of them: :class:`Item`, a file path (``str`` or ``Path``;
    several items for a multi-structure file), a pymatgen ``Structure`` or an ASE ``Atoms``. ``names``
    (one per structure given) replace the default names: the path, or ``FORMULA-K`` for an object."""
    if isinstance(structures, (str, Path, Item)) or _is_object(structures):
        structures = [structures]
    given = list(structures)
    names = list(names) if names is not None else [None] * len(given)
    if len(names) != len(given):
        raise ValueError(f"{len(names)} names for {len(given)} structures")
    items = [item for k, (s, n) in enumerate(zip(given, names)) for item in _items(s, n, k, fmt)]
    twice = sorted(name for name, n in Counter(item.name for item in items).items() if n > 1)
    if twice:
        raise ValueError(f"names must be unique within a submission; given more than once: {', '.join(twice[:5])}")
    return items


def _items(obj: StructureLike, name: str | None, k: int, fmt: str | None) -> Iterator[Item]:
    if isinstance(obj, Item):
        yield obj if name is None else Item(name, obj.format, obj.content, obj.source, obj.index, obj.hdos)
    elif isinstance(obj, (str, Path)):
        yield from read_file(obj, fmt, name)
    elif _module(obj) == "pymatgen":
        yield Item(name or f"{obj.composition.reduced_formula}-{k}", "poscar", obj.to(fmt="poscar"))
    elif _module(obj) == "ase":
        import ase.io

        text = io.StringIO()
        ase.io.write(text, obj, format="extxyz")
        yield Item(name or f"{obj.get_chemical_formula()}-{k}", "extxyz", text.getvalue())
    else:
        raise TypeError(f"cannot screen a {type(obj).__name__}: give a file path, a pymatgen Structure or an ASE Atoms")


def _module(obj) -> str:
    return type(obj).__module__.split(".")[0]


def _is_object(obj) -> bool:
    """A single pymatgen structure or ASE Atoms (both are iterable, over their sites/atoms)."""
    return _module(obj) in ("pymatgen", "ase")
