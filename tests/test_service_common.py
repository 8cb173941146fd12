"""Shared helpers of the service tests (no tests here): a model checkpoint, small structures, polling."""
from __future__ import annotations

import os
import time

import numpy as np
from pymatgen.core import Lattice, Structure

SPACING = 0.35  # Å: coarse, to keep the tests fast
OPTIONS = {"spacing_a": SPACING}


def make_checkpoint(folder) -> str:
    """An untrained 2-member ELF model, saved, and ELFSCREEN_MODEL pointing at it. Species-aware (hydride-v2),
    so a compound such as CaH4 is screened; an H-only model refuses it (tests/test_species.py)."""
    from elfscreen.model.descriptor import HYDRIDE_V2
    from elfscreen.model.network import ElfModel
    from elfscreen.model.pipeline import forget_model

    path = folder / "elf-test.pt"
    model = ElfModel.untrained(descriptor=HYDRIDE_V2, n_members=2)
    model.model_version = "service-test"
    model.save(path)
    os.environ["ELFSCREEN_MODEL"] = str(path)
    forget_model()
    return str(path)


def structures() -> dict[str, Structure]:
    """Three small hydrogen-rich crystals (P1, atoms ≥ 0.7 Å apart); CaH4 needs a species-aware model
    (:func:`make_checkpoint`; the shipped H-only one refuses it, :func:`h_only` strips its Ca)."""
    rng = np.random.default_rng(7)
    out = {}
    for name, lattice, species in [("h6_hex", Lattice.hexagonal(2.9, 3.3), ["H"] * 6),
                                   ("cah4", Lattice.cubic(3.1), ["Ca"] + ["H"] * 4),
                                   ("h4_tet", Lattice.tetragonal(2.6, 3.0), ["H"] * 4)]:
        while True:
            s = Structure(lattice, species, rng.random((len(species), 3)))
            if _min_periodic(s) > 0.7:
                out[name] = s
                break
    return out


def h_only(s: Structure) -> Structure:
    """``s`` without its non-hydrogen atoms: what the shipped H-only model screens."""
    out = s.copy()
    out.remove_species([el for el in out.composition.elements if el.symbol != "H"])
    return out


def _min_periodic(s: Structure) -> float:
    _, _, _, d = s.get_neighbor_list(r=3.0)
    return float(d.min())


def as_files(structs: dict[str, Structure]) -> dict[str, str]:
    """CIF for the first, POSCAR for the others: file name → text."""
    files = {}
    for i, (name, s) in enumerate(structs.items()):
        files[f"{name}.cif" if i == 0 else f"POSCAR_{name}"] = s.to(fmt="cif" if i == 0 else "poscar")
    return files


def wait_for(fetch, done, timeout_s: float = 120.0, every_s: float = 0.2):
    """Call ``fetch()`` until ``done(value)`` or time out; the last value."""
    end = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value) or time.monotonic() > end:
            return value
        time.sleep(every_s)


def comparable(result: dict) -> dict:
    """A result without what legitimately differs between two runs (timings)."""
    out = {**result, "provenance": {**result["provenance"]}}
    out["provenance"].pop("timings_s")
    return out


def same(a, b) -> bool:
    """Equal results up to float rounding (a batched matrix product may round a last bit otherwise)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 + 1e-6 * abs(b)
    return a == b


def many_structures(n: int, seed: int = 11) -> dict[str, Structure]:
    """``n`` distinct small H crystals (P1, atoms ≥ 0.7 Å apart), named h_000, h_001, …"""
    rng = np.random.default_rng(seed)
    out = {}
    while len(out) < n:
        s = Structure(Lattice.tetragonal(2.5 + 0.05 * len(out), 2.8), ["H"] * 4, rng.random((4, 3)))
        if _min_periodic(s) > 0.7:
            out[f"h_{len(out):03d}"] = s
    return out
