"""Benchmark of the grid descriptor against dscribe's SOAP: direct path, FFT grid path, accuracy.

Cells (fixed seeds): ``crystal16`` a 2×2×2 supercell of distorted bcc H at 2.5 Å³/H (16 atoms, high
symmetry: the hardest case for the FFT path's cutoff kink); ``fluid64`` 64 H at random positions (H–H ≥
0.7 Å, 2.5 Å³/H); ``hydride44`` La4H40, La on fcc sites of a 5.1 Å cube and 40 H at random positions
(H–H ≥ 0.9 Å, La–H ≥ 1.9 Å). Each is sampled on its ~0.1 Å grid (N = ceil(a / 0.1), point (i, j, k) at
(i/N, j/N, k/N)). Descriptors: paper-v1 on every cell, the species-aware hydride-v2 on fluid64 and hydride44.
Per (cell, descriptor), each in a fresh process, one torch thread (``--threads``), after a warm-up call:

- ``dscribe`` dscribe's ``SOAP.create`` at a random subset of the grid points (Cartesian centres), the
              closest settings: r_cut 3.0, n_max = n_radial, l_max 2, σ as ours, rbf "gto", weighting "poly"
              (r0 3, c 1, m 1), periodic, dense, float32; species H (paper-v1) or every element of the cell
              (hydride-v2). Its radial basis differs from ours, so only the cost compares;
- ``direct``  ``model.descriptor.iter_describe`` at the SAME subset (float32);
- ``direct_grid`` the direct path over the WHOLE grid (grid points are grouped in space: faster per point
              than a random subset);
- ``grid``    ``model.descriptor_grid.iter_describe_grid`` over the WHOLE grid (float32), the FFT path
              with its compiled CPU kernels (``model.predict`` takes it where it is the faster one:
              ``use_grid_path``);
- ``grid_torch`` the same FFT path in torch (``compiled=False``: the CPU path before the compiled kernels,
              the one CUDA runs), for the before/after comparison in one run;
- ``pipeline`` ``model.predict.predict_grid`` with an untrained network (descriptor + network, whole grid).

Throughput is points per second of wall time (best of ``--repeat``) and of the process's CPU time (the
machine is shared; CPU time is what one core spent). The ratio columns divide our points/s by dscribe's.
Accuracy: the max |ours − float64 reference| (tests/reference.py: addition theorem, brute force over
images) over ``--check`` grid points (random, plus the grid point nearest each of the first 8 atoms),
relative to the largest reference feature there.

    python bench/descriptor.py --threads 1                    # the table (a few minutes on 2 cores)
    python bench/descriptor.py --cells fluid64 --descriptors paper-v1 --repeat 3
    python bench/descriptor.py --child --cell fluid64 --descriptor paper-v1 --mode grid --profile
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(ROOT / "tests"))
from harness import maxrss_mb, rss_mb, timed  # noqa: E402

SPACING_A = 0.1
SEED = 20240601
SUBSET_SEED = 7
MODES = ("dscribe", "direct", "direct_grid", "grid", "grid_torch", "pipeline")
CELL_DESCRIPTORS = {"crystal16": ("paper-v1",), "fluid64": ("paper-v1", "hydride-v2"),
                    "hydride44": ("paper-v1", "hydride-v2")}
TARGET_RATIO = 20.0


def _random_frac(edge: float, n: int, rng, fixed: np.ndarray, min_a: float, min_fixed_a: float) -> np.ndarray:
    frac: list[np.ndarray] = []
    while len(frac) < n:
        x = rng.random(3)
        if len(fixed) and np.min(np.linalg.norm(((fixed - x + 0.5) % 1 - 0.5) * edge, axis=1)) < min_fixed_a:
            continue
        if frac and np.min(np.linalg.norm(((np.array(frac) - x + 0.5) % 1 - 0.5) * edge, axis=1)) < min_a:
            continue
        frac.append(x)
    return np.array(frac)


def make_cell(name: str):
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(SEED)
    if name == "crystal16":
        s = Structure(Lattice.cubic((2 * 2.5) ** (1 / 3)), ["H", "H"], [[0, 0, 0], [0.5, 0.52, 0.49]])
        s.make_supercell([2, 2, 2])
        return s
    if name == "fluid64":
        edge = (64 * 2.5) ** (1 / 3)
        return Structure(Lattice.cubic(edge), ["H"] * 64, _random_frac(edge, 64, rng, np.zeros((0, 3)), 0.7, 0))
    if name == "hydride44":
        la = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        h = _random_frac(5.1, 40, rng, la, 0.9, 1.9)
        return Structure(Lattice.cubic(5.1), ["La"] * 4 + ["H"] * 40, np.vstack([la, h]))
    raise SystemExit(f"unknown cell {name!r}; use one of {', '.join(CELL_DESCRIPTORS)}")


def grid_shape(structure) -> tuple[int, int, int]:
    return tuple(math.ceil(x / SPACING_A - 1e-9) for x in structure.lattice.abc)


def grid_points(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1).reshape(-1, 3)


def subset_indices(n_points: int, size: int) -> np.ndarray:
    return np.sort(np.random.default_rng(SUBSET_SEED).choice(n_points, size=min(size, n_points), replace=False))


def dscribe_options(params, structure) -> dict:
    species = ["H"] if not params.embedding else sorted({s.specie.symbol for s in structure})
    return {"species": species, "r_cut": params.r_cut_a, "n_max": params.n_radial, "l_max": params.l_max,
            "sigma": params.sigma, "rbf": "gto", "weighting": {"function": "poly", "r0": params.r_cut_a, "c": 1, "m": 1},
            "periodic": True, "sparse": False, "average": "off", "dtype": "float32"}


def run_child(cell: str, descriptor: str, mode: str, subset: int, repeat: int, profile: bool, threads: int) -> dict:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from elfscreen.model.descriptor import DESCRIPTORS, iter_describe
    from elfscreen.model.descriptor_grid import iter_describe_grid
    from elfscreen.model.network import ElfModel
    from elfscreen.model.predict import predict_grid

    params = DESCRIPTORS[descriptor]
    structure = make_cell(cell)
    shape = grid_shape(structure)
    points = grid_points(shape)
    sub = points[subset_indices(len(points), subset)]
    extra: dict = {}

    def drain(stream):
        for _ in stream:
            pass

    if mode == "dscribe":
        from dscribe.descriptors import SOAP
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor.get_atoms(structure)
        if not params.embedding:  # paper-v1 sees the H atoms only, and so does dscribe's SOAP of species H
            atoms = atoms[[a.symbol == "H" for a in atoms]]
        soap = SOAP(**dscribe_options(params, structure))
        centres = sub @ structure.lattice.matrix
        soap.create(atoms, centers=centres[:64])
        call, n_timed = (lambda: soap.create(atoms, centers=centres, n_jobs=1)), len(sub)
        extra["dscribe_features"] = int(soap.get_number_of_features())
    elif mode == "direct":
        drain(iter_describe(structure, sub[:64], params))
        call, n_timed = (lambda: drain(iter_describe(structure, sub, params))), len(sub)
    elif mode == "direct_grid":
        drain(iter_describe(structure, points[:64], params))
        call, n_timed = (lambda: drain(iter_describe(structure, points, params))), len(points)
    elif mode == "grid":
        drain(iter_describe_grid(structure, (8, 8, 8), params))
        call, n_timed = (lambda: drain(iter_describe_grid(structure, shape, params))), len(points)
    elif mode == "grid_torch":
        drain(iter_describe_grid(structure, (8, 8, 8), params, compiled=False))
        call, n_timed = (lambda: drain(iter_describe_grid(structure, shape, params, compiled=False))), len(points)
    elif mode == "pipeline":
        model = ElfModel.untrained(descriptor=params, n_members=1, seed=0)
        predict_grid(structure, model, shape=(8, 8, 8))
        call, n_timed = (lambda: predict_grid(structure, model, shape=shape)), len(points)
    else:
        raise SystemExit(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    load_before, rss_before = os.getloadavg()[0], rss_mb()
    _, times, cpu, prof = timed(call, repeat, profile)
    best = int(np.argmin(times))
    out = {"cell": cell, "descriptor": descriptor, "mode": mode, "grid": list(shape), "timed_points": n_timed,
           "seconds": times[best], "cpu_seconds": min(cpu), "points_per_s": n_timed / times[best],
           "points_per_cpu_s": n_timed / max(min(cpu), 1e-9), "peak_delta_mb": max(0.0, maxrss_mb() - rss_before),
           "torch_threads": torch.get_num_threads(), "load_before": load_before, "load_after": os.getloadavg()[0],
           **extra}
    if prof is not None:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        out["profile"] = buf.getvalue()
    return out


def accuracy(cell: str, descriptor: str, n_check: int) -> dict:
    """Max |ours − float64 reference| / max |reference| at n_check grid points, grid and direct path (float32)."""
    import torch

    from elfscreen.model.descriptor import DESCRIPTORS, describe
    from elfscreen.model.descriptor_grid import describe_grid
    from reference import descriptor_reference

    params = DESCRIPTORS[descriptor]
    structure = make_cell(cell)
    shape = grid_shape(structure)
    points = grid_points(shape)
    cart = points @ structure.lattice.matrix
    near = [int(np.argmin(np.linalg.norm(((points - site.frac_coords + 0.5) % 1 - 0.5) @ structure.lattice.matrix,
                                         axis=1))) for site in list(structure)[:8]]
    idx = np.r_[subset_indices(len(cart), n_check), near]
    ref = descriptor_reference(structure, points[idx], params)
    scale = float(np.abs(ref).max())
    grid = describe_grid(structure, shape, params, dtype=torch.float32).reshape(len(points), -1)[idx]
    direct = describe(structure, points[idx], params)
    return {"grid": float(np.abs(grid - ref).max()) / scale, "direct": float(np.abs(direct - ref).max()) / scale,
            "scale": scale, "points": len(idx)}


def _child(cell: str, descriptor: str, mode: str, args) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--cell", cell, "--descriptor", descriptor,
           "--mode", mode, "--subset", str(args.subset), "--repeat", str(args.repeat), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        if mode == "dscribe" and "No module named 'dscribe'" in proc.stderr:
            print("#   dscribe skipped: not installed (pip install -e '.[bench]')", flush=True)
            return None
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"child {cell} {descriptor} {mode} failed (exit {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"#   {descriptor:10s} {mode:8s} {res['seconds']:7.3f} s wall {res['cpu_seconds']:7.3f} s CPU "
          f"{res['timed_points']:>8,} points {res['points_per_s']:>10,.0f} /s wall {res['points_per_cpu_s']:>10,.0f} /CPU s "
          f"peak ΔRSS {res['peak_delta_mb']:6.1f} MB (threads {res['torch_threads']}, load {res['load_before']:.2f}→"
          f"{res['load_after']:.2f})", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=",".join(CELL_DESCRIPTORS))
    ap.add_argument("--descriptors", default="paper-v1,hydride-v2")
    ap.add_argument("--subset", type=int, default=10000, help="random grid points timed for dscribe and the direct path")
    ap.add_argument("--check", type=int, default=200, help="grid points checked against the float64 reference")
    ap.add_argument("--repeat", type=int, default=1, help="best of K timed calls")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the children (0: torch's default)")
    ap.add_argument("--child", action="store_true", help="run one timed (cell, descriptor, mode) and print JSON")
    ap.add_argument("--cell", default="fluid64")
    ap.add_argument("--descriptor", default="paper-v1")
    ap.add_argument("--mode", default="grid", choices=MODES)
    ap.add_argument("--profile", action="store_true", help="with --child: print a cProfile of the call to stderr")
    args = ap.parse_args(argv)
    if args.child:
        out = run_child(args.cell, args.descriptor, args.mode, args.subset, max(1, args.repeat), args.profile, args.threads)
        if args.profile:
            print(out.pop("profile"), file=sys.stderr)
        print(json.dumps(out))
        return 0

    import torch

    from elfscreen.model.descriptor import DESCRIPTORS
    from elfscreen.model.descriptor_grid import CORE_RADIUS_A, G_CUT, core_count, radial_cuts

    wanted = [d for d in args.descriptors.split(",") if d]
    runs = [(c, d) for c in args.cells.split(",") if c for d in CELL_DESCRIPTORS[c] if d in wanted]
    print(f"# descriptor benchmark: grid spacing {SPACING_A} Å; dscribe {_version('dscribe')}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, torch threads per child {args.threads or 'default'}, "
          f"1-min load {os.getloadavg()[0]:.2f}")
    for name in wanted:
        p = DESCRIPTORS[name]
        cuts = " ".join(f"{c:.1f}" for c in radial_cuts(p, CORE_RADIUS_A, G_CUT))
        core = f"real-space core {CORE_RADIUS_A} Å for {core_count(p)} functions" if core_count(p) else "no core"
        print(f"# FFT path, {name} ({p.kernel} kernels): radial cuts {cuts} Å⁻¹, {core}")
    print(f"# subset {args.subset:,} points "
          f"(seed {SUBSET_SEED}) for dscribe and the direct path; best of {args.repeat}")
    rows = {}
    for cell, descriptor in runs:
        s = make_cell(cell)
        print(f"# {cell}: {s.composition.formula}, {s.lattice.abc[0]:.3f} Å, grid {grid_shape(s)}", flush=True)
        for mode in MODES:
            rows[(cell, descriptor, mode)] = _child(cell, descriptor, mode, args)
        rows[(cell, descriptor, "accuracy")] = accuracy(cell, descriptor, args.check)
    print()
    print("| cell | descriptor | grid points | dscribe pts/s (wall / CPU) | direct pts/s | direct, whole grid | "
          "FFT torch, whole grid | FFT compiled, whole grid | FFT torch ÷ dscribe (wall / CPU) | "
          "best whole-grid ÷ dscribe (wall / CPU) | descriptor + network s | max err FFT | max err direct |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for cell, descriptor in runs:
        ds, di, dg, gr, gt, pl, acc = (rows[(cell, descriptor, m)] for m in (*MODES, "accuracy"))
        whole = max((dg, gr), key=lambda r: r["points_per_cpu_s"])

        def ratio(r, key):
            return r[key] / ds[key] if ds else float("nan")

        print(f"| {cell} | {descriptor} | {gr['timed_points']:,} | "
              + (f"{ds['points_per_s']:,.0f} / {ds['points_per_cpu_s']:,.0f} | " if ds else "— | ")
              + f"{di['points_per_s']:,.0f} / {di['points_per_cpu_s']:,.0f} | {dg['points_per_s']:,.0f} / "
              f"{dg['points_per_cpu_s']:,.0f} | {gt['points_per_s']:,.0f} / {gt['points_per_cpu_s']:,.0f} | "
              f"{gr['points_per_s']:,.0f} / {gr['points_per_cpu_s']:,.0f} | "
              f"{ratio(gt, 'points_per_s'):.1f}× / {ratio(gt, 'points_per_cpu_s'):.1f}× | "
              f"{ratio(whole, 'points_per_s'):.1f}× / {ratio(whole, 'points_per_cpu_s'):.1f}× | {pl['seconds']:.3f} | "
              f"{acc['grid']:.1e} | {acc['direct']:.1e} |")
        if ds:
            best = ratio(whole, "points_per_cpu_s")
            verdicts.append(f"target ≥ {TARGET_RATIO:.0f}× dscribe per CPU second ({cell}, {descriptor}): {best:.1f}× "
                            f"→ {'met' if best >= TARGET_RATIO else 'NOT met'}")
    print()
    print("max err: max |ours − float64 reference| / max |reference feature| over "
          f"{args.check} random grid points + the grid points nearest 8 atoms, float32")
    for v in verdicts:
        print(v)
    return 0


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - only for the header
        return "(not installed)"


if __name__ == "__main__":
    raise SystemExit(main())
