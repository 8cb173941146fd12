"""The ``elfscreen`` command line. Every subcommand calls the same ``model`` functions as the API.

JSON goes to stdout; messages and progress to stderr. Exit 0 on success, 2 when an input is unusable
(the message names the input and the problem; stdout holds the result schema's error object);
``submit`` and ``watch`` exit 1 when a structure failed or none was found (``app/batch.py``).

Start-up: only argparse and the light ``elfscreen.model`` modules are imported here; each command
imports what it needs when it runs (``topology`` never imports torch), and the arguments of
``dataset`` and ``analyze`` (whose choices come from heavy modules) are added only when that command is
the one being run. The command's process then sizes its thread pools (:mod:`elfscreen.model.threads`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from elfscreen.model import __version__
from elfscreen.model.errors import InputError
from elfscreen.model.tc import TC_MODELS

STRUCTURE_FORMATS = ["cif", "poscar", "extxyz", "res"]


def _add_result_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hdos", type=float, help="H share of the DOS at the Fermi level (default 1 for pure H; assumed 1 otherwise)")
    p.add_argument("--tc-model", choices=sorted(TC_MODELS), default="belli2021", help="Tc relation (default belli2021)")
    p.add_argument("--no-refine", action="store_true", help="report raw grid values, no sub-voxel refinement")
    p.add_argument("--min-persistence", type=float, default=0.005, help="hide critical points of smaller ELF persistence")


def _add_grid_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--spacing", type=float, help="grid spacing in Å (default 0.1)")
    g.add_argument("--grid", type=int, nargs=3, metavar=("N1", "N2", "N3"), help="predict on exactly this grid")
    p.add_argument("--model", help="ELF model checkpoint (default: the one shipped with elfscreen)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda when present)")
    p.add_argument("--format", choices=STRUCTURE_FORMATS, help="structure format (default: from the name)")


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("ELFSCREEN_SERVER"),
                   help="elfscreen service URL (default $ELFSCREEN_SERVER; none: run the pipeline in this process)")
    p.add_argument("--api-key", help="API key of the service (default $ELFSCREEN_API_KEY)")
    p.add_argument("--device", help="torch device without a server, e.g. cpu or cuda (default: cuda when present)")
    p.add_argument("--out", help="results file: *.jsonl (JSON lines) or *.csv (default: JSON lines on stdout)")
    p.add_argument("--format", choices=STRUCTURE_FORMATS, help="structure format (default: from each name)")
    p.add_argument("--spacing", type=float, help="grid spacing in Å (default 0.1; see --adaptive, --fast)")
    p.set_defaults(grid=None)  # the service predicts on a spacing, not on a given grid
    _add_evaluation_options(p, grid=False)
    _add_result_options(p)


def _add_evaluation_options(p: argparse.ArgumentParser, grid: bool) -> None:
    """``--adaptive`` and ``--fast`` (the service's ``evaluation``); their default spacings are
    ``model.options.EVALUATIONS``' (tests/test_submit.py checks these help lines against them)."""
    shape = ", or --grid" if grid else ""
    how = p.add_mutually_exclusive_group()
    how.add_argument("--adaptive", action="store_true",
                     help=f"the answer of the fine grid (--spacing, default 0.05 Å with this flag{shape}) from a "
                          "grid twice as coarse, evaluating the model exactly only where the result depends on it")
    how.add_argument("--fast", action="store_true",
                     help=f"one ensemble member on the grid (--spacing, default 0.12 Å with this flag{shape}), all "
                          "members only where the events depend on them, events on the model's own ELF")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of ``command``'s arguments; other subcommands are listed with their help line
    (with ``command=None`` every subcommand's arguments are added)."""
    full = command is None
    p = argparse.ArgumentParser(prog="elfscreen", description="ELF topology screening of hydrogen-rich crystals.")
    p.add_argument("--version", action="version", version=f"elfscreen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("topology", help="φ, φ*, thresholds, critical points and Tc of an ELF grid file (JSON)",
                       description="Analyse a DFT ELF file (VASP ELFCAR or cube, optionally .gz) and print one JSON object.")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", help="ELF grid file (cube, ELFCAR; .gz accepted)")
    src.add_argument("--example", metavar="NAME", help="analyse a shipped example grid (see `elfscreen examples`)")
    t.add_argument("--format", choices=["cube", "elfcar", "npz"], help="file format (default: from the file name)")
    t.add_argument("--rescale-qe", action="store_true", help="rescale ELF written by Quantum ESPRESSO 6.8–7.5")
    _add_result_options(t)
    t.add_argument("--indent", type=int, default=2, help="JSON indent (0: one line)")

    pr = sub.add_parser("predict", help="predict the ELF of a structure on a grid and write it (cube or ELFCAR)",
                        description="Predict the ELF from geometry alone and write it as a cube or ELFCAR file.")
    pr.add_argument("structure", help="structure file (CIF, POSCAR/CONTCAR, extxyz, AIRSS .res)")
    pr.add_argument("--out", required=True, help="output grid file: *.cube, *ELFCAR* (add .gz to compress)")
    pr.add_argument("--spread-out", help="also write the per-point ensemble spread to this grid file")
    _add_grid_options(pr)

    sc = sub.add_parser("screen", help="predict the ELF of structures and print φ, φ*, Tc (one JSON line each)",
                        description="Screen structures: predicted ELF → topology → Tc, one JSON object per line.")
    sc.add_argument("structures", nargs="+", help="structure files")
    _add_grid_options(sc)
    _add_evaluation_options(sc, grid=True)
    _add_result_options(sc)

    ds = sub.add_parser("dataset", help="DFT ELF datasets: generate them with Quantum ESPRESSO (resumable), summarise them, export the service's DFT-verified jobs")
    if full or command == "dataset":  # its choices come from model.dataset (pymatgen, scipy: ~1 s to import)
        from elfscreen.app import dataset_cli

        dataset_cli.add_arguments(ds)

    tr = sub.add_parser("train", help="train an ELF model ensemble on dataset folders")
    tr.add_argument("--data", nargs="+", required=True, help="dataset folders (elfscreen dataset generate)")
    tr.add_argument("--out", required=True, help="checkpoint file to write")
    tr.add_argument("--members", type=int, default=5, help="ensemble members (default 5)")
    tr.add_argument("--epochs", type=int, default=80, help="epochs per member (default 80)")
    tr.add_argument("--points-per-structure", type=int, default=2000, help="sampled grid points per structure")
    tr.add_argument("--points-per-atom", type=int, default=0, metavar="N",
                    help="sample max(--points-per-structure, N x atoms) grid points per structure (large cells get more; "
                         "default 0: off)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--hidden", default="128,128", metavar="N,N",
                    help="hidden layer widths of each member's MLP (default 128,128: the paper's)")
    tr.add_argument("--bottleneck-weight", type=float, default=0.0, metavar="W",
                    help="draw (1 + W)x the points in the ELF bins within 0.1 of each structure's DFT φ "
                         "(default 0: uniform in ELF, the paper's sampling)")
    tr.add_argument("--phi-weight", type=float, default=0.0, metavar="L",
                    help="add L x a loss on φ itself: the predicted ELF at each training structure's predicted "
                         "bottleneck against its DFT φ (default 0: the paper's loss alone)")
    tr.add_argument("--version", default="dev", help="model version string stored in the checkpoint")
    tr.add_argument("--half", action="store_true", help="store the weights as float16 (half the size; the shipped model does)")
    tr.add_argument("--descriptor", default="paper-v1", choices=["paper-v1", "hydride-v2", "hydride-v3"],
                    help="paper-v1 (H only, 165 features), hydride-v2 (species-aware, l ≤ 2, 546 features) or "
                         "hydride-v3 (species-aware, l ≤ 3, 728 features; docs/DESCRIPTOR.md)")

    ev = sub.add_parser("evaluate", help="evaluate an ELF model against DFT grids (report.json + PNG plots)")
    ev.add_argument("--model", required=True, help="checkpoint")
    ev.add_argument("--data", nargs="+", required=True, help="dataset folders")
    ev.add_argument("--out", required=True, help="folder for report.json and the plots")
    ev.add_argument("--split", choices=["held-out", "test", "validation", "all"], default="held-out",
                    help="which structures: all the model was not trained on (default: its validation and test "
                         "splits and any structure it never saw), one split, or all")
    ev.add_argument("--device", help="torch device")
    ev.add_argument("--cache", metavar="DIR", help="keep each structure's evaluation in DIR and reuse it on reruns "
                                                    "(same weights and grid file)")
    ev.add_argument("--calibrate-out", metavar="CKPT", help="fit the φ calibration (--method) on the validation split "
                    "among these structures and write the checkpoint with it (same weights) to CKPT")
    ev.add_argument("--method", default="additive", choices=["scale", "additive"],
                    help="calibration method for --calibrate-out (default additive; every method is compared in the report)")
    ev.add_argument("--version", help="model version of the --calibrate-out checkpoint (default: unchanged)")

    an = sub.add_parser("analyze", help="analyses of a predicted ELF against DFT (residual: the paper's Fig. 2)",
                        description="Analyses of a model's ELF against a DFT reference.")
    if full or command == "analyze":
        _add_residual_arguments(an)

    sv = sub.add_parser("serve", help="run the HTTP screening service (in-process jobs, or Celery when ELFSCREEN_BROKER_URL is set)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")

    sb = sub.add_parser("submit", help="screen structure files, folders and globs as one batch (server or in-process)",
                        description="Screen every structure under PATH (multi-structure extxyz/.res/CIF: each one); "
                                    "exit 1 when any failed.")
    sb.add_argument("paths", nargs="+", metavar="PATH", help="structure files, folders (recursive) or globs")
    _add_client_options(sb)
    sb.add_argument("--verify-top", type=int, metavar="K",
                    help="after screening, verify the best K by DFT on the server (needs --server with Quantum ESPRESSO)")
    sb.add_argument("--by", choices=("tc", "phi"), default="tc", help="what --verify-top ranks by (default tc)")

    wa = sub.add_parser("watch", help="screen structure files as a structure search writes them, once each",
                        description="Screen each structure file that appears under DIR once it is complete; the state "
                                    "file remembers what was done across restarts. Stops on Ctrl-C, --once or --timeout.")
    wa.add_argument("folder", metavar="DIR", help="folder to watch (recursively)")
    _add_client_options(wa)
    wa.add_argument("--state", help="state file (default DIR/.elfscreen-watch.jsonl)")
    wa.add_argument("--once", action="store_true", help="screen what is there (waiting for files being written), then stop")
    wa.add_argument("--timeout", type=float, help="stop after this many seconds")
    wa.add_argument("--settle", type=float, default=2.0, help="a file must be unchanged this many seconds (default 2)")
    wa.add_argument("--interval", type=float, default=2.0, help="seconds between scans (default 2)")

    rk = sub.add_parser("rank", help="rank the structures of a results file by Tc, φ or φ* (a table)",
                        description="Print the screened structures of a results file (submit/watch/screen output), best first.")
    rk.add_argument("results", help="results file (.jsonl or .csv)")
    rk.add_argument("--by", choices=["tc", "phi", "phi_star"], default="tc", help="sort key, descending (default tc)")
    rk.add_argument("--top", type=int, help="show the first N only")

    vf = sub.add_parser("verify", help="DFT verification of structures: QE ELF at the dataset settings → topology (JSON lines)")
    from elfscreen.app import verify_cli  # light: heavy imports happen in verify_cli.run

    verify_cli.add_arguments(vf)

    sub.add_parser("examples", help="list the example ELF grids shipped with elfscreen")
    return p


def _check_hdos(args) -> None:
    if getattr(args, "hdos", None) is not None and not 0 < args.hdos <= 1:
        raise InputError("--hdos", f"must lie in (0, 1], got {args.hdos}")


def _result_options(args) -> dict:
    return {"h_dos": args.hdos, "tc_model": args.tc_model, "refine": not args.no_refine,
            "min_persistence": args.min_persistence}


def _grid_options(args) -> dict:
    """``--grid`` (checked against the grid limit here) or ``--spacing`` (checked per structure by
    :func:`_grid_for`, since the number of points depends on the cell)."""
    from elfscreen.model.limits import check_grid_shape
    from elfscreen.model.options import EVALUATIONS

    if args.grid is not None:
        check_grid_shape(args.grid, "--grid")
        return {"shape": tuple(args.grid)}
    if args.spacing is None:
        args.spacing = EVALUATIONS[_evaluation(args)]
    if not args.spacing > 0:  # also refuses nan
        raise InputError("--spacing", f"must be positive, got {args.spacing}")
    return {"spacing_a": args.spacing}


def _evaluation(args) -> str:
    """``--adaptive`` → adaptive, ``--fast`` → fast, else grid (``predict`` has neither flag)."""
    return "adaptive" if getattr(args, "adaptive", False) else "fast" if getattr(args, "fast", False) else "grid"


def _grid_for(structure, args) -> dict:
    """The grid options for ``structure``, its number of points checked before anything is allocated."""
    from elfscreen.model.limits import check_grid_shape
    from elfscreen.model.predict import grid_shape

    options = _grid_options(args)
    if "spacing_a" in options:
        check_grid_shape(grid_shape(structure, options["spacing_a"]), f"--spacing {args.spacing}")
    return options


def _topology(args) -> int:
    from elfscreen.model.pipeline import example_path, topology_from_file

    _check_hdos(args)
    path = example_path(args.example) if args.example else args.file
    result = topology_from_file(path, args.format, rescale_qe=args.rescale_qe, **_result_options(args))
    _print(result.model_dump(mode="json"), args.indent)
    return 0


def _predict(args) -> int:
    from elfscreen.model.pipeline import check_model_species, load_model
    from elfscreen.model.predict import predict_grid
    from elfscreen.model.structures import read_structure
    from elfscreen.model.volumetric import ElfGrid, write_grid

    structure = read_structure(args.structure, args.format)
    grid = _grid_for(structure, args)
    model = load_model(args.model, args.device)
    name = Path(args.structure).name
    check_model_species(structure, model, name)
    start = time.perf_counter()
    pred = predict_grid(structure, model, device=args.device, name=name, **grid)
    out = write_grid(pred.grid, args.out, fmt=_grid_format(args.out))
    summary = {"name": name, "out": str(out), "grid": list(pred.grid.shape), "device": pred.device,
               "model_version": model.model_version, "members": len(model.members),
               "timings_s": {**{k: round(v, 4) for k, v in pred.timings_s.items()}, "total": round(time.perf_counter() - start, 4)}}
    if args.spread_out:
        summary["spread_out"] = str(write_grid(ElfGrid(structure, pred.spread.astype(float), name), args.spread_out,
                                               fmt=_grid_format(args.spread_out)))
    _print(summary, 0)
    return 0


def _grid_format(path: str) -> str:
    from elfscreen.model.volumetric import guess_grid_format

    try:
        return guess_grid_format(path)
    except InputError:
        raise InputError(path, "output must end in .cube or name an ELFCAR (optionally .gz)") from None


def _screen(args) -> int:
    from elfscreen.model.pipeline import load_model, screen_structure
    from elfscreen.model.structures import read_structure

    _check_hdos(args)
    _grid_options(args)  # a bad --grid or --spacing stops here, before the model loads
    options = _result_options(args)
    model = load_model(args.model, args.device)
    failed = 0
    total = len(args.structures)
    after_progress = "\n" if total > 1 else ""  # messages start on a new line after the progress line
    for n, path in enumerate(args.structures, 1):
        name = Path(path).name
        if total > 1:
            print(f"\r[{n}/{total}] {name[:60]:<60}", end="", file=sys.stderr, flush=True)
        try:
            start = time.perf_counter()
            structure = read_structure(path, args.format)
            timings = {"parse": time.perf_counter() - start}
            result = screen_structure(structure, name, model, device=args.device, timings_s=timings,
                                      adaptive=args.adaptive, fast=args.fast, **_grid_for(structure, args), **options)
        except InputError as err:
            failed += 1
            print(f"{after_progress}elfscreen: error: {err}", file=sys.stderr)
            out = err.to_dict()
        else:
            out = result.model_dump(mode="json")
            for warning in result.warnings:
                print(f"{after_progress}elfscreen: warning: {name}: {warning}", file=sys.stderr)
        _print(out, 0)
    if total > 1:
        print(f"\rscreened {total - failed} of {total} structures{' ' * 50}", file=sys.stderr)
    return 2 if failed else 0


def _dataset(args) -> int:
    from elfscreen.app import dataset_cli

    return dataset_cli.run(args)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise InputError("--hidden", f"{text!r} is not a comma-separated list of positive layer widths (e.g. 128,128)")
    return widths


def _train(args) -> int:
    from elfscreen.model.descriptor import DESCRIPTORS
    from elfscreen.model.train import TrainConfig, train

    entries, identity = _load_data(args.data)
    config = TrainConfig(members=args.members, epochs=args.epochs, points_per_structure=args.points_per_structure,
                         points_per_atom=args.points_per_atom, seed=args.seed, bottleneck_weight=args.bottleneck_weight, phi_weight=args.phi_weight,
                         hidden=_widths(args.hidden))
    model = train(entries, config, DESCRIPTORS[args.descriptor], model_version=args.version, data_identity=identity)
    model.meta["datasets"] = [str(Path(d)) for d in args.data]
    model.save(args.out, half=args.half)
    _print({"out": args.out, "model_version": args.version, "structures": len(entries), "data_identity": identity,
            "metrics_held_out_points": model.meta.get("metrics_held_out_points")}, 2)
    return 0


def _evaluate(args) -> int:
    from elfscreen.model.evaluate import evaluate
    from elfscreen.model.pipeline import load_model

    model = load_model(args.model, args.device)
    entries, _ = _load_data(args.data)
    splits = model.meta.get("splits", {})
    if args.split == "held-out":  # everything the model was not trained on, other folders included
        chosen = [e for e in entries if e.id not in set(splits.get("train", []))]
    else:
        wanted = {"test": set(splits.get("test", [])), "validation": set(splits.get("validation", []))}.get(args.split)
        chosen = [e for e in entries if wanted is None or e.id in wanted]
    if not chosen:
        raise InputError(args.split, "no structure of these folders is in that split of the model")

    def progress(n, total, name):
        print(f"\r[{n}/{total}] {name[:60]:<60}", end="" if n < total else "\n", file=sys.stderr, flush=True)

    report = evaluate(model, chosen, args.out, args.device, progress, cache_dir=args.cache,
                      fit_method=args.method if args.calibrate_out else None)
    if args.calibrate_out:
        model.model_version = args.version or model.model_version
        model.save(args.calibrate_out, half=_stored_half(args.model))
    _print({"out": args.out, "summary": report["summary"], "coverage": report.get("coverage")}, 2)
    return 0


def _stored_half(path) -> bool:
    """Whether the checkpoint at ``path`` stores its weights as float16 (a recalibrated copy keeps them so)."""
    import torch

    members = torch.load(path, map_location="cpu", weights_only=True)["members"]
    return any(v.dtype == torch.float16 for v in members[0].values())


def _load_data(folders):
    from elfscreen.model.train import load_entries

    try:
        return load_entries(folders)
    except FileNotFoundError as exc:
        raise InputError(str(folders[0]), str(exc)) from exc


def _add_residual_arguments(parser: argparse.ArgumentParser) -> None:
    """``elfscreen analyze residual`` (the analysis: :mod:`elfscreen.model.residual`)."""
    from elfscreen.model.residual import DEFAULT_EPS, PLATEAU_FRACTION

    sub = parser.add_subparsers(dest="analysis", required=True)
    r = sub.add_parser("residual", help="logit-space band-limited Fourier analysis of the prediction residual (paper Fig. 2)",
                       description="Predict the ELF on exactly the grid of a DFT reference, form the residual in ELF and "
                                   "logit space, fit it with a band-limited Fourier series for each k_max of a scan and "
                                   "write DIR/residual.json and the PNG panels of the paper's Fig. 2 (A–I).")
    r.add_argument("--dft", required=True, metavar="REF", help="reference ELF grid (cube or ELFCAR, .gz accepted; or an elfscreen dataset .npz)")
    r.add_argument("--model", help="ELF model checkpoint (default: the one shipped with elfscreen)")
    r.add_argument("--pred", metavar="GRID", help="use this predicted ELF grid (same grid as REF) instead of a model")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--slice", metavar="AXIS=FRAC", help="analyse the grid plane nearest AXIS=FRAC, AXIS in x|y|z "
                                                            "(= lattice vector a|b|c), FRAC fractional (default z=0.0)")
    where.add_argument("--volume", action="store_true", help="fit the whole 3D grid instead of one plane")
    r.add_argument("--kmax-scan", default="0:40", help="k_max values, START:STOP[:STEP] inclusive or a,b,c "
                                                       "(dimensionless |k|·L; default 0:40)")
    r.add_argument("--eps", type=float, default=DEFAULT_EPS, help=f"clip ELF to [ε, 1−ε] before the logit (default {DEFAULT_EPS:g})")
    r.add_argument("--plateau-fraction", type=float, default=PLATEAU_FRACTION,
                   help=f"plateau k_max: the smallest k_max reaching this share of the largest MAE gain (default {PLATEAU_FRACTION:g})")
    r.add_argument("--format", choices=["cube", "elfcar", "npz"], help="format of REF (default: from the name)")
    r.add_argument("--rescale-qe", action="store_true", help="rescale a REF written by Quantum ESPRESSO 6.8–7.5")
    r.add_argument("--device", help="torch device (default: cuda when present)")
    r.add_argument("--no-figures", action="store_true", help="write residual.json only")
    r.add_argument("--out", required=True, metavar="DIR", help="folder for residual.json and the figures")


def _analyze(args) -> int:
    from elfscreen.model.residual import json_ready, run

    summary = run(args.dft, args.model, slice=args.slice, volume=args.volume, kmax_scan=args.kmax_scan,
                  out_dir=args.out, prediction_path=args.pred, fmt=args.format, rescale_qe=args.rescale_qe,
                  device=args.device, eps=args.eps, plateau_fraction=args.plateau_fraction, figures=not args.no_figures)
    _print(json_ready(summary), 2)
    return 0


def _serve(args) -> int:
    from elfscreen.app.server import serve

    serve(args.host, args.port)
    return 0


def _client_and_options(args):
    from elfscreen.client import Client

    _check_hdos(args)
    options = {**_grid_options(args), **_result_options(args)}
    if _evaluation(args) != "grid":  # sent only when asked for: a server without the option still takes grid jobs
        options["evaluation"] = _evaluation(args)
    return Client(args.server, args.api_key, device=args.device), options


def _submit(args) -> int:
    from elfscreen.app import batch

    if args.verify_top is not None and (args.verify_top < 1 or not args.server):
        print("elfscreen: error: --verify-top K needs K ≥ 1 and --server (DFT verification runs on a server)",
              file=sys.stderr)
        return 2
    client, options = _client_and_options(args)
    with client:
        return batch.submit(args.paths, client, options, args.format, args.out, args.verify_top, args.by)


def _watch(args) -> int:
    from elfscreen.app import batch

    client, options = _client_and_options(args)
    with client:
        return batch.watch(args.folder, client, options, args.format, args.out, args.state, args.once, args.timeout,
                           args.settle, args.interval)


def _rank(args) -> int:
    from elfscreen.app import batch

    return batch.rank(args.results, args.by, args.top)


def _print(obj: dict, indent: int) -> None:
    print(json.dumps(obj, indent=indent or None, ensure_ascii=False), flush=True)


def _verify(args) -> int:
    from elfscreen.app import verify_cli

    return verify_cli.run(args)


COMMANDS = {"topology": _topology, "predict": _predict, "screen": _screen, "serve": _serve, "dataset": _dataset,
            "train": _train, "evaluate": _evaluate, "analyze": _analyze, "submit": _submit, "watch": _watch,
            "rank": _rank, "verify": _verify}


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option (the top-level options
    take no value). ``""`` when there is none (``--help``, ``--version``)."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(_command_of(argv)).parse_args(argv)
    if args.command not in ("serve", "examples", "rank"):  # serve: its job processes size their own pools
        from elfscreen.model.threads import configure_threads

        configure_threads()
        if "ELFSCREEN_SWEEP_KERNEL" not in os.environ:  # one-off, single-threaded: the precompiled kernel
            from elfscreen.model.sweep import use_kernel  # (no numba import; see model.sweep)

            use_kernel("aot")
    try:
        if args.command == "examples":
            from elfscreen.model.pipeline import example_path, examples

            for name in examples():
                print(f"{name}\t{example_path(name)}")
            code = 0
        else:
            code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below and not at interpreter exit
        return code
    except InputError as err:
        print(f"elfscreen: error: {err}", file=sys.stderr)
        _print(err.to_dict(), 0)
        return 2
    except BrokenPipeError:  # the reader went away, e.g. `elfscreen … | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
