"""Evaluating an ELF model against DFT grids: per-structure errors, φ_ML vs φ_DFT, the paper's plots,
and whether the uncertainty is an error bar.

For each structure the ELF is predicted on exactly its DFT grid; the report gives MAE, RMSE, identity
R² and correlated R² (squared Pearson r, as the paper's Fig. 3) over every grid point, and φ, φ* from
the predicted grid next to those from the DFT grid, grouped by crystal family. Each row also holds the
ensemble spread of φ as the pipeline computes it (:func:`~elfscreen.model.pipeline.member_spread`) and
the inputs of the calibration (:mod:`elfscreen.model.calibration`); the report gives the coverage of
1σ and 2σ (raw spread and calibrated σ) per group of held-out structures (folder and split) and draws
a reliability plot. Rows are cached per structure (``cache_dir``): a rerun only computes what changed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from elfscreen.model.calibration import METHODS, coverage, domain_flags, fit
from elfscreen.model.errors import InputError
from elfscreen.model.network import ElfModel
from elfscreen.model.predict import predict_grid
from elfscreen.model.topology import Topology, analyze
from elfscreen.model.train import Entry, point_metrics, split_of
from elfscreen.model.volumetric import ElfGrid

ROW_FORMAT = 2  # bump when a row's fields change: cached rows of another format are recomputed
POOLED_POINTS = 20000


def crystal_family(entry: Entry) -> str:
    """The crystal system (pymatgen, symprec 0.1 Å) of a crystal entry; ``fluid`` for fluid snapshots."""
    if str(entry.meta.get("kind", "")).startswith("fluid"):
        return "fluid"
    try:
        return SpacegroupAnalyzer(entry.structure, symprec=0.1).get_crystal_system()
    except Exception:
        return "unknown"


def evaluate_entry(model: ElfModel, entry: Entry, device: str | None = None) -> tuple[dict, np.ndarray]:
    """Metrics of one structure (pointwise errors over the whole DFT grid, φ/φ* ML vs DFT) and the
    predicted ELF on that grid. With more than one member, the row also holds the
    ensemble spread (:func:`~elfscreen.model.pipeline.member_spread`: ``phi_std``, ``phi_star_std``,
    ``tc_std_k``, ``elf_std_mean``) and the calibration's inputs (:func:`uncertainty_inputs`)."""
    pred = predict_grid(entry.structure, model, shape=entry.grid.shape, device=device, name=entry.id)
    metrics = point_metrics(pred.grid.values.ravel(), entry.grid.values.ravel())
    ml, dft = analyze(pred.grid), analyze(entry.grid)
    row = {"id": entry.id, "family": crystal_family(entry), "kind": entry.meta.get("kind"), **metrics,
           "phi_ml": ml.phi, "phi_dft": dft.phi, "phi_star_ml": ml.phi_star, "phi_star_dft": dft.phi_star,
           "elf_spread_mean": float(pred.spread.mean())}
    if len(model.members) > 1:
        from elfscreen.model.pipeline import member_spread

        row.update({k: v for k, v in member_spread(pred.grid, pred.members, ml).items() if k != "method"})
        row.update(uncertainty_inputs(model, entry, pred.grid, pred.members, ml))
    return row, pred.grid.values


def uncertainty_inputs(model: ElfModel, entry: Entry, mean: ElfGrid, members: np.ndarray, topo: Topology) -> dict:
    """What a calibration may use besides the spread: the structure's size, density (Å³/atom) and shortest
    H–H (Å), its out-of-domain flags, the members' ELF spread at the bottleneck voxel, the Hessian
    eigenvalues of the mean ELF at the bottleneck (Fourier interpolant, per Å²), and the distance of the
    bottleneck's descriptor from the training features (RMS and max of the standardised features)."""
    from elfscreen.model.descriptor import describe
    from elfscreen.model.fourier import FourierField

    s = entry.structure
    h = s.copy()
    h.remove_species([el for el in h.composition.elements if el.symbol != "H"])
    d = h.get_neighbor_list(r=1.5)[3]
    out = {"n_atoms": len(s), "volume_per_atom_a3": s.volume / len(s), "min_hh_a": float(d.min()) if len(d) else None,
           "domain_flags": domain_flags(s, model.meta), "phi_dft_manifest": (entry.meta.get("topology") or {}).get("phi")}
    b = topo.bottleneck
    if b is None:
        return out
    out["bottleneck_elf_std"] = float(members[(slice(None), *b.voxel)].std())
    _, _, hess = FourierField(mean.values, s.lattice.matrix).gradient_hessian(np.array([b.frac]))
    out["saddle_eigenvalues"] = [float(x) for x in np.linalg.eigvalsh(hess[0])]
    z = model.standardise(torch.as_tensor(describe(s, np.array([b.frac]), model.descriptor))).cpu().numpy()[0].astype(float)
    out["feature_z_rms_bottleneck"] = float(np.sqrt(np.mean(z**2)))
    out["feature_z_max_bottleneck"] = float(np.abs(z).max())
    return out


def model_fingerprint(model: ElfModel) -> str:
    """sha256 of the weights and feature standardisation (not the version or meta: a recalibrated
    checkpoint with the same weights keeps its cached rows)."""
    digest = hashlib.sha256()
    for t in [model.feature_mean, model.feature_std] + [v for m in model.members for v in m.state_dict().values()]:
        digest.update(t.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def held_out_group(model: ElfModel, entry: Entry) -> str:
    """The group a held-out structure is reported in: its folder, and for the model's training folders
    the split (``validation``: what a calibration is fitted on; ``test``; ``unseen``: on the training
    side of the hash but added after training). ``train`` for structures the model was trained on."""
    folder = Path(str(entry.meta.get("folder", "data"))).name
    splits = model.meta.get("splits", {})
    if entry.id in set(splits.get("train", [])):
        return "train"
    trained_folders = {Path(str(d)).name for d in model.meta.get("datasets", [])}
    if folder not in trained_folders:
        return folder
    cfg = model.meta.get("config", {})
    side = split_of(entry.id, cfg.get("validation_fraction", 0.1), cfg.get("test_fraction", 0.1))
    return f"{folder}/{'unseen' if side == 'train' else side}"


def phi_block(rows: Sequence[dict]) -> dict:
    """φ MAE, worst, bias (ML − DFT) and R², median identity and correlated R², mean ELF MAE and RMSE of ``rows``."""
    phi_ml = np.array([r["phi_ml"] for r in rows], float)
    phi_dft = np.array([r["phi_dft"] for r in rows], float)
    out = {"structures": len(rows), "elf_mae_mean": float(np.mean([r["mae"] for r in rows])),
           "elf_rmse_mean": float(np.mean([r["rmse"] for r in rows])),
           "elf_r2_identity_median": float(np.median([r["r2_identity"] for r in rows])),
           "elf_r2_correlated_median": float(np.median([r["r2_correlated"] for r in rows])),
           "phi_mae": float(np.abs(phi_ml - phi_dft).mean()), "phi_worst": float(np.abs(phi_ml - phi_dft).max()),
           "phi_bias": float((phi_ml - phi_dft).mean())}
    if len(rows) > 1 and phi_dft.std() > 0:
        out["phi_r2"] = float(1 - ((phi_ml - phi_dft) ** 2).sum() / ((phi_dft - phi_dft.mean()) ** 2).sum())
    return out


def summarise(rows: Sequence[dict]) -> dict:
    """:func:`phi_block` overall and per crystal family (fluid snapshots form their own group)."""
    families = sorted({r["family"] for r in rows})
    return {"all": phi_block(rows), **{f: phi_block([r for r in rows if r["family"] == f]) for f in families}} if rows else {}


def held_out_table(rows: Sequence[dict], calibration: dict | None) -> dict:
    """The model card's table: φ MAE, worst, bias, R², ELF MAE and the calibrated 2σ coverage of each held-out
    group (folder and split) and of each folder's crystal families over all its rows the model was not trained on
    (``"crystal-relaxed · cubic"``: test, validation and unseen rows together). Rows without φ on either side
    are left out; ``train`` rows are never in it."""
    rows = [r for r in rows if r.get("group") != "train" and r.get("phi_ml") is not None and r.get("phi_dft") is not None]
    blocks: dict[str, list[dict]] = {}
    for r in rows:
        blocks.setdefault(r.get("group", "all"), []).append(r)
    for folder in sorted({g.split("/")[0] for g in blocks}):
        in_folder = [r for r in rows if r.get("group", "all").split("/")[0] == folder]
        families = sorted({r["family"] for r in in_folder})
        if len(families) > 1:  # one family is the folder's own row again
            for f in families:
                blocks[f"{folder} · {f}"] = [r for r in in_folder if r["family"] == f]
    out = {}
    for key in sorted(blocks):
        out[key] = {**phi_block(blocks[key]), "within_2sigma": coverage(blocks[key], calibration)["within_2sigma"]}
    return out


def evaluated_rows(model: ElfModel, entries: Sequence[Entry], device: str | None = None, progress=None,
                   cache_dir: str | Path | None = None) -> tuple[list[dict], list[tuple[np.ndarray, np.ndarray]]]:
    """:func:`evaluate_entry` of every entry (with its ``group``, :func:`held_out_group`) and a sample of
    (predicted, DFT) ELF values of each for the parity plots. With ``cache_dir``, each structure's row and
    sample are kept in ``cache_dir/<weights fingerprint>/<id>.json|.npz`` and reused while the weights, the
    grid file (its sha256 in the manifest) and :data:`ROW_FORMAT` are the same."""
    rows, pooled = [], []
    folder = Path(cache_dir) / model_fingerprint(model)[:16] if cache_dir else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    for n, e in enumerate(entries):
        key = {"format": ROW_FORMAT, "file_sha256": e.meta.get("file_sha256")}
        cached = _read_cached(folder, e.id, key) if folder else None
        if cached is None:
            row, pred = evaluate_entry(model, e, device)
            rng = np.random.default_rng(int(hashlib.sha256(e.id.encode()).hexdigest()[:8], 16))
            pick = rng.choice(pred.size, min(pred.size, POOLED_POINTS), replace=False)
            sample = (pred.ravel()[pick].astype(np.float32), e.grid.values.ravel()[pick].astype(np.float32))
            if folder:
                np.savez_compressed(folder / f"{e.id}.npz", pred=sample[0], ref=sample[1])
                (folder / f"{e.id}.json").write_text(json.dumps({**key, "row": row}))
        else:
            row, sample = cached
        rows.append({**row, "group": held_out_group(model, e)})
        pooled.append(sample)
        if progress:
            progress(n + 1, len(entries), e.id)
    return rows, pooled


def _read_cached(folder: Path, entry_id: str, key: dict):
    try:
        data = json.loads((folder / f"{entry_id}.json").read_text())
        with np.load(folder / f"{entry_id}.npz") as z:
            sample = (z["pred"], z["ref"])
    except (OSError, ValueError, KeyError):
        return None
    return (data["row"], sample) if all(data.get(k) == v for k, v in key.items()) else None


def coverage_by_group(rows: Sequence[dict], calibration: dict | None) -> dict:
    """:func:`~elfscreen.model.calibration.coverage` of the raw spread and of ``calibration`` (when given)
    over all rows, over those outside the validation split (``held-out``: what a calibration fitted on
    validation never saw) and per ``group``."""
    groups = sorted({r.get("group", "all") for r in rows})
    val = {id(r) for r in validation_rows(rows)}
    out = {}
    for g in ["all", "held-out", *groups]:
        rs = [r for r in rows if g == "all" or (g == "held-out" and id(r) not in val) or r.get("group") == g]
        out[g] = {"raw": coverage(rs, None), **({"calibrated": coverage(rs, calibration)} if calibration else {})}
    return out


def validation_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows a calibration may be fitted on: the validation split of the model's training folders."""
    return [r for r in rows if str(r.get("group", "")).endswith("/validation")]


def calibration_options(rows: Sequence[dict]) -> dict:
    """Each calibration method (:data:`~elfscreen.model.calibration.METHODS`) fitted on the validation rows,
    with its coverage per group; empty when fewer than 10 validation rows have φ."""
    val = [r for r in validation_rows(rows) if r.get("phi_ml") is not None and r.get("phi_dft") is not None]
    if len(val) < 10:
        return {}
    out = {}
    for method in METHODS:
        cal = fit(val, method)
        out[method] = {"calibration": cal, "coverage": coverage_by_group(rows, cal)}
    return out


def calibrate_on_validation(model: ElfModel, entries: Sequence[Entry], method: str = "additive",
                            device: str | None = None) -> dict:
    """Fit ``method`` on ``entries`` (the validation split: whole DFT grids, the members' φ spread as the
    pipeline computes it) and return the calibration for ``model.meta["calibration"]``."""
    rows = [evaluate_entry(model, e, device)[0] for e in entries]
    return fit(rows, method)


def evaluate(model: ElfModel, entries: Sequence[Entry], out_dir: str | Path, device: str | None = None,
             progress=None, cache_dir: str | Path | None = None, fit_method: str | None = None) -> dict:
    """Evaluate on ``entries``; write ``report.json``, ``report.md`` (:func:`markdown`) and the plots
    (PNG, the reliability plot among them) into ``out_dir``. Coverage uses ``model.meta["calibration"]``
    when the checkpoint has one; with ``fit_method``, that method is first fitted on the validation rows
    of ``entries`` and stored in ``model.meta["calibration"]`` (the caller saves the checkpoint). The
    report also compares every method fitted on the validation rows (``calibration_options``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, pooled = evaluated_rows(model, entries, device, progress, cache_dir)
    report = {"model_version": model.model_version, "summary": summarise(rows), "structures": rows}
    spread = any(r.get("phi_std") is not None for r in rows)
    if fit_method and not spread:
        raise InputError(model.model_version, "has no ensemble spread to calibrate (one member, or no φ on any structure)")
    if spread:
        options = calibration_options(rows)
        if fit_method:
            if fit_method not in options:
                raise InputError("validation split", f"holds {len(validation_rows(rows))} of these structures; "
                                                     "a calibration needs at least 10 with φ")
            model.meta["calibration"] = options[fit_method]["calibration"]
        calibration = model.meta.get("calibration")
        report["coverage"] = coverage_by_group(rows, calibration)
        report["calibration"] = calibration
        report["calibration_options"] = options
    report["held_out"] = held_out_table(rows, model.meta.get("calibration"))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    if rows:
        from elfscreen.model.plots.evaluate import write_plots, write_reliability  # matplotlib only here

        write_plots(rows, pooled, out)
        if "coverage" in report:
            write_reliability(rows, report["calibration"], out / "reliability.png")
    return report


def markdown(report: dict, worst: int = 5) -> str:
    """The report as Markdown: one row per group (all, then each family) and the largest φ errors."""
    def num(block, key, fmt):
        return format(block[key], fmt) if block.get(key) is not None else "—"

    lines = [f"Model `{report['model_version']}`, {len(report['structures'])} structures (whole DFT grids).", "",
             "| group | structures | ELF MAE (mean) | ELF RMSE (mean) | identity R² (median) | correlated R² (median) "
             "| φ MAE | φ bias | φ R² |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group, b in report["summary"].items():
        lines.append(f"| {group} | {b['structures']} | {num(b, 'elf_mae_mean', '.4f')} | {num(b, 'elf_rmse_mean', '.4f')} "
                     f"| {num(b, 'elf_r2_identity_median', '.3f')} | {num(b, 'elf_r2_correlated_median', '.3f')} "
                     f"| {num(b, 'phi_mae', '.3f')} | {num(b, 'phi_bias', '+.3f')} | {num(b, 'phi_r2', '.2f')} |")
    if report.get("held_out"):
        lines += ["", "Per held-out group (folder and split) and per folder's crystal family (all its rows not trained on); "
                  "2σ coverage with the checkpoint's σ as a result carries it.", "",
                  "| held-out group | structures | φ MAE | φ worst | φ bias | φ R² | ELF MAE | 2σ coverage |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for group, b in report["held_out"].items():
            lines.append(f"| {group} | {b['structures']} | {b['phi_mae']:.3f} | {b['phi_worst']:.3f} | {b['phi_bias']:+.3f} "
                         f"| {num(b, 'phi_r2', '.2f')} | {b['elf_mae_mean']:.4f} | {b['within_2sigma']:.0%} |")
    if report.get("coverage"):
        cal = report.get("calibration")
        lines += ["", f"Coverage: share of structures with |φ_ML − φ_DFT| ≤ 1σ and ≤ 2σ; σ the raw ensemble spread"
                  + (f" and the calibrated σ ({cal['method']}, fitted on {cal['fitted_on']['structures']} validation "
                     f"structures; target ≥ {cal['target']['coverage']:.0%} within {cal['target']['z']:g}σ)." if cal else
                     " (the checkpoint has no calibration)."), "",
                  "| group | structures | raw ≤1σ | raw ≤2σ | raw median σ | calibrated ≤1σ | calibrated ≤2σ | calibrated median σ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for group, c in report["coverage"].items():
            raw, calib = c["raw"], c.get("calibrated", {})
            if not raw.get("structures"):
                continue
            lines.append(f"| {group} | {raw['structures']} | {raw['within_1sigma']:.0%} | {raw['within_2sigma']:.0%} "
                         f"| {raw['median_sigma']:.4f} | {num(calib, 'within_1sigma', '.0%')} "
                         f"| {num(calib, 'within_2sigma', '.0%')} | {num(calib, 'median_sigma', '.4f')} |")
    if report.get("calibration_options"):
        methods = list(report["calibration_options"])
        lines += ["", "Calibration options, each fitted on the validation rows only: share within 1σ / 2σ and median σ.", "",
                  "| group | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        groups = report["calibration_options"][methods[0]]["coverage"]
        for group in groups:
            cells = []
            for m in methods:
                c = report["calibration_options"][m]["coverage"][group]["calibrated"]
                cells.append(f"{c['within_1sigma']:.0%} / {c['within_2sigma']:.0%} (σ {c['median_sigma']:.3f})"
                             if c.get("structures") else "—")
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
    rows = sorted([r for r in report["structures"] if r["phi_ml"] is not None and r["phi_dft"] is not None],
                  key=lambda r: -abs(r["phi_ml"] - r["phi_dft"]))[:worst]
    if rows:
        lines += ["", "Largest φ errors:"]
        lines += [f"- `{r['id']}` ({r['family']}): φ_ML {r['phi_ml']:.3f} vs φ_DFT {r['phi_dft']:.3f}, "
                  f"identity R² {r['r2_identity']:.3f}" for r in rows]
    return "\n".join(lines) + "\n"
