"""Benchmark of the topology engine (model.sweep.sweep and model.topology.analyze) against grid size.

One synthetic, exactly periodic ELF-like field — a 64-atom hydrogen crystal at random positions in a
cubic cell of ~2.5 Å³/atom — is sampled on N³ grids (default N = 64, 100, 128, 192; 100³ = 1e6 voxels,
the target being analyze() on 1e6 voxels in under 2 s). Only the grid changes between rows, so the
runs are comparable (φ is printed for each one).

    g(r) = Σ_atoms Σ_images A (1 + |r − R|²/s²)^-2 · w(|r − R|),   f = g / (1 + g)

with A = 8, s = 0.45 Å and w a smoothstep taper from 1 at 2.5 Å to 0 at 3.5 Å (so the truncated sum
is smooth and exactly periodic). The field is built with numpy, one atom and a slab of planes at a time.

Every (size, mode) runs in a fresh subprocess (``--child``), which first warms numba and numpy up on a
tiny grid (compile time is not counted), then measures its RSS, runs the timed call and reads
``ru_maxrss``: peak ΔRSS = ru_maxrss − RSS just before the call. The parent builds each field once
and hands it to the children as a .npy file in a temporary folder.

    python bench/topology.py                       # the full table
    python bench/topology.py --sizes 64,100 --repeat 3
    python bench/topology.py --child --size 192 --mode analyze --profile   # cProfile of one run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from harness import maxrss_mb, rss_mb, timed  # noqa: E402

N_ATOMS = 64
VOLUME_PER_ATOM_A3 = 2.5
MIN_DISTANCE_A = 0.7
SEED = 20240601
AMPLITUDE = 8.0
WIDTH_A = 0.45
TAPER_START_A = 2.5
CUTOFF_A = 3.5
MODES = ("sweep", "analyze_norefine", "analyze")
TARGET_VOXELS = 100**3
TARGET_S = 2.0


# ---------------------------------------------------------------------------------------------
# the synthetic crystal and its field


def make_structure():
    """A cubic cell of N_ATOMS H atoms at random positions (fixed seed), all pairs ≥ MIN_DISTANCE_A apart."""
    from pymatgen.core import Lattice, Structure

    edge = (N_ATOMS * VOLUME_PER_ATOM_A3) ** (1.0 / 3.0)
    rng = np.random.default_rng(SEED)
    frac: list[np.ndarray] = []
    while len(frac) < N_ATOMS:
        x = rng.random(3)
        if frac:
            d = (np.array(frac) - x + 0.5) % 1.0 - 0.5
            if np.min(np.linalg.norm(d * edge, axis=1)) < MIN_DISTANCE_A:
                continue
        frac.append(x)
    return Structure(Lattice.cubic(edge), ["H"] * N_ATOMS, np.array(frac))


def _axis_window(u: float, edge: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices (wrapped) and displacements (Å) along one axis of every node within CUTOFF_A of
    the atom at fractional ``u`` and its images: unwrapped indices run over one contiguous range."""
    h = edge / n
    lo = int(np.ceil((u * edge - CUTOFF_A) / h))
    hi = int(np.floor((u * edge + CUTOFF_A) / h))
    idx = np.arange(lo, hi + 1)
    return idx % n, idx * h - u * edge


def _segments(wrapped: np.ndarray) -> list[tuple[int, int, int]]:
    """Split a run of wrapped indices into (start in run, stop in run, first grid index) slices."""
    breaks = np.flatnonzero(np.diff(wrapped) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(wrapped)]])
    return [(int(a), int(b), int(wrapped[a])) for a, b in zip(starts, stops)]


def _kernel(r2: np.ndarray) -> np.ndarray:
    """A (1 + r²/s²)^-2 with a smoothstep taper in r between TAPER_START_A and CUTOFF_A (r2 in Å²)."""
    out = 1.0 + r2 * (1.0 / WIDTH_A**2)
    np.reciprocal(out, out=out)
    out *= out
    out *= AMPLITUDE
    t = (np.sqrt(r2) - TAPER_START_A) * (1.0 / (CUTOFF_A - TAPER_START_A))
    np.clip(t, 0.0, 1.0, out=t)
    out *= 1.0 - t * t * (3.0 - 2.0 * t)
    return out


def make_field(structure, n: int, slab: int = 16) -> np.ndarray:
    """f = g/(1+g) on the n³ grid of ``structure`` (cubic cell), g summed over atoms and images."""
    edge = float(structure.lattice.a)
    g = np.zeros((n, n, n))
    slab = min(slab, n)  # a fancy-indexed += must not see one plane twice
    for site in structure:
        (w1, x1), (w2, x2), (w3, x3) = (_axis_window(float(u), edge, n) for u in site.frac_coords)
        seg2, seg3 = _segments(w2), _segments(w3)
        yz2 = x2[:, None] ** 2 + x3[None, :] ** 2
        for a in range(0, len(x1), slab):  # a slab of planes at a time bounds the temporaries
            block = _kernel(x1[a : a + slab, None, None] ** 2 + yz2[None])
            rows = w1[a : a + slab]
            for b0, b1, j in seg2:
                for c0, c1, k in seg3:
                    g[rows, j : j + b1 - b0, k : k + c1 - c0] += block[:, b0:b1, c0:c1]
    return g / (1.0 + g)


# ---------------------------------------------------------------------------------------------
# one timed run (child process)


def _warm_up(structure) -> float:
    """Compile/load the numba sweep and touch every code path of analyze on a tiny grid."""
    from elfscreen.model.sweep import sweep
    from elfscreen.model.topology import analyze
    from elfscreen.model.volumetric import ElfGrid

    t0 = time.perf_counter()
    tiny = ElfGrid(structure, make_field(structure, 12), name="warm-up")
    sweep(tiny.values)
    analyze(tiny, refine=False)
    analyze(tiny)
    return time.perf_counter() - t0


def _phi_of_sweep(values: np.ndarray, result) -> tuple[float | None, float | None]:
    from elfscreen.model.sweep import EVENT_3D, EVENT_H_PAIR

    flat = values.ravel()
    out = []
    for e in (EVENT_3D, EVENT_H_PAIR):
        v = int(result.events[e, 0])
        out.append(None if v < 0 else float(flat[v]))
    return out[0], out[1]


def run_child(size: int, mode: str, field_path: str | None, repeat: int, profile: bool) -> dict:
    from elfscreen.model.sweep import sweep
    from elfscreen.model.topology import analyze, h_attractors
    from elfscreen.model.volumetric import ElfGrid

    structure = make_structure()
    warm_s = _warm_up(structure)
    build_s = None
    if field_path:
        values = np.load(field_path)
    else:
        t0 = time.perf_counter()
        values = make_field(structure, size)
        build_s = time.perf_counter() - t0
    grid = ElfGrid(structure, values, name=f"H{N_ATOMS} {size}^3")

    if mode == "sweep":
        # what analyze hands the sweep: the H attractor counts (not timed: built before the call)
        atoms_at = np.bincount(h_attractors(grid), minlength=values.size).astype(np.int32).reshape(values.shape)
        call = lambda: sweep(grid.values, atoms_at)
    elif mode == "analyze_norefine":
        call = lambda: analyze(grid, refine=False)
    elif mode == "analyze":
        call = lambda: analyze(grid)
    else:
        raise SystemExit(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")

    load_before = os.getloadavg()[0]
    rss_before = rss_mb()
    maxrss_before = maxrss_mb()
    result, times, cpu, prof = timed(call, repeat, profile)
    peak = maxrss_mb()

    if mode == "sweep":
        phi, phi_star = _phi_of_sweep(grid.values, result)
        phi_grid = phi
        n_warn = 0
    else:
        phi, phi_star, phi_grid = result.phi, result.phi_star, result.thresholds_grid["phi"]
        n_warn = len(result.warnings)
    out = {
        "size": size, "mode": mode, "seconds": min(times), "all_seconds": times,
        "cpu_seconds": cpu[int(np.argmin(times))],
        "rss_before_mb": rss_before, "peak_delta_mb": max(0.0, peak - rss_before),
        "maxrss_before_mb": maxrss_before, "warm_up_s": warm_s, "build_s": build_s,
        "phi": phi, "phi_grid": phi_grid, "phi_star": phi_star, "warnings": n_warn,
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    if prof is not None:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        out["profile"] = buf.getvalue()
    return out


# ---------------------------------------------------------------------------------------------
# the table (parent process)


def _fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,100,128,192", help="grid sizes N (N³ voxels), comma-separated")
    ap.add_argument("--repeat", type=int, default=1, help="best of K timed calls per (size, mode)")
    ap.add_argument("--child", action="store_true", help="run one timed (size, mode) and print JSON")
    ap.add_argument("--size", type=int, help="with --child: the grid size N")
    ap.add_argument("--mode", default="analyze", choices=MODES, help="with --child: what to time")
    ap.add_argument("--field", help="with --child: the field as .npy (built in the child when absent)")
    ap.add_argument("--profile", action="store_true", help="with --child: print a cProfile of the call")
    args = ap.parse_args(argv)

    if args.child:
        if args.size is None:
            ap.error("--child needs --size")
        out = run_child(args.size, args.mode, args.field, max(1, args.repeat), args.profile)
        if args.profile:
            print(out.pop("profile"), file=sys.stderr)
        print(json.dumps(out))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    structure = make_structure()
    print(f"# topology engine benchmark: {N_ATOMS} H atoms at random positions (seed {SEED}, min H–H "
          f"{MIN_DISTANCE_A} Å), cubic cell a = {structure.lattice.a:.4f} Å "
          f"({structure.volume / len(structure):.2f} Å³/atom)")
    print(f"# field f = g/(1+g), g = Σ A(1+r²/s²)^-2, A = {AMPLITUDE}, s = {WIDTH_A} Å, "
          f"smooth cutoff {TAPER_START_A}–{CUTOFF_A} Å, all periodic images")
    print(f"# each (size, mode) in a fresh process; numba/numpy warmed up on a 12³ grid first, so compile "
          f"time is NOT counted; times are best of {args.repeat}")
    print(f"# python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"1-min load average at start {os.getloadavg()[0]:.2f} (other processes on the machine skew the times)")
    print(flush=True)

    rows = {}
    with tempfile.TemporaryDirectory(prefix="elfscreen-bench-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            values = make_field(structure, n)
            build_s = time.perf_counter() - t0
            path = Path(tmp) / f"field{n}.npy"
            np.save(path, values)
            del values
            print(f"# {n}³: field built in {build_s:.1f} s (not timed below)", flush=True)
            for mode in MODES:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--size", str(n), "--mode", mode,
                       "--field", str(path), "--repeat", str(args.repeat)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    raise SystemExit(f"child {n}³ {mode} failed (exit {proc.returncode})")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                rows[(n, mode)] = res
                print(f"#   {mode:17s} {res['seconds']:8.3f} s  peak ΔRSS {res['peak_delta_mb']:7.1f} MB  "
                      f"φ = {_fmt(res['phi'])}  (CPU {res['cpu_seconds']:.3f} s; warm-up {res['warm_up_s']:.1f} s, "
                      f"not counted; load {res['load_before']:.2f}→{res['load_after']:.2f})", flush=True)
            path.unlink()

    print()
    print("| grid | voxels | sweep s | analyze (no refine) s | analyze s | peak ΔRSS MB | voxels/s | 1e6 voxels < 2 s |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        sw, nr, fu = rows[(n, "sweep")], rows[(n, "analyze_norefine")], rows[(n, "analyze")]
        v = n**3
        target = ("yes" if fu["seconds"] < TARGET_S else "**no**") if v == TARGET_VOXELS else ""
        print(f"| {n}³ | {v:,} | {sw['seconds']:.3f} | {nr['seconds']:.3f} | {fu['seconds']:.3f} | "
              f"{fu['peak_delta_mb']:.1f} | {v / fu['seconds']:,.0f} | {target} |")
    loads = [r[k] for r in rows.values() for k in ("load_before", "load_after")]
    print()
    print(f"1-min load average during the timed calls: {min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} CPUs "
          f"(the benchmark itself adds about 1; CPU s well below wall s in the lines above, or a load well above 1, "
          f"means another process competed for the cores).")
    print()
    print("peak ΔRSS is for the full analyze(); per mode (sweep / no refine / full) and φ of each run:")
    print()
    print("| grid | ΔRSS MB sweep / no refine / full | φ grid (sweep) | φ grid (no refine) | φ (refined) | φ* (refined) | warnings |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for n in sizes:
        sw, nr, fu = rows[(n, "sweep")], rows[(n, "analyze_norefine")], rows[(n, "analyze")]
        print(f"| {n}³ | {sw['peak_delta_mb']:.0f} / {nr['peak_delta_mb']:.0f} / {fu['peak_delta_mb']:.0f} | "
              f"{_fmt(sw['phi'])} | {_fmt(nr['phi'])} | {_fmt(fu['phi'])} | {_fmt(fu['phi_star'])} | {fu['warnings']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
