"""H_DOS from geometry: a per-structure regressor trained on the H_DOS of the DFT runs.

H_DOS (the H share of the projected DOS at E_F, :mod:`elfscreen.model.hdos`) enters every Tc relation;
without it a compound's Tc is an upper bound (H_DOS assumed 1). This model predicts it from numbers of
the structure alone (:data:`FEATURES`): H fraction, volume per atom (Å³), the mean and spread of each
H's nearest-H distance (Å), the share of H paired in H2 units (nearest H < 1 Å), the mean nearest H–X
distance (Å), the atom-weighted mean Pauling electronegativity and covalent radius (Å) of the other
elements (:data:`elfscreen.model.elements.PROPERTIES`) and, since 0.14.0, the atom fraction of each
supported element (``x_La``, ``x_S`` …: the chemistry that the two element averages blur; measured in
docs/HDOS.md). A checkpoint names the features its model was fitted on, so older ones still load.

The regressor is a bootstrap ensemble of kernel ridge regressions in logit space (logit H_DOS, so
predictions stay in (0, 1)) on standardised features, with a linear plus Gaussian (RBF) kernel: the
linear part extrapolates as a ridge regression would, the Gaussian part bends with the data
(measured against ridge alone in docs/HDOS.md). ``fit(X, y)`` / ``predict(X) -> (mean, std)`` as
scikit-learn's, and ``to_dict``/``from_dict`` as plain numbers for the checkpoint's
``meta["hdos_model"]`` (the standardised training features and each member's dual coefficients). σ is
the members' spread scaled by a conformal factor so that |H_DOS_ML −
H_DOS_DFT| ≤ 2σ on 90 % of the calibration structures: the validation split when it holds at least 10
compounds with H_DOS, otherwise the members' out-of-bag predictions of the training structures (the
meta says which). Pure hydrogen is not this model's business: its H_DOS is 1 by definition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from pymatgen.core import Structure

from elfscreen.model.calibration import OOD_FACTOR, TARGET_COVERAGE, TARGET_Z, conformal_quantile
from elfscreen.model.elements import PROPERTIES
from elfscreen.model.errors import UnsupportedElementError
from elfscreen.model.tc import HDosEstimate

GEOMETRY_FEATURES = ("h_fraction", "volume_per_atom_a3", "hh_nearest_mean_a", "hh_nearest_std_a", "h2_share",
                     "hx_nearest_mean_a", "other_chi_mean", "other_radius_mean_a")
COMPOSITION_FEATURES = tuple(f"x_{e}" for e in sorted(PROPERTIES) if e != "H")  # atom fraction of each element
FEATURES = GEOMETRY_FEATURES + COMPOSITION_FEATURES  # what a new fit uses
EPS = 0.005  # H_DOS is clipped to [EPS, 1 − EPS] before the logit
MIN_CALIBRATION = math.ceil(1 / (1 - TARGET_COVERAGE))
FORMAT = "hdos-kernel-bootstrap-1"


def features(structure: Structure, names: Sequence[str] = FEATURES) -> np.ndarray:
    """The features ``names`` (some of :data:`FEATURES`) of ``structure``, which must hold H and at least
    one other element."""
    symbols = [s.specie.symbol for s in structure]
    h = [i for i, s in enumerate(symbols) if s == "H"]
    others = [s for s in symbols if s != "H"]
    if not h or not others:
        raise ValueError("the H_DOS model is for compounds with hydrogen")
    unknown = sorted(set(others) - set(PROPERTIES))
    if unknown:
        raise UnsupportedElementError(structure.composition.reduced_formula, unknown, tuple(PROPERTIES), by="the H_DOS model")
    centres, points, _, dist = structure.get_neighbor_list(r=4.0)
    hh, hx = np.full(len(structure), np.inf), np.full(len(structure), np.inf)
    is_h = np.array([s == "H" for s in symbols])
    for c, p, d in zip(centres, points, dist):
        if is_h[c]:
            if is_h[p]:
                hh[c] = min(hh[c], d)
            else:
                hx[c] = min(hx[c], d)
    hh, hx = np.minimum(hh[h], 4.0), np.minimum(hx[h], 4.0)
    chi = np.mean([PROPERTIES[s][0] for s in others])
    radius = np.mean([PROPERTIES[s][1] for s in others])
    value = dict(zip(GEOMETRY_FEATURES, (len(h) / len(symbols), structure.volume / len(structure), hh.mean(),
                                         hh.std(), float(np.mean(hh < 1.0)), hx.mean(), chi, radius)))
    value.update({name: symbols.count(name[2:]) / len(symbols) for name in COMPOSITION_FEATURES})
    return np.array([value[n] for n in names], dtype=float)


def _logit(y: np.ndarray) -> np.ndarray:
    y = np.clip(np.asarray(y, dtype=float), EPS, 1 - EPS)
    return np.log(y / (1 - y))


@dataclass
class HDosModel:
    """Bootstrap ensemble of kernel ridge regressions of logit H_DOS on the standardised features named by
    ``features_`` (some of :data:`FEATURES`); kernel k(z, z') = linear·(z·z')/d + exp(−gamma·|z − z'|²)
    (d features), penalty ``ridge``."""

    members: int = 32
    ridge: float = 0.1
    gamma: float = 0.1
    linear: float = 1.0
    seed: int = 0
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    basis_: np.ndarray | None = None  # (n_train, n_features): the standardised training features
    coefs_: np.ndarray | None = None  # (members, n_train): dual coefficients (0 for rows a member did not draw)
    intercepts_: np.ndarray | None = None  # (members,)
    k_: float = 1.0  # conformal factor on the members' spread
    features_: tuple[str, ...] = FEATURES  # the names of the columns it is fitted on
    calibrated_on: str = "none"
    domain_: dict = field(default_factory=dict)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
        return self.linear * (a @ b.T) / a.shape[1] + np.exp(-self.gamma * np.maximum(sq, 0.0))

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(x, dtype=float)) - self.mean_) / self.scale_

    def fit(self, x: np.ndarray, y: np.ndarray) -> "HDosModel":
        """Fit on features ``x`` (n, n_features) and H_DOS ``y`` (n,); remembers each member's
        out-of-bag rows for :meth:`calibrate_out_of_bag`."""
        x, t = np.atleast_2d(np.asarray(x, dtype=float)), _logit(y)
        if x.shape[1] != len(self.features_):
            raise ValueError(f"{x.shape[1]} feature columns for a model of {len(self.features_)} named features")
        self.mean_ = x.mean(0)
        self.scale_ = np.where(x.std(0) > 1e-12, x.std(0), 1.0)
        self.basis_ = self._standardise(x)
        gram = self._kernel(self.basis_, self.basis_)
        rng = np.random.default_rng(self.seed)
        self.coefs_, self.intercepts_ = np.zeros((self.members, len(x))), np.zeros(self.members)
        self._oob = []
        for m in range(self.members):
            pick = rng.integers(0, len(x), len(x))
            self.intercepts_[m] = t[pick].mean()
            dual = np.linalg.solve(gram[np.ix_(pick, pick)] + self.ridge * np.eye(len(pick)), t[pick] - self.intercepts_[m])
            np.add.at(self.coefs_[m], pick, dual)  # a row drawn twice: its two coefficients act on one kernel column
            self._oob.append(np.setdiff1d(np.arange(len(x)), pick))
        self._train = (x, np.asarray(y, dtype=float))
        return self

    def _members(self, x: np.ndarray) -> np.ndarray:
        logit = self._kernel(self._standardise(x), self.basis_) @ self.coefs_.T + self.intercepts_
        return 1 / (1 + np.exp(-logit))  # (n, members), H_DOS

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H_DOS mean over the members and calibrated σ (the members' spread × the conformal factor)."""
        m = self._members(x)
        return m.mean(1), self.k_ * m.std(1)

    def calibrate(self, x: np.ndarray, y: np.ndarray) -> "HDosModel":
        """Conformal factor from held-out structures (the validation split): |e| ≤ 2·k·spread on 90 %."""
        m = self._members(x)
        self.k_ = conformal_quantile(np.abs(m.mean(1) - y) / (TARGET_Z * np.maximum(m.std(1), 1e-4)))
        self.calibrated_on = f"validation ({len(y)} structures)"
        return self

    def calibrate_out_of_bag(self) -> "HDosModel":
        """Conformal factor from each training structure's prediction by the members that did not draw it."""
        x, y = self._train
        m = self._members(x)
        err, spread = [], []
        for i in range(len(x)):
            out = [j for j, oob in enumerate(self._oob) if i in oob]
            if len(out) >= 2:
                err.append(abs(m[i, out].mean() - y[i]))
                spread.append(max(m[i, out].std(), 1e-4))
        k = conformal_quantile(np.array(err) / (TARGET_Z * np.array(spread))) if err else math.inf
        self.k_ = k if math.isfinite(k) else float(np.max(np.array(err) / (TARGET_Z * np.array(spread)))) if err else 1.0
        self.calibrated_on = f"out-of-bag ({len(err)} training structures)"
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, "features": list(self.features_), "members": self.members, "ridge": self.ridge,
                "gamma": self.gamma, "linear": self.linear, "seed": self.seed, "mean": self.mean_.tolist(),
                "scale": self.scale_.tolist(), "basis": self.basis_.tolist(), "coefs": self.coefs_.tolist(),
                "intercepts": self.intercepts_.tolist(), "k": float(self.k_), "calibrated_on": self.calibrated_on,
                "domain": self.domain_}

    @classmethod
    def from_dict(cls, d: dict) -> "HDosModel":
        names = tuple(d.get("features", ()))
        if d.get("format") != FORMAT or not names or not set(names) <= set(FEATURES) or len(d["mean"]) != len(names):
            raise ValueError(f"H_DOS model of format {d.get('format')!r} with features {list(names)}: "
                             f"this elfscreen reads {FORMAT} with some of {list(FEATURES)}")
        m = cls(members=int(d["members"]), ridge=float(d["ridge"]), gamma=float(d["gamma"]), linear=float(d["linear"]),
                seed=int(d["seed"]), k_=float(d["k"]), features_=names, calibrated_on=str(d["calibrated_on"]),
                domain_=dict(d.get("domain", {})))
        m.mean_, m.scale_, m.basis_ = np.array(d["mean"]), np.array(d["scale"]), np.array(d["basis"])
        m.coefs_, m.intercepts_ = np.array(d["coefs"]), np.array(d["intercepts"])
        return m


def fit_hdos_model(train: Sequence[tuple[Structure, float]], validation: Sequence[tuple[Structure, float]] = (),
                   members: int = 32, seed: int = 0, names: Sequence[str] = FEATURES) -> HDosModel:
    """Fit on (structure, H_DOS) pairs of compounds, on the features ``names``, and calibrate σ on
    ``validation`` (or out-of-bag when it holds fewer than 10); the model's domain (ranges of each
    feature, elements) is kept for :func:`predict_h_dos`."""
    x = np.stack([features(s, names) for s, _ in train])
    model = HDosModel(members=members, seed=seed, features_=tuple(names)).fit(x, np.array([v for _, v in train]))
    if len(validation) >= MIN_CALIBRATION:
        model.calibrate(np.stack([features(s, names) for s, _ in validation]), np.array([v for _, v in validation]))
    else:
        model.calibrate_out_of_bag()
    model.domain_ = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "structures": len(train),
                     "elements": sorted({sp.symbol for s, _ in train for sp in s.composition.elements})}
    return model


def predict_h_dos(structure: Structure, meta: dict) -> HDosEstimate:
    """H_DOS of a compound from ``meta`` (:meth:`HDosModel.to_dict`): the value, σ and, outside the
    model's domain (a feature beyond its training range, an element it never saw), a note and σ × 2."""
    model = HDosModel.from_dict(meta)
    x = features(structure, model.features_)
    mean, std = model.predict(x)
    dom = model.domain_
    new = sorted({sp.symbol for sp in structure.composition.elements} - set(dom.get("elements", [])) - {"H"})
    named_below = {f"x_{e}" for e in new}  # a new element is named once, not again as its fraction column
    outside = [name for name, v, lo, hi in zip(model.features_, x, dom.get("min", []), dom.get("max", []))
               if not lo <= v <= hi and name not in named_below]
    note = None
    sigma = float(std[0])
    if outside or new:
        sigma *= OOD_FACTOR
        what = ([f"{', '.join(outside)} outside its training range"] if outside else []) + \
               ([f"element(s) {', '.join(new)} not in its training data"] if new else [])
        note = f"H_DOS predicted outside the H_DOS model's domain ({'; '.join(what)}): σ widened ×{OOD_FACTOR:g}"
    return HDosEstimate(float(np.clip(mean[0], EPS, 1.0)), sigma, "model", note)


def h_dos_for(structure: Structure, given: float | None, meta: dict | None) -> float | HDosEstimate | None:
    """The H_DOS a screening uses: the user's ``given`` value wins; a compound gets the model's
    prediction when the checkpoint carries one (``meta``); otherwise None (pure hydrogen: 1 by
    definition; a compound: assumed 1, :func:`~elfscreen.model.tc.estimate_tc`)."""
    if given is not None:
        return given
    if meta is None or all(sp.symbol == "H" for sp in structure.composition.elements):
        return None
    return predict_h_dos(structure, meta)
