"""``elfscreen dataset generate|summary|export-verified``: the command line over :mod:`elfscreen.model.dataset`
and (``export-verified``: the service's DFT-verified jobs as a dataset) :mod:`elfscreen.model.verified_dataset`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from elfscreen.model.dataset import (
    FAMILIES,
    HYDRIDE_KINDS,
    KINDS,
    GeneratorOptions,
    default_settings,
    generate,
    summary,
    summary_of,
)
from elfscreen.model.errors import InputError
from elfscreen.model.prototypes import PROTOTYPES, RANDOM_METALS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate`` and ``summary`` subcommands to ``parser`` (the ``dataset`` command)."""
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    g = sub.add_parser("generate", help="generate (or continue) a DFT ELF dataset; resumable")
    g.add_argument("--out", required=True, help="dataset folder")
    g.add_argument("--kind", choices=KINDS, required=True)
    g.add_argument("--count", type=int, required=True,
                   help="number of structures in the dataset (hydride-prototype: at most the number of prototype entries)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--relax-fraction", type=float,
                   help="share relaxed before the ELF (default 0.2 crystal at 100 GPa, 0.5 hydride-random at its "
                        "pressure, 0 fluid; hydride-prototype and crystal-relaxed: always)")
    g.add_argument("--min-atoms", type=int, help="smallest cell (default 4 crystal, 32 fluid; fluid-md: the cell size, 32)")
    g.add_argument("--max-atoms", type=int, help="largest cell (default 48 crystal, 24 hydride-random)")
    g.add_argument("--families", help=f"crystal families, comma-separated (default all: {','.join(FAMILIES)})")
    g.add_argument("--prototypes", help=f"hydride prototypes, comma-separated (default all: {','.join(PROTOTYPES)})")
    g.add_argument("--exclude-prototypes", help="hydride prototypes to leave out (a leave-prototype-out split)")
    g.add_argument("--elements", help="hydrides: only the entries containing at least one of these elements, "
                                      "comma-separated (each keeps the parameters of its index; default all)")
    g.add_argument("--stride", type=int, default=2, help="store every n-th grid point per axis (default 2; 1 = full)")
    g.add_argument("--ecutwfc", type=float, help="Ry (default 100)")
    g.add_argument("--ecutrho", type=float, help="Ry (default 800 pure H, 400 hydrides)")
    g.add_argument("--max-new", type=int, help="stop after this many new DFT runs")
    g.add_argument("--retry-failed", action="store_true",
                   help="run the entries that failed before again (after a fix; their failures stay recorded)")
    x = sub.add_parser("export-verified", help="write the service's DFT-verified jobs as a training dataset folder",
                       description="Every job of the service's store with a finished DFT verification: its DFT ELF "
                                   "grid, H_DOS, DFT settings and the ML result, in the dataset format (npz + "
                                   "manifest.jsonl) that train and evaluate read. A rerun adds only new structures.")
    x.add_argument("--out", required=True, help="dataset folder (created; existing entries are kept)")
    x.add_argument("--db", help="the service's store URL (default: $ELFSCREEN_DB_URL, else sqlite:///elfscreen-jobs.db)")
    x.add_argument("--stride", type=int, default=1,
                   help="store every n-th DFT grid point per axis (default 1: the whole grid)")
    x.add_argument("--any-settings", action="store_true",
                   help="also export verifications not run at the dataset settings (e.g. a cutoff lowered by "
                        "ELFSCREEN_VERIFY_ECUTWFC; left out by default: not training data)")
    s = sub.add_parser("summary", help="counts of one or more dataset folders")
    s.add_argument("dirs", nargs="+", metavar="DIR")
    s.add_argument("--json", action="store_true",
                   help="one JSON object over all folders: structures, by_element, relaxed, pressure_gpa, "
                        "pseudopotentials, with_h_dos, failed, cpu_hours")


def _choices(text: str, option: str, allowed, what: str) -> tuple[str, ...]:
    """The comma-separated names of ``text``, each one of ``allowed``; else an error naming the option."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        problem = f"unknown {what} {', '.join(unknown)}" if unknown else f"no {what} given"
        raise InputError(option, f"{problem}; use some of {', '.join(allowed)}")
    return names


def _elements_of(kind: str) -> list[str]:
    """The elements besides H that entries of a hydride ``kind`` can hold."""
    if kind == "hydride-prototype":
        return sorted({m for p in PROTOTYPES.values() for sub in p.substitutions for m in sub})
    return sorted(RANDOM_METALS)


def _options(args: argparse.Namespace) -> GeneratorOptions:
    opts = GeneratorOptions(stride=args.stride)
    changes: dict = {}
    if args.kind in ("crystal", "crystal-relaxed") and (args.min_atoms or args.max_atoms):
        lo, hi = args.min_atoms or opts.crystal_atoms[0], args.max_atoms or opts.crystal_atoms[1]
        changes.update(crystal_atoms=(lo, hi), crystal_small_atoms=(lo, min(hi, max(lo, opts.crystal_small_atoms[1]))))
    if args.kind == "hydride-random" and (args.min_atoms or args.max_atoms):
        lo, hi = args.min_atoms or opts.hydride_atoms[0], args.max_atoms or opts.hydride_atoms[1]
        changes.update(hydride_atoms=(lo, hi), hydride_small_atoms=(lo, min(hi, max(lo, opts.hydride_small_atoms[1]))))
    if args.kind == "fluid" and (args.min_atoms or args.max_atoms):
        changes.update(fluid_atoms=(args.min_atoms or opts.fluid_atoms[0], args.max_atoms or opts.fluid_atoms[1]))
    if args.kind in ("crystal", "crystal-relaxed") and args.families:
        changes.update(crystal_families=_choices(args.families, "--families", FAMILIES, "crystal families"))
    if args.kind == "hydride-prototype" and (args.prototypes or args.exclude_prototypes):
        chosen = _choices(args.prototypes, "--prototypes", list(PROTOTYPES), "prototypes") if args.prototypes else tuple(PROTOTYPES)
        left_out = (_choices(args.exclude_prototypes, "--exclude-prototypes", list(PROTOTYPES), "prototypes")
                    if args.exclude_prototypes else ())
        changes.update(prototypes=tuple(n for n in chosen if n not in left_out))
    if args.elements:
        if args.kind not in HYDRIDE_KINDS:
            raise InputError("--elements", f"only for the hydride kinds ({', '.join(HYDRIDE_KINDS)}), not {args.kind}")
        changes.update(elements=_choices(args.elements, "--elements", _elements_of(args.kind), f"elements for {args.kind}"))
    if args.kind == "fluid-md" and args.min_atoms:
        changes.update(md_atoms=args.min_atoms)
    return replace(opts, **changes) if changes else opts


def _export_verified(args: argparse.Namespace) -> int:
    """``export-verified``: :meth:`~elfscreen.app.store.Store.verified` → :func:`export_verified`."""
    from pathlib import Path

    import sqlalchemy as sa

    from elfscreen.app.config import Settings
    from elfscreen.app.store import Store
    from elfscreen.model.verified_dataset import VerifiedStructure, export_verified

    url = args.db or Settings.from_env().db_url
    if url.startswith("sqlite") and not Path(sa.engine.make_url(url).database or "").is_file():
        raise InputError(url, "no such store: the SQLite file does not exist (give the service's --db URL)")
    try:
        store = Store(url)
    except sa.exc.SQLAlchemyError as exc:
        raise InputError(url, f"cannot open the store: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None
    items = (VerifiedStructure(v.job["id"], v.job["name"], v.structure, v.values, v.job["result"]["dft"], v.job["result"])
             for v in store.verified())

    def progress(p: dict) -> None:
        print(f"{p['id']} (job {p['job_id']}): {p['status']}", file=sys.stderr, flush=True)

    counts = export_verified(args.out, items, stride=args.stride, progress=progress, any_settings=args.any_settings)
    print(json.dumps({"out": args.out, **counts}))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``dataset`` command; progress on stderr, the final counts as JSON on stdout."""
    if args.dataset_command == "export-verified":
        return _export_verified(args)
    if args.dataset_command == "summary":
        if args.json:
            print(json.dumps(summary_of(args.dirs)))
        else:
            print(json.dumps({d: summary(d) for d in args.dirs} if len(args.dirs) > 1 else summary(args.dirs[0]), indent=2))
        return 0
    opts = _options(args)
    st = default_settings(args.kind)
    if args.ecutwfc or args.ecutrho:
        st = replace(st, ecutwfc=args.ecutwfc or st.ecutwfc, ecutrho=args.ecutrho or st.ecutrho)

    def progress(p: dict) -> None:
        print(f"[{p['elapsed_s']:8.0f} s] {p['id']} {p['status']}: {p['message']} "
              f"(done {p['done']}, failed {p['failed']}, skipped {p['skipped']}, todo {p['todo']})",
              file=sys.stderr, flush=True)

    counts = generate(args.out, args.kind, args.count, args.seed, args.relax_fraction, progress,
                      settings=st, options=opts, max_new=args.max_new, retry_failed=args.retry_failed)
    print(json.dumps(counts))
    return 0
