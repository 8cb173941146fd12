"""Training the ELF network: sampling, structure-level splits, the paper's recipe, an ensemble.

Recipe (the paper's, ``../shared/notes/descriptor-spec.md``): MLP 165→128→128→1 (SiLU, sigmoid),
SmoothL1/Huber loss with β = 0.03, AdamW (lr 3e-4, weight decay 1e-6), batch 4096, 80 epochs, fixed
seeds; features standardised with the training set's mean and population std (std = √(var + 1e-12)).

Sampling: per structure, grid points are drawn roughly uniformly in ELF: the ELF range [0, 1] is cut
into ``N_BINS`` = 20 bins of width 0.05 and up to ``points_per_structure / N_BINS`` points are drawn
from each bin (all of a bin's points when it holds fewer), so the rare intermediate ELF values that
decide φ are not drowned by the common low and high ones. With ``bottleneck_weight`` w > 0 the bins
within ``BOTTLENECK_HALF_WIDTH`` of the structure's DFT φ (its manifest's ``topology.phi``: the ELF value
of the isosurface that carries the network's bottleneck) draw (1 + w)× as many points; the other bins
draw fewer, so the total stays ``points_per_structure``. With ``points_per_atom`` n > 0 a structure draws
max(``points_per_structure``, n × its atom count): a 32-atom fluid cell then gets as many points per
atomic environment as an 8-atom crystal, not 4× fewer, and small cells keep their share.

A loss term on φ itself (``phi_weight`` λ > 0): φ is a maximin over paths, so its gradient is the ELF's at
one point, the bottleneck voxel where the predicted field's superlevel set first spans the cell in three
directions. From half the epochs on, every ``PHI_REFRESH_EPOCHS`` epochs, each member predicts the ELF on
a grid of every training structure (its stored grid, halved per axis until at most ``PHI_GRID_POINTS``
points) and the sweep finds that voxel; until the next refresh, each step adds λ·Huber(f(x*) − φ_DFT)
over those voxels to the ELF loss. Pushing f(x*) towards the DFT φ moves the predicted φ towards it (until
another path takes over, which the next refresh finds).

Splits are by structure: a structure's id decides its side (hash of the id), never its points.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from pymatgen.core import Structure

from elfscreen.model.calibration import element_pairs, shortest_hh, shortest_xh
from elfscreen.model.descriptor import PAPER_V1, DescriptorParams, describe
from elfscreen.model.network import ElfModel, ElfNet
from elfscreen.model.predict import describe_stream
from elfscreen.model.sweep import EVENT_3D, sweep
from elfscreen.model.volumetric import ElfGrid

N_BINS = 20
BOTTLENECK_HALF_WIDTH = 0.1  # ELF; bins whose centre lies this close to φ are weighted
PHI_GRID_POINTS = 16_000  # the φ term's grid per structure: the stored one, halved per axis until this small
PHI_REFRESH_EPOCHS = 5  # the predicted bottlenecks are found again this often, from half the epochs on


@dataclass
class Entry:
    """One training structure: its id, structure and DFT ELF grid, and what the manifest says of it."""

    id: str
    structure: Structure
    grid: ElfGrid
    meta: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    members: int = 5
    epochs: int = 80
    batch_size: int = 4096
    lr: float = 3e-4
    weight_decay: float = 1e-6
    huber_beta: float = 0.03
    points_per_structure: int = 2000
    points_per_atom: int = 0  # > 0: a structure draws max(points_per_structure, this × its atoms)
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    hidden: tuple[int, ...] = (128, 128)
    bottleneck_weight: float = 0.0  # extra share of points in the ELF bins around the structure's DFT φ
    phi_weight: float = 0.0  # λ of the loss term on φ itself (module docstring); 0: the paper's loss alone
    calibration: str | None = "additive"  # model.calibration method fitted on the validation split; None: none


def split_of(entry_id: str, validation_fraction: float, test_fraction: float) -> str:
    """``train``, ``validation`` or ``test`` for a structure id, from a hash of the id alone."""
    u = int(hashlib.sha256(entry_id.encode()).hexdigest()[:12], 16) / 16**12
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def sample_points(values: np.ndarray, n_points: int, rng: np.random.Generator, phi: float | None = None,
                  bottleneck_weight: float = 0.0) -> np.ndarray:
    """Flat grid indices drawn roughly uniformly in ELF (``N_BINS`` equal bins over [0, 1]); with
    ``phi`` and ``bottleneck_weight`` w, the bins centred within ``BOTTLENECK_HALF_WIDTH`` of ``phi``
    get (1 + w) shares of the ``n_points`` and the others one share each."""
    flat = values.ravel()
    bins = np.minimum((flat * N_BINS).astype(int), N_BINS - 1)
    shares = np.ones(N_BINS)
    if phi is not None and bottleneck_weight > 0:
        centres = (np.arange(N_BINS) + 0.5) / N_BINS
        shares[np.abs(centres - phi) <= BOTTLENECK_HALF_WIDTH] += bottleneck_weight
    quota = np.maximum(1, (n_points * shares / shares.sum()).astype(int))
    picked = []
    for b in range(N_BINS):
        members = np.flatnonzero(bins == b)
        if len(members) > quota[b]:
            members = rng.choice(members, quota[b], replace=False)
        picked.append(members)
    return np.sort(np.concatenate(picked))


def point_set(entries: Sequence[Entry], n_points: int, params: DescriptorParams, seed: int,
              bottleneck_weight: float = 0.0, per_atom: int = 0):
    """Features (float32) and ELF targets at sampled points of every entry (max(``n_points``, ``per_atom``
    × its atom count) each), and each point's entry index."""
    feats, targets, owner = [], [], []
    for k, e in enumerate(entries):
        rng = np.random.default_rng([seed, int(hashlib.sha256(e.id.encode()).hexdigest()[:8], 16)])
        phi = (e.meta.get("topology") or {}).get("phi")
        quota = max(n_points, per_atom * len(e.structure))
        idx = sample_points(e.grid.values, quota, rng, phi, bottleneck_weight)
        ijk = np.stack(np.unravel_index(idx, e.grid.shape), -1)
        feats.append(describe(e.structure, ijk / np.array(e.grid.shape), params))
        targets.append(e.grid.values.ravel()[idx].astype(np.float32))
        owner.append(np.full(len(idx), k))
    return np.concatenate(feats), np.concatenate(targets), np.concatenate(owner)


@dataclass
class PhiSet:
    """What the φ term needs of each training structure with a DFT φ: standardised features (float16) at
    every point of its φ grid (C order, ``shapes[k]``) and the DFT φ (``topology.phi`` of its manifest)."""

    features: list[torch.Tensor]
    shapes: list[tuple[int, int, int]]
    phi: list[float]


def phi_grid_shape(shape: Sequence[int], max_points: int = PHI_GRID_POINTS) -> tuple[int, int, int]:
    """``shape`` halved per axis (rounding up) until it has at most ``max_points`` points."""
    out = np.array(shape)
    while out.prod() > max_points:
        out = (out + 1) // 2
    return tuple(int(n) for n in out)


def phi_set(entries: Sequence[Entry], params: DescriptorParams, mean: torch.Tensor, std: torch.Tensor) -> PhiSet:
    """The :class:`PhiSet` of ``entries`` (those without a DFT φ are left out); the whole-grid descriptor is
    the prediction's own (:func:`~elfscreen.model.predict.describe_stream`: FFT or direct, whichever is faster)."""
    out = PhiSet([], [], [])
    for e in entries:
        phi = (e.meta.get("topology") or {}).get("phi")
        if phi is None:
            continue
        shape = phi_grid_shape(e.grid.shape)
        x = torch.empty((int(np.prod(shape)), params.n_features), dtype=torch.float16)
        for rows, feats in describe_stream(e.structure, shape, params, torch.device("cpu")):
            x[torch.as_tensor(rows)] = ((feats.float() - mean) / std).half()
        out.features.append(x)
        out.shapes.append(shape)
        out.phi.append(float(phi))
    return out


def bottleneck_points(net: Callable[[torch.Tensor], torch.Tensor],
                      phis: PhiSet) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """For each structure of ``phis``: the features at the bottleneck voxel of ``net``'s predicted ELF (``net``:
    an :class:`ElfNet`, or any map from standardised features to ELF values; the voxel whose value is the
    grid's φ: where {ELF ≥ t} first spans the cell in three directions), its DFT φ, and the predicted grid
    φ (the voxel's value)."""
    xs, ys, grid_phi = [], [], []
    with torch.no_grad():
        for x, shape, phi in zip(phis.features, phis.shapes, phis.phi):
            pred = net(x.float()).numpy().reshape(shape)
            voxel = int(sweep(pred).events[EVENT_3D, 0])
            if voxel >= 0:
                xs.append(x[voxel].float())
                ys.append(phi)
                grid_phi.append(float(pred.flat[voxel]))
    if not xs:
        return torch.zeros((0, phis.features[0].shape[1] if phis.features else 0)), torch.zeros(0), np.zeros(0)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.float32), np.array(grid_phi)


def point_metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    """MAE, RMSE, identity R² (1 − SS_res/SS_tot) and correlated R² (squared Pearson r)."""
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    err = pred - ref
    ss_tot = float(((ref - ref.mean()) ** 2).sum())
    r = np.corrcoef(pred, ref)[0, 1] if len(ref) > 1 and pred.std() > 0 and ref.std() > 0 else np.nan
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
            "r2_identity": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
            "r2_correlated": float(r**2), "n_points": int(len(ref))}


def train(entries: Sequence[Entry], config: TrainConfig = TrainConfig(), params: DescriptorParams = PAPER_V1,
          model_version: str = "dev", data_identity: str | None = None,
          log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)) -> ElfModel:
    """Train an ensemble on ``entries`` and return it with its metrics and splits in ``meta``."""
    sides = {e.id: split_of(e.id, config.validation_fraction, config.test_fraction) for e in entries}
    train_e = [e for e in entries if sides[e.id] == "train"]
    held_e = [e for e in entries if sides[e.id] != "train"]
    if not train_e:
        raise ValueError("no structure falls on the training side; give more structures")
    t0 = time.perf_counter()
    log(f"describing {len(train_e)} training and {len(held_e)} held-out structures …")
    n_points, per_atom = config.points_per_structure, config.points_per_atom
    x_tr, y_tr, _ = point_set(train_e, n_points, params, config.seed, config.bottleneck_weight, per_atom)
    mean = torch.as_tensor(x_tr.mean(0), dtype=torch.float32)
    std = torch.as_tensor(np.sqrt(x_tr.var(0) + 1e-12), dtype=torch.float32)
    x_tr_t = (torch.as_tensor(x_tr) - mean) / std
    y_tr_t = torch.as_tensor(y_tr)
    if held_e:
        x_ho, y_ho, owner_ho = point_set(held_e, n_points, params, config.seed, per_atom=per_atom)
        x_ho_t = (torch.as_tensor(x_ho) - mean) / std
    log(f"{len(y_tr)} training points ({time.perf_counter() - t0:.1f} s)")
    phis = phi_set(train_e, params, mean, std) if config.phi_weight > 0 else None
    if phis is not None:
        log(f"φ term: {len(phis.phi)} structures, {sum(len(x) for x in phis.features)} grid points "
            f"({time.perf_counter() - t0:.1f} s)")
    members = []
    for m in range(config.members):
        torch.manual_seed(config.seed + m)
        net = ElfNet(params.n_features, config.hidden)
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = torch.nn.SmoothL1Loss(beta=config.huber_beta)
        gen = torch.Generator().manual_seed(config.seed + 1000 + m)
        x_phi = None
        for epoch in range(config.epochs):
            if phis is not None and epoch >= config.epochs // 2 and (epoch - config.epochs // 2) % PHI_REFRESH_EPOCHS == 0:
                x_phi, y_phi, grid_phi = bottleneck_points(net.eval(), phis)
                log(f"member {m + 1} epoch {epoch + 1}: φ term on {len(y_phi)} bottlenecks, "
                    f"grid φ MAE {np.abs(grid_phi - y_phi.numpy()).mean():.4f}")
            perm = torch.randperm(len(y_tr_t), generator=gen)
            total = 0.0
            net.train()
            for s in range(0, len(perm), config.batch_size):
                b = perm[s : s + config.batch_size]
                opt.zero_grad()
                loss = loss_fn(net(x_tr_t[b]), y_tr_t[b])
                if x_phi is not None and len(x_phi):
                    loss = loss + config.phi_weight * loss_fn(net(x_phi), y_phi)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == config.epochs:
                msg = f"member {m + 1}/{config.members} epoch {epoch + 1}/{config.epochs} loss {total / len(perm):.5f}"
                if held_e:
                    with torch.no_grad():
                        net.eval()
                        msg += f" held-out MAE {float((net(x_ho_t) - torch.as_tensor(y_ho)).abs().mean()):.4f}"
                log(msg)
        members.append(net.eval())
    model = ElfModel(params, mean, std, members, model_version)
    meta = {
        "data_identity": data_identity,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
        "sampling": f"{N_BINS} equal ELF bins over [0, 1], up to 1/{N_BINS} of "
                    + (f"max({config.points_per_structure}, {config.points_per_atom} × atoms)" if per_atom
                       else f"{config.points_per_structure}") + " points per bin per structure"
                    + (f"; the bins within {BOTTLENECK_HALF_WIDTH} of the structure's DFT φ weighted "
                       f"{1 + config.bottleneck_weight:g}×" if config.bottleneck_weight else ""),
        "loss": f"Huber β {config.huber_beta} on the sampled points"
                + (f" + {config.phi_weight:g} × the same on φ at the predicted bottlenecks (found every "
                   f"{PHI_REFRESH_EPOCHS} epochs from epoch {config.epochs // 2 + 1}, grids ≤ {PHI_GRID_POINTS} points)"
                   if config.phi_weight else ""),
        "splits": {side: sorted(i for i, s in sides.items() if s == side) for side in ("train", "validation", "test")},
        "training_range": training_range(train_e),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    if held_e:
        pred = model.predict(torch.as_tensor(x_ho))[0].numpy()
        meta["metrics_held_out_points"] = point_metrics(pred, y_ho)
        meta["metrics_held_out_points"]["structures"] = len(held_e)
    model.meta = meta
    validation = [e for e in held_e if sides[e.id] == "validation"]
    if config.calibration and config.members > 1 and len(validation) < 10:
        log(f"no φ calibration: {len(validation)} validation structures, 10 needed")
    elif config.calibration and config.members > 1:
        from elfscreen.model.evaluate import calibrate_on_validation

        try:
            meta["calibration"] = calibrate_on_validation(model, validation, config.calibration)
            log(f"φ calibration ({config.calibration}) fitted on {len(validation)} validation structures: "
                f"{meta['calibration']['params']}")
        except ValueError as exc:
            log(f"no φ calibration: {exc}")
    hdos = hdos_model_meta(entries, sides, config.seed, log)
    if hdos is not None:
        meta["hdos_model"] = hdos
    return model


def hdos_model_meta(entries: Sequence[Entry], sides: dict[str, str], seed: int = 0,
                    log: Callable[[str], None] = lambda msg: None, min_train: int = 8) -> dict | None:
    """The H_DOS model (:mod:`elfscreen.model.hdos_model`) fitted on the training-side compounds whose
    manifest carries ``h_dos`` (DFT, projwfc.x) and calibrated on the validation side; None when fewer
    than ``min_train`` such compounds are on the training side."""
    from elfscreen.model.errors import UnsupportedElementError
    from elfscreen.model.hdos_model import features, fit_hdos_model

    pairs: dict[str, list] = {"train": [], "validation": []}
    for e in entries:
        value = (e.meta.get("h_dos") or {}).get("value")
        if value is None or sides[e.id] not in pairs or {sp.symbol for sp in e.structure.composition.elements} == {"H"}:
            continue
        try:
            features(e.structure)
        except UnsupportedElementError as exc:
            log(f"H_DOS model: {e.id} left out ({exc})")
            continue
        pairs[sides[e.id]].append((e.structure, float(value)))
    if len(pairs["train"]) < min_train:
        if pairs["train"]:
            log(f"no H_DOS model: {len(pairs['train'])} compounds with H_DOS on the training side, {min_train} needed")
        return None
    model = fit_hdos_model(pairs["train"], pairs["validation"], seed=seed)
    log(f"H_DOS model fitted on {len(pairs['train'])} compounds, σ calibrated on {model.calibrated_on}")
    return model.to_dict()


def training_range(entries: Sequence[Entry]) -> dict:
    """Density range (Å³/atom), shortest H–H distance (Å), each other element's shortest distance to an H
    (Å, ``min_xh_a``), elements, H fraction (atoms) range and the pairs of other elements that share a
    training structure (``"Ca-Y"``, alphabetical) of the training structures."""
    vpa = [e.structure.volume / len(e.structure) for e in entries]
    h_fraction = [e.structure.composition.get_atomic_fraction("H") for e in entries]
    pairs = set().union(*(element_pairs(el.symbol for el in e.structure.composition.elements) for e in entries))
    min_hh, min_xh = [], {}
    for e in entries:
        d = shortest_hh(e.structure)
        if d is not None:
            min_hh.append(d)
        for element, dist in shortest_xh(e.structure).items():
            min_xh[element] = min(dist, min_xh.get(element, dist))
    return {"volume_per_atom_a3": [float(min(vpa)), float(max(vpa))],
            "min_hh_a": float(min(min_hh)) if min_hh else None, "min_xh_a": dict(sorted(min_xh.items())),
            "species": sorted({el.symbol for e in entries for el in e.structure.composition.elements}),
            "h_fraction": [float(min(h_fraction)), float(max(h_fraction))], "element_pairs": sorted(pairs)}


def load_entries(folders: Sequence[str | Path]) -> tuple[list[Entry], str]:
    """Every structure of the dataset folders (``model.dataset`` layout) and the data identity: a
    sha256 over their manifests."""
    from elfscreen.model.dataset import load_entry, read_manifest

    entries, digest = [], hashlib.sha256()
    for folder in folders:
        folder = Path(folder)
        manifest = folder / "manifest.jsonl"
        if not manifest.exists():
            raise FileNotFoundError(f"{folder}: no manifest.jsonl (not a dataset folder)")
        digest.update(manifest.read_bytes())
        for row in read_manifest(folder):
            structure, grid = load_entry(folder / row["file"])
            entries.append(Entry(row["id"], structure, grid, {**row, "folder": str(folder)}))
    return entries, digest.hexdigest()
