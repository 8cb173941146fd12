"""Descriptor capacity side by side: held-out φ error of hydride-v2 against wider cutoffs and higher l_max.

    OMP_NUM_THREADS=2 python bench/capacity.py [--variants base,r4,l3] [--members 1] [--epochs 20]
        [--points 1000] [--out bench/results/capacity.md]

Issue 13 asks which capacity moves the held-out φ error. Each variant is hydride-v2 with one parameter
changed (``base``: hydride-v2, r_cut 3 Å, l_max 2; ``r4``: r_cut 4 Å, σ scaled with it as the spec pins;
``l3``: l_max 3, which is hydride-v3), trained with the same recipe, seeds and training structures (the shipped model's folders:
split by the same structure hash) and evaluated on every structure it was not trained on in the held-out
groups that decide issue 13 (the hydride folders' test and validation splits, ``hydride-test``,
``hydride-lpo``, ``crystal-test``, ``crystal-relaxed``'s test and validation). Prints a Markdown table per
group (φ MAE, worst, R²) and the paired change of |Δφ| against ``base`` per structure (mean ± standard
error), so a difference smaller than its error is not read as a win. Few members and epochs keep it to
minutes; the ranking, not the absolute numbers, is what it measures.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elfscreen.model.descriptor import HYDRIDE_V2, HYDRIDE_V3  # noqa: E402
from elfscreen.model.evaluate import evaluated_rows, held_out_table  # noqa: E402
from elfscreen.model.train import TrainConfig, load_entries, train  # noqa: E402

TRAIN = ["crystal", "fluid", "crystal-relaxed", "hydride-proto", "hydride-random", "hydride-unrelaxed", "fluid-md-train"]
HELD_OUT = ["crystal-test", "hydride-test", "hydride-lpo"]
VARIANTS = {
    "base": HYDRIDE_V2,
    "r4": dataclasses.replace(HYDRIDE_V2, r_cut_a=4.0, name="hydride-v2-r4"),
    "l3": HYDRIDE_V3,
}
REPORTED = ("hydride-test", "hydride-lpo", "hydride-proto/", "hydride-random/", "hydride-unrelaxed/", "crystal-test",
            "crystal-relaxed/")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="base,r4,l3")
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--points", type=int, default=1000, help="training points per structure")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    entries, identity = load_entries([ROOT / "data" / d for d in TRAIN])
    held, _ = load_entries([ROOT / "data" / d for d in HELD_OUT])
    config = TrainConfig(members=args.members, epochs=args.epochs, points_per_structure=args.points, calibration=None)
    errors, tables, info = {}, {}, {}
    for name in args.variants.split(","):
        params = VARIANTS[name]
        t0 = time.perf_counter()
        model = train(entries, config, params, model_version=f"capacity-{name}", data_identity=identity)
        model.meta["datasets"] = TRAIN
        t_train = time.perf_counter() - t0
        trained = set(model.meta["splits"]["train"])
        chosen = [e for e in entries + held if e.id not in trained]
        rows, _ = evaluated_rows(model, chosen)
        rows = [r for r in rows if r["group"].startswith(REPORTED) and r["phi_ml"] is not None and r["phi_dft"] is not None]
        errors[name] = {r["id"]: (r["group"], abs(r["phi_ml"] - r["phi_dft"])) for r in rows}
        tables[name] = held_out_table(rows, None)
        info[name] = (params.n_features, t_train, time.perf_counter() - t0 - t_train)
        print(f"{name}: {params.n_features} features, trained in {t_train:.0f} s, evaluated {len(rows)} in "
              f"{info[name][2]:.0f} s", file=sys.stderr, flush=True)
    names = list(tables)
    lines = [f"Data identity {identity[:12]}, {len(entries)} training-folder structures; {args.members} member(s), "
             f"{args.epochs} epochs, {args.points} points per structure.", "",
             "| variant | features | train s | evaluate s |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {info[n][0]} | {info[n][1]:.0f} | {info[n][2]:.0f} |" for n in names]
    groups = [g for g in tables[names[0]] if "·" not in g]
    lines += ["", "| group | n | " + " | ".join(f"{n} φ MAE / worst / R²" for n in names)
              + "".join(f" | {n} − base Δ|err|" for n in names[1:]) + " |",
              "|---|---:|" + "---:|" * (2 * len(names) - 1)]
    for g in groups:
        cells = []
        for n in names:
            b = tables[n].get(g)
            cells.append(f"{b['phi_mae']:.3f} / {b['phi_worst']:.3f} / {b.get('phi_r2', float('nan')):.2f}" if b else "—")
        for n in names[1:]:
            d = np.array([errors[n][i][1] - e for i, (grp, e) in errors[names[0]].items() if grp == g and i in errors[n]])
            cells.append(f"{d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f}" if len(d) > 1 else "—")
        lines.append(f"| {g} | {tables[names[0]][g]['structures']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
