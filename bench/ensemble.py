"""Ensemble spread of φ and φ*: members read at the mean's critical points vs a full analysis per member.

For each structure (the first ``--per-folder`` of each dataset folder, default data/crystal-test and
data/fluid-md) the shipped model (``model/weights/elf-h.pt``) predicts the ELF at ``--spacing`` Å. Then,
side by side in one process:

- full: ``model.topology.analyze`` on every member grid (M sweeps and refinements) — the reference;
- cheap: ``model.pipeline.member_spread`` (what the pipeline runs): each member's ELF refined by Newton
  from the mean's refined bottleneck / molecular bottleneck (``values_at_events``);
- two simpler readings at the mean's point, for comparison: the member's Fourier-interpolated value at
  the mean's refined critical point (no Newton), and the member's grid value at the mean's event voxel.

Per structure it prints φ and φ* of the mean, the members' std (full vs cheap), the largest
|member value − full member value| of each reading, and the seconds of the full member analyses vs
``member_spread`` (the mean's own analysis is the same in both and not counted).

    python bench/ensemble.py [--per-folder 6] [--spacing 0.1] [--folders data/crystal-test data/fluid-md]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _diff(a: list, b: list) -> float:
    """Largest |a − b| over members where both exist (NaN: none); a mismatch of existence counts as inf."""
    pairs = [(x, y) for x, y in zip(a, b) if not (x is None and y is None)]
    if any((x is None) != (y is None) for x, y in pairs):
        return float("inf")
    return max((abs(x - y) for x, y in pairs), default=float("nan"))


def _std(x: list) -> float:
    x = np.array([np.nan if v is None else v for v in x], dtype=float)
    return float(np.nanstd(x)) if np.isfinite(x).any() else float("nan")


def main() -> None:
    from elfscreen.model.fourier import FourierField
    from elfscreen.model.pipeline import load_model, member_spread
    from elfscreen.model.predict import predict_grid
    from elfscreen.model.threads import configure_threads
    from elfscreen.model.topology import analyze, values_at_events
    from elfscreen.model.train import load_entries
    from elfscreen.model.volumetric import ElfGrid

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folders", nargs="+", default=[str(ROOT / "data/crystal-test"), str(ROOT / "data/fluid-md")])
    ap.add_argument("--per-folder", type=int, default=6)
    ap.add_argument("--spacing", type=float, default=0.1)
    args = ap.parse_args()
    threads = configure_threads()
    model = load_model()
    print(f"model {model.model_version}, {len(model.members)} members; spacing {args.spacing} Å; {threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| structure | grid | φ mean | φ std full / cheap | max Δφ member: Newton / interp / voxel "
          "| φ* mean | φ* std full / cheap | max Δφ* member: Newton / interp / voxel | full s | cheap s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    worst = {"newton": [], "interp": [], "voxel": []}
    full_s = cheap_s = 0.0
    for folder in args.folders:
        entries, _ = load_entries([folder])
        for entry in entries[: args.per_folder]:
            pred = predict_grid(entry.structure, model, spacing_a=args.spacing, name=entry.id)
            mean = analyze(pred.grid)
            members = [ElfGrid(entry.structure, m.astype(np.float64), entry.id) for m in pred.members]
            t0 = time.perf_counter()
            full = [analyze(m) for m in members]
            t_full = time.perf_counter() - t0
            t0 = time.perf_counter()
            member_spread(pred.grid, pred.members, mean)
            t_cheap = time.perf_counter() - t0
            full_s, cheap_s = full_s + t_full, cheap_s + t_cheap
            row = {}
            for key, event in (("phi", mean.bottleneck), ("phi_star", mean.molecular_bottleneck)):
                ref = [getattr(t, key) for t in full]
                newton = [values_at_events(m, mean)[key] for m in members]
                if event is None:
                    interp = voxel = [None] * len(members)
                else:
                    interp = [float(FourierField(m.values, m.structure.lattice.matrix).value(np.array(event.frac))[0])
                              for m in members]
                    voxel = [float(m.values[tuple(event.voxel)]) for m in members]
                diffs = {"newton": _diff(newton, ref), "interp": _diff(interp, ref), "voxel": _diff(voxel, ref)}
                for k, d in diffs.items():
                    worst[k].append(d)
                value = getattr(mean, key)
                row[key] = (f"{'—' if value is None else f'{value:.4f}'} | {_std(ref):.4f} / {_std(newton):.4f} | "
                            f"{diffs['newton']:.4f} / {diffs['interp']:.4f} / {diffs['voxel']:.4f}")
            print(f"| {entry.id} | {'×'.join(map(str, pred.grid.shape))} | {row['phi']} | {row['phi_star']} | "
                  f"{t_full:.3f} | {t_cheap:.3f} | {t_full / t_cheap:.1f}× |", flush=True)
    print("\n| reading at the mean's critical point | median max |Δ| | worst max |Δ| (φ and φ*, all structures) |")
    print("|---|---|---|")
    for k, label in (("newton", "member refined by Newton (pipeline)"), ("interp", "member interpolated, no Newton"),
                     ("voxel", "member grid value at the mean's voxel")):
        d = np.array([x for x in worst[k] if np.isfinite(x) or np.isinf(x)])
        print(f"| {label} | {np.median(d):.4f} | {d.max():.4f} |")
    print(f"\nmember analyses, all structures: full {full_s:.2f} s, cheap {cheap_s:.2f} s ({full_s / cheap_s:.1f}× less)")


if __name__ == "__main__":
    main()
