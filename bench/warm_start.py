"""Prototype relaxations from the prototype's guess against the warm start (``model.dataset.warm_start``:
the same prototype relaxed at another pressure, scaled), side by side, at the hydride settings.

    OMP_NUM_THREADS=1 python bench/warm_start.py [--data data/hydride-proto] [--out bench/results/warm_start.jsonl]

Cells: MgH4 I4/mmm at 200 GPa and NaH4 I4/mmm at 300 GPa (entries 100 and 107 of the prototype plan),
warm-started from what ``--data`` holds. One JSON line per relaxation as it finishes (a rerun skips
those done), then a table: relax CPU s, BFGS steps, start and relaxed volume per atom.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elfscreen.model.dataset import build_structure, plan, warm_start
from elfscreen.model.dft import HYDRIDE_SETTINGS, relax

ENTRIES = (100, 107)  # MgH4 I4/mmm 200 GPa, NaH4 I4/mmm 300 GPa


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/hydride-proto")
    ap.add_argument("--out", default="bench/results/warm_start.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["index"], r["start"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    for index in ENTRIES:
        params = plan("hydride-prototype", 0, index)
        guess, info = build_structure("hydride-prototype", 0, index, params)
        warm, warm_info = warm_start(Path(args.data), params, guess, info)
        if "start" not in warm_info:
            print(f"entry {index}: nothing relaxed to start from in {args.data}", file=sys.stderr)
            continue
        src = warm_info["start"]
        for label, start in (("prototype guess", guess), (f"{src['from']} ({src['pressure_gpa']:.0f} GPa), scaled", warm)):
            if (index, label) in done:
                continue
            relaxed, rec = relax(start, params["pressure_gpa"], HYDRIDE_SETTINGS, name=f"entry {index} {label}")
            row = {"index": index, "cell": f"{relaxed.composition.reduced_formula} {params['prototype']} "
                   f"{params['pressure_gpa']:.0f} GPa", "start": label, "relax_cpu_s": rec.get("cpu_s"),
                   "ionic_steps": rec.get("ionic_steps"), "start_volume_per_atom": round(start.volume / len(start), 4),
                   "volume_per_atom": round(relaxed.volume / len(relaxed), 4)}
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{'cell':28s} {'start':44s} {'CPU s':>7s} {'steps':>5s}  volume start → relaxed (Å³/atom)")
    for r in map(json.loads, out.read_text().splitlines()):
        print(f"{r['cell']:28s} {r['start']:44s} {r['relax_cpu_s']:7.0f} {r['ionic_steps']:5d}  "
              f"{r['start_volume_per_atom']:.3f} → {r['volume_per_atom']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
