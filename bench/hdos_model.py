"""Accuracy of the H_DOS model (``model.hdos_model``) on the DFT hydride cells, side by side: the kernel
regressor on every feature (0.14.0: geometry and each element's atom fraction), the same kernel on the
geometry features alone (0.11–0.13) and the linear kernel alone (a ridge regression, 0.8–0.10).

    python bench/hdos_model.py [--train data/hydride-proto data/hydride-random ...] [--held-out data/hydride-test data/hydride-lpo]

Cross-validation on the training folders (5 folds, 4 shuffles: MAE, 2σ coverage with σ calibrated out
of bag inside each fold), then one fit on all of them predicting the held-out folders (never trained on:
MAE, worst miss, 2σ coverage). The constant mean is the floor every model must beat. Prints a table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from elfscreen.model.hdos_model import FEATURES, GEOMETRY_FEATURES, HDosModel, features
from elfscreen.model.train import load_entries

# name: (feature names, HDosModel options)
MODELS = {"kernel, geometry + composition (shipped)": (FEATURES, {}),
          "kernel, geometry only (0.11–0.13)": (GEOMETRY_FEATURES, {}),
          "linear kernel (ridge), geometry only (0.8–0.10)": (GEOMETRY_FEATURES, {"gamma": 0.0})}


def pairs(folders: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every feature (:data:`FEATURES`) and the DFT H_DOS of the compounds in ``folders``."""
    entries, _ = load_entries([f for f in folders if (Path(f) / "manifest.jsonl").exists()])
    rows = [(features(e.structure), e.meta["h_dos"]["value"]) for e in entries
            if (e.meta.get("h_dos") or {}).get("value") is not None]
    return np.array([x for x, _ in rows]), np.array([y for _, y in rows])


def fit(x: np.ndarray, y: np.ndarray, options: dict) -> HDosModel:
    return HDosModel(**options).fit(x, y).calibrate_out_of_bag()


def cross_validate(x: np.ndarray, y: np.ndarray, options: dict, folds: int = 5, shuffles: int = 4):
    err, inside = [], []
    for s in range(shuffles):
        order = np.random.default_rng(s).permutation(len(y))
        for part in np.array_split(order, folds):
            rest = np.setdiff1d(order, part)
            mean, std = fit(x[rest], y[rest], options).predict(x[part])
            err.append(np.abs(mean - y[part]))
            inside.append(np.abs(mean - y[part]) <= 2 * std)
    return np.concatenate(err), np.concatenate(inside)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", nargs="+", default=["data/hydride-proto", "data/hydride-random", "data/hydride-unrelaxed"])
    ap.add_argument("--held-out", nargs="+", default=["data/hydride-test", "data/hydride-lpo"])
    args = ap.parse_args()
    x, y = pairs(args.train)
    xh, yh = pairs(args.held_out)
    print(f"{len(y)} training compounds with H_DOS ({', '.join(args.train)}); {len(yh)} held out ({', '.join(args.held_out)})\n")
    print("| model | CV MAE | CV 2σ coverage | held-out MAE | held-out worst | held-out 2σ coverage |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| constant mean | {np.abs(y - y.mean()).mean():.3f} | | {np.abs(yh - y.mean()).mean():.3f} | "
          f"{np.abs(yh - y.mean()).max():.3f} | |")
    for name, (names, options) in MODELS.items():
        cols = [FEATURES.index(n) for n in names]
        options = {**options, "features_": names}
        err, inside = cross_validate(x[:, cols], y, options)
        mean, std = fit(x[:, cols], y, options).predict(xh[:, cols])
        miss = np.abs(mean - yh)
        print(f"| {name} | {err.mean():.3f} | {inside.mean():.0%} | {miss.mean():.3f} | {miss.max():.3f} | "
              f"{np.mean(miss <= 2 * std):.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
