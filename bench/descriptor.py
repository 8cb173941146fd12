"""Benchmark of the grid descriptor (model.descriptor) against dscribe's SOAP, and of descriptor + network.

Pure-hydrogen cubic cells of 16, 64 and 128 atoms at random positions (fixed seed, all H–H ≥ 0.7 Å,
2.5 Å³/atom) are sampled on a grid of ~0.1 Å spacing: N = ceil(a / 0.1) points per axis, point (i, j, k)
at fractional (i/N, j/N, k/N), as descriptor-spec.md pins. Per cell, each in a fresh subprocess:

- ``ours_grid``   ``model.descriptor.describe`` on the whole grid (float32, default chunk cap);
- ``ours_subset`` the same on a random subset of the grid points (fixed seed);
- ``dscribe``     dscribe's ``SOAP.create`` at the SAME subset of centres (Cartesian), closest settings:
                  r_cut 3.0, n_max 10, l_max 2, sigma 0.25, rbf "gto", weighting "poly" (r0 3, c 1, m 1:
                  1 + 2x³ − 3x², the smoothstep closest to our ½(cos πx + 1) cutoff), periodic=True,
                  sparse=False, average="off", dtype float32. Its radial basis (orthonormalised GTOs of a
                  Gaussian-smeared density) differs from ours (point atoms, Gaussians at μ_n), so only the
                  COST is compared, not the numbers. dscribe's C++ runs on one core for one structure;
- ``pipeline``    grid → predicted ELF at every grid point with an UNTRAINED network: ``ElfModel.untrained(
                  descriptor=PAPER_V1, n_members=1, seed=0).predict`` from model/network.py when that exists,
                  else a torch MLP 165→128→128→1 (SiLU, sigmoid), applied to each chunk iter_describe yields.

Every child warms up once on a tiny call (imports, torch kernels, dscribe's extension) before the timed
call, then measures RSS, runs the timed call and reads ``ru_maxrss``: peak ΔRSS = ru_maxrss − RSS just
before the call. Times are best of ``--repeat``. The 1-min load average is read before and after each run.

Targets printed at the end: a 64-atom cell (its ~0.1 Å grid) described and predicted in ≤ 0.4 s, and our
descriptor ≥ 20× dscribe's throughput (points per second on the same subset of centres).

    python bench/descriptor.py                                  # 16, 64, 128 atoms (about two minutes)
    python bench/descriptor.py --atoms 64 --subset 20000 --repeat 3
    python bench/descriptor.py --threads 1                      # one torch thread (a busy machine)
    python bench/descriptor.py --child --atoms 64 --mode ours_grid --profile   # cProfile of one run

Needs ``pip install dscribe`` for the dscribe column (it is reported as missing otherwise).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from harness import maxrss_mb, rss_mb, timed  # noqa: E402

VOLUME_PER_ATOM_A3 = 2.5
MIN_DISTANCE_A = 0.7
SPACING_A = 0.1
SEED = 20240601
SUBSET_SEED = 7
MODES = ("ours_grid", "ours_subset", "dscribe", "pipeline")
TARGET_ATOMS = 64
TARGET_PIPELINE_S = 0.4
TARGET_RATIO = 20.0
DSCRIBE_OPTIONS = {"r_cut": 3.0, "n_max": 10, "l_max": 2, "sigma": 0.25, "rbf": "gto",
                   "weighting": {"function": "poly", "r0": 3.0, "c": 1, "m": 1},
                   "periodic": True, "sparse": False, "average": "off", "dtype": "float32"}


# ---------------------------------------------------------------------------------------------
# the cell, its grid and the subset


def make_structure(n_atoms: int):
    """A cubic cell of ``n_atoms`` H atoms at random positions (fixed seed), all pairs ≥ MIN_DISTANCE_A apart."""
    from pymatgen.core import Lattice, Structure

    edge = (n_atoms * VOLUME_PER_ATOM_A3) ** (1.0 / 3.0)
    rng = np.random.default_rng(SEED)
    frac: list[np.ndarray] = []
    while len(frac) < n_atoms:
        x = rng.random(3)
        if frac:
            d = (np.array(frac) - x + 0.5) % 1.0 - 0.5
            if np.min(np.linalg.norm(d * edge, axis=1)) < MIN_DISTANCE_A:
                continue
        frac.append(x)
    return Structure(Lattice.cubic(edge), ["H"] * n_atoms, np.array(frac))


def grid_size(structure) -> int:
    return math.ceil(structure.lattice.a / SPACING_A - 1e-9)


def grid_points(n: int) -> np.ndarray:
    """Fractional coordinates (n³, 3) of point (i, j, k) = (i/n, j/n, k/n), i fastest (VASP order)."""
    u = np.arange(n) / n
    k, j, i = np.meshgrid(u, u, u, indexing="ij")
    return np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)


def subset_indices(n_points: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(SUBSET_SEED)
    return np.sort(rng.choice(n_points, size=min(size, n_points), replace=False))


# ---------------------------------------------------------------------------------------------
# one timed run (child process)


def _network():
    """(predict(features) → ELF tensor, description): model/network.py's untrained ElfModel when it
    provides ``ElfModel.untrained``, else a plain MLP 165→128→128→1 (SiLU, sigmoid)."""
    import torch

    from elfscreen.model.descriptor import PAPER_V1

    try:
        from elfscreen.model.network import ElfModel

        model = ElfModel.untrained(descriptor=PAPER_V1, n_members=1, seed=0)
        predict = model.predict
    except (ImportError, AttributeError) as exc:
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(
            torch.nn.Linear(PAPER_V1.n_features, 128), torch.nn.SiLU(),
            torch.nn.Linear(128, 128), torch.nn.SiLU(),
            torch.nn.Linear(128, 1), torch.nn.Sigmoid(),
        ).eval()

        def run(features):
            with torch.inference_mode():
                return mlp(features).squeeze(-1)

        return run, f"plain MLP 165→128→128→1 (model.network.ElfModel.untrained unavailable: {exc.__class__.__name__})"

    def run(features):
        with torch.inference_mode():
            mean, _std = predict(features)
        return mean

    return run, "elfscreen.model.network.ElfModel.untrained(n_members=1, seed=0).predict"


def run_child(n_atoms: int, mode: str, subset: int, repeat: int, profile: bool, threads: int = 0) -> dict:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)

    from elfscreen.model.descriptor import PAPER_V1, describe, iter_describe

    structure = make_structure(n_atoms)
    n = grid_size(structure)
    points = grid_points(n)
    sub = subset_indices(len(points), subset)
    tiny = points[:: max(1, len(points) // 64)][:64]  # warm-up: 64 points spread over the cell
    extra: dict = {}

    t0 = time.perf_counter()
    if mode == "ours_grid":
        describe(structure, tiny)
        call, n_timed = (lambda: describe(structure, points)), len(points)
    elif mode == "ours_subset":
        describe(structure, tiny)
        call, n_timed = (lambda: describe(structure, points[sub])), len(sub)
    elif mode == "dscribe":
        import dscribe
        from dscribe.descriptors import SOAP
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor.get_atoms(structure)
        soap = SOAP(species=["H"], **DSCRIBE_OPTIONS)
        centres = points[sub] @ structure.lattice.matrix
        soap.create(atoms, centers=tiny @ structure.lattice.matrix)
        call, n_timed = (lambda: soap.create(atoms, centers=centres, n_jobs=1)), len(sub)
        extra["dscribe_version"] = getattr(dscribe, "__version__", None) or _dist_version("dscribe")
        extra["dscribe_features"] = int(soap.get_number_of_features())
    elif mode == "pipeline":
        predict, extra["network"] = _network()
        for _, feats in iter_describe(structure, tiny, PAPER_V1):
            predict(feats)

        def call():
            elf = np.empty(len(points), dtype=np.float32)
            for idx, feats in iter_describe(structure, points, PAPER_V1):
                elf[idx] = predict(feats).detach().cpu().numpy().reshape(-1)
            return elf

        n_timed = len(points)
    else:
        raise SystemExit(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    warm_s = time.perf_counter() - t0

    load_before = os.getloadavg()[0]
    rss_before = rss_mb()
    result, times, cpu, prof = timed(call, repeat, profile)
    peak = maxrss_mb()
    best = int(np.argmin(times))
    out = {
        "atoms": n_atoms, "mode": mode, "grid": n, "points": len(points), "timed_points": n_timed,
        "seconds": times[best], "all_seconds": times, "cpu_seconds": cpu[best],
        "points_per_s": n_timed / times[best], "rss_before_mb": rss_before,
        "peak_delta_mb": max(0.0, peak - rss_before), "warm_up_s": warm_s,
        "torch_threads": torch.get_num_threads(), "edge_a": float(structure.lattice.a),
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "result_shape": list(np.shape(result)), **extra,
    }
    if prof is not None:
        import io
        import pstats

        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(20)
        stats.sort_stats("cumulative").print_stats(20)
        out["profile"] = buf.getvalue()
    return out


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - only for the header
        return None


# ---------------------------------------------------------------------------------------------
# the table (parent process)


def _child(n_atoms: int, mode: str, args) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--atoms", str(n_atoms), "--mode", mode,
           "--subset", str(args.subset), "--repeat", str(args.repeat), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        if mode == "dscribe" and "No module named 'dscribe'" in proc.stderr:
            print(f"#   {mode:11s} skipped: dscribe is not installed (pip install dscribe)", flush=True)
            return None
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"child {n_atoms} atoms {mode} failed (exit {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"#   {mode:11s} {res['seconds']:8.3f} s  {res['timed_points']:>8,} points  {res['points_per_s']:>10,.0f} points/s  "
          f"peak ΔRSS {res['peak_delta_mb']:7.1f} MB  (CPU {res['cpu_seconds']:.2f} s, torch threads "
          f"{res['torch_threads']}; warm-up {res['warm_up_s']:.2f} s, not counted; load {res['load_before']:.2f}→"
          f"{res['load_after']:.2f})", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", default="16,64,128", help="H atoms per cell, comma-separated")
    ap.add_argument("--subset", type=int, default=10000, help="random grid points timed for dscribe and for ours")
    ap.add_argument("--repeat", type=int, default=1, help="best of K timed calls per (cell, mode)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads in the children (0: torch's default)")
    ap.add_argument("--child", action="store_true", help="run one timed (cell, mode) and print JSON")
    ap.add_argument("--mode", default="ours_grid", choices=MODES, help="with --child: what to time")
    ap.add_argument("--profile", action="store_true", help="with --child: print a cProfile of the call to stderr")
    args = ap.parse_args(argv)
    atoms_list = [int(s) for s in args.atoms.split(",") if s.strip()]

    if args.child:
        if len(atoms_list) != 1:
            ap.error("--child needs a single --atoms value")
        out = run_child(atoms_list[0], args.mode, args.subset, max(1, args.repeat), args.profile, args.threads)
        if args.profile:
            print(out.pop("profile"), file=sys.stderr)
        print(json.dumps(out))
        return 0

    import torch

    print(f"# descriptor benchmark: pure-H cubic cells, random positions (seed {SEED}, min H–H {MIN_DISTANCE_A} Å, "
          f"{VOLUME_PER_ATOM_A3} Å³/atom), grid N = ceil(a / {SPACING_A} Å) per axis, point (i,j,k) at (i/N, j/N, k/N)")
    print(f"# ours: model.descriptor paper-v1 (r_cut 3.0 Å, n_radial 10, l_max 2, σ 0.25 Å, 165 features), float32, "
          f"CPU; dscribe SOAP {_dist_version('dscribe') or '(not installed)'}: "
          + ", ".join(f"{k}={v!r}" for k, v in DSCRIBE_OPTIONS.items()))
    print("# dscribe's radial basis (orthonormal GTOs, smeared atoms) differs from ours: only the cost is compared")
    print(f"# subset: {args.subset:,} random grid points (seed {SUBSET_SEED}), the same centres for ours and dscribe; "
          f"each (cell, mode) in a fresh process after a tiny warm-up call; times are best of {args.repeat}")
    threads = args.threads if args.threads > 0 else torch.get_num_threads()
    print(f"# python {sys.version.split()[0]}, torch {torch.__version__} ({threads} threads), "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"1-min load average at start {os.getloadavg()[0]:.2f}")
    print(flush=True)

    rows: dict[tuple[int, str], dict | None] = {}
    for n_atoms in atoms_list:
        s = make_structure(n_atoms)
        n = grid_size(s)
        print(f"# {n_atoms} atoms: a = {s.lattice.a:.4f} Å, grid {n}³ = {n**3:,} points", flush=True)
        for mode in MODES:
            rows[(n_atoms, mode)] = _child(n_atoms, mode, args)

    print()
    print("| cell | grid | points | ours: grid points/s | ours: grid s | ours: peak ΔRSS MB | torch threads | "
          "subset | ours: subset points/s | dscribe: subset points/s | ours/dscribe | descriptor + network: grid s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n_atoms in atoms_list:
        og, osub, ds, pl = (rows[(n_atoms, m)] for m in MODES)
        ratio = osub["points_per_s"] / ds["points_per_s"] if ds else None
        print(f"| H{n_atoms} | {og['grid']}³ | {og['points']:,} | {og['points_per_s']:,.0f} | {og['seconds']:.3f} | "
              f"{og['peak_delta_mb']:.1f} | {og['torch_threads']} | {osub['timed_points']:,} | {osub['points_per_s']:,.0f} | "
              + (f"{ds['points_per_s']:,.0f} | {ratio:.2f}× | " if ds else "— | — | ")
              + f"{pl['seconds']:.3f} |")

    print()
    print("every run (fresh process each): wall s, CPU s, peak ΔRSS and the 1-min load average before → after")
    print()
    print("| cell | run | points | wall s | CPU s | peak ΔRSS MB | torch threads | load before → after |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for (n_atoms, mode), r in rows.items():
        if r:
            print(f"| H{n_atoms} | {mode} | {r['timed_points']:,} | {r['seconds']:.3f} | {r['cpu_seconds']:.2f} | "
                  f"{r['peak_delta_mb']:.1f} | {r['torch_threads']} | {r['load_before']:.2f} → {r['load_after']:.2f} |")

    print()
    network = next((r["network"] for (_, m), r in rows.items() if m == "pipeline" and r), "?")
    print(f"network: {network}")
    loads = [r[k] for r in rows.values() if r for k in ("load_before", "load_after")]
    print(f"1-min load average during the timed calls: {min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} CPUs "
          f"(the benchmark itself adds up to the torch thread count; CPU s far below wall s × threads, or a higher "
          f"load, means another process competed for the cores)")
    print()
    if TARGET_ATOMS in atoms_list:
        pl, osub, ds = rows[(TARGET_ATOMS, "pipeline")], rows[(TARGET_ATOMS, "ours_subset")], rows[(TARGET_ATOMS, "dscribe")]
        ok = pl["seconds"] <= TARGET_PIPELINE_S
        print(f"target: H{TARGET_ATOMS} cell ({pl['points']:,} points) described and predicted in ≤ {TARGET_PIPELINE_S} s: "
              f"{pl['seconds']:.3f} s → {'met' if ok else 'NOT met'}")
    else:
        print(f"target (≤ {TARGET_PIPELINE_S} s for the H{TARGET_ATOMS} grid): not checked (no {TARGET_ATOMS}-atom cell in --atoms)")
    for n_atoms in atoms_list:
        osub, ds, og = rows[(n_atoms, "ours_subset")], rows[(n_atoms, "dscribe")], rows[(n_atoms, "ours_grid")]
        if ds is None:
            print(f"target: ours ≥ {TARGET_RATIO:.0f}× dscribe (H{n_atoms}): not checked (dscribe missing)")
            continue
        ratio = osub["points_per_s"] / ds["points_per_s"]
        print(f"target: ours ≥ {TARGET_RATIO:.0f}× dscribe's throughput (H{n_atoms}, same {osub['timed_points']:,} centres): "
              f"{ratio:.2f}× → {'met' if ratio >= TARGET_RATIO else 'NOT met'}  (our whole-grid throughput is "
              f"{og['points_per_s'] / ds['points_per_s']:.2f}× dscribe's subset throughput)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
