"""The ``elfscreen`` command line. Every subcommand calls the same ``model`` functions as the API.

JSON goes to stdout; messages to stderr. Exit 0 on success, 2 when an input is unusable (the
message names the file and the problem, and stdout holds the result schema's error object).
"""
from __future__ import annotations

import argparse
import json
import sys

from model import __version__
from model.errors import InputError
from model.tc import TC_MODELS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="elfscreen", description="ELF topology screening of hydrogen-rich crystals.")
    p.add_argument("--version", action="version", version=f"elfscreen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("topology", help="φ, φ*, thresholds, critical points and Tc of an ELF grid file (JSON)",
                       description="Analyse a DFT ELF file (VASP ELFCAR or cube, optionally .gz) and print one JSON object.")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", help="ELF grid file (cube, ELFCAR; .gz accepted)")
    src.add_argument("--example", metavar="NAME", help="analyse a shipped example grid (see `elfscreen examples`)")
    t.add_argument("--format", choices=["cube", "elfcar"], help="file format (default: from the file name)")
    t.add_argument("--rescale-qe", action="store_true", help="rescale ELF written by Quantum ESPRESSO 6.8–7.5")
    t.add_argument("--hdos", type=float, help="H share of the DOS at the Fermi level (default 1 for pure H; assumed 1 otherwise)")
    t.add_argument("--tc-model", choices=sorted(TC_MODELS), default="belli2021", help="Tc relation (default belli2021)")
    t.add_argument("--no-refine", action="store_true", help="report raw grid values, no sub-voxel refinement")
    t.add_argument("--min-persistence", type=float, default=0.005, help="hide critical points of smaller ELF persistence")
    t.add_argument("--indent", type=int, default=2, help="JSON indent (0: one line)")

    sub.add_parser("examples", help="list the example ELF grids shipped with elfscreen")
    return p


def _topology(args) -> dict:
    from model.pipeline import example_path, topology_from_file

    if args.hdos is not None and not 0 < args.hdos <= 1:
        raise InputError("--hdos", f"must lie in (0, 1], got {args.hdos}")
    path = example_path(args.example) if args.example else args.file
    result = topology_from_file(path, args.format, rescale_qe=args.rescale_qe, h_dos=args.hdos,
                                tc_model=args.tc_model, refine=not args.no_refine, min_persistence=args.min_persistence)
    return result.model_dump(mode="json")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "examples":
        from model.pipeline import example_path, examples

        for name in examples():
            print(f"{name}\t{example_path(name)}")
        return 0
    try:
        out = _topology(args)
    except InputError as err:
        print(f"elfscreen: error: {err}", file=sys.stderr)
        print(json.dumps(err.to_dict()))
        return 2
    try:
        print(json.dumps(out, indent=args.indent or None, ensure_ascii=False))
    except BrokenPipeError:  # e.g. `elfscreen topology … | head`
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
