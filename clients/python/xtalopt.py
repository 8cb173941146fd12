"""An objective script for XtalOpt's multi-objective search (``objective = min|max|fil SCRIPT OUTFILE WEIGHT``).

XtalOpt writes the candidate as ``output.POSCAR`` in its working directory, runs the script there without
arguments and polls for OUTFILE, whose first number it reads (NaN: the calculation failed; for ``fil``:
0 discard, 1 keep). This script screens ``output.POSCAR`` (on a server, or in this process) and writes
φ, φ*, Tc (K) or a keep flag to OUTFILE, atomically (a temporary file renamed), so XtalOpt never reads a
half-written value. On any failure it writes ``nan`` and logs the reason. Exit status 0 once OUTFILE is
written.

Settings (an environment variable wins over the config file ``elfscreen-objective.conf``, looked up in
the working directory and its parents, or named by ``$ELFSCREEN_OBJECTIVE_CONFIG``; ``key = value`` lines):

=========== ================================ ============================================================
key         environment                      meaning (default)
=========== ================================ ============================================================
objective   ELFSCREEN_OBJECTIVE              ``phi``, ``phi_star``, ``tc`` (K), or a rule such as ``tc >= 150``
                                             or ``phi > 0.45``: 1 when it holds, else 0 (``phi``)
outfile     ELFSCREEN_OBJECTIVE_OUTFILE      the OUTFILE of the XtalOpt line (``elfscreen.out``)
server      ELFSCREEN_SERVER                 service URL; empty: the pipeline runs in this process
api_key     ELFSCREEN_API_KEY                API key of the service
evaluation  ELFSCREEN_OBJECTIVE_EVALUATION   ``grid``, ``fast`` or ``adaptive`` (``elfscreen screen``'s default,
                                             ``--fast``, ``--adaptive``; ``grid``)
spacing     ELFSCREEN_OBJECTIVE_SPACING      grid spacing in Å (unset: the evaluation's, 0.1 for ``grid``)
tc_model    ELFSCREEN_OBJECTIVE_TC_MODEL     Tc relation (belli2021)
hdos        ELFSCREEN_OBJECTIVE_HDOS         H share of the DOS at E_F, (0, 1] (unset: 1 assumed)
detach      ELFSCREEN_OBJECTIVE_DETACH       ``yes``: return at once and write OUTFILE later (``no``)
timeout     ELFSCREEN_OBJECTIVE_TIMEOUT      seconds to wait for the result before writing nan (3600)
log         ELFSCREEN_OBJECTIVE_LOG          log file, relative to the working directory (``elfscreen-objective.log``)
=========== ================================ ============================================================
"""
from __future__ import annotations

import logging
import math
import operator
import os
import re
import subprocess
import sys
from pathlib import Path

CONFIG_NAME = "elfscreen-objective.conf"
POSCAR = "output.POSCAR"
DEFAULTS = {"objective": "phi", "outfile": "elfscreen.out", "server": "", "api_key": "", "evaluation": "grid",
            "spacing": "", "tc_model": "belli2021", "hdos": "", "detach": "no", "timeout": "3600",
            "log": "elfscreen-objective.log"}
EVALUATIONS = ("grid", "fast", "adaptive")  # model.options.EVALUATIONS, without importing the model here
SHARED_ENV = {"objective": "ELFSCREEN_OBJECTIVE", "server": "ELFSCREEN_SERVER", "api_key": "ELFSCREEN_API_KEY"}
QUANTITIES = {"phi": lambda r: r["phi"], "phi_star": lambda r: r["phi_star"], "tc": lambda r: r["tc"]["value_k"]}
RULE = re.compile(r"^\s*(phi_star|phi|tc)\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")
COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
DETACHED = "ELFSCREEN_OBJECTIVE_DETACHED"  # set in the background child of ``detach = yes``
USAGE = "usage: elfscreen-objective   (no arguments: XtalOpt runs it in the candidate's folder; -h: this help)"

log = logging.getLogger("elfscreen.objective")


def env_name(key: str) -> str:
    return SHARED_ENV.get(key, f"ELFSCREEN_OBJECTIVE_{key.upper()}")


def file_settings(cwd: Path) -> dict[str, str]:
    """The settings of the config file for ``cwd`` (none without one); ``ValueError`` on a bad line."""
    path = _config_path(cwd)
    conf = {}
    for n, raw in enumerate(path.read_text().splitlines() if path else [], 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or key not in DEFAULTS:
            raise ValueError(f"{path}:{n}: expected 'key = value' with key one of {', '.join(DEFAULTS)}")
        conf[key] = value
    return conf


def env_settings() -> dict[str, str]:
    return {key: os.environ[env_name(key)] for key in DEFAULTS if os.environ.get(env_name(key))}


def _config_path(cwd: Path) -> Path | None:
    named = os.environ.get("ELFSCREEN_OBJECTIVE_CONFIG")
    if named:
        return Path(named)
    return next((d / CONFIG_NAME for d in (cwd, *cwd.parents) if (d / CONFIG_NAME).is_file()), None)


def parse_objective(objective: str) -> tuple[str, str | None, float | None]:
    """``(quantity, comparison, threshold)`` of an objective; the last two are None for a plain quantity."""
    if objective in QUANTITIES:
        return objective, None, None
    match = RULE.match(objective)
    if not match:
        raise ValueError(f"objective {objective!r} is not phi, phi_star, tc or a rule such as 'tc >= 150'")
    quantity, op, threshold = match.groups()
    return quantity, op, float(threshold)


def objective_value(result: dict, objective: str) -> float:
    """The number to write for a ScreeningResult: φ, φ* or Tc (K), or 1/0 for a rule; NaN when the
    quantity is undefined (no 3D network), except that a rule on it is then 0 (discard)."""
    quantity, op, threshold = parse_objective(objective)
    value = QUANTITIES[quantity](result)
    if op is None:
        return math.nan if value is None else float(value)
    return float(value is not None and COMPARE[op](value, threshold))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def screen_poscar(cwd: Path, conf: dict[str, str]) -> dict:
    """Screen ``output.POSCAR`` of ``cwd`` as configured; the ScreeningResult JSON."""
    from elfscreen.client import Client

    options = {"evaluation": conf["evaluation"], "tc_model": conf["tc_model"]}
    if conf["spacing"]:
        options["spacing_a"] = float(conf["spacing"])
    if conf["hdos"]:
        options["h_dos"] = float(conf["hdos"])
    with Client(conf["server"] or None, conf["api_key"] or None) as client:
        return client.screen(cwd / POSCAR, options, name=f"{cwd.name}/{POSCAR}", format="poscar",
                             timeout=float(conf["timeout"]))


def main(argv: list[str] | None = None) -> int:
    """Run as XtalOpt runs it: in the candidate's working directory, no arguments. ``-h``/``--help``
    prints the usage (exit 0) and any other argument is refused (exit 2), both without writing a file."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        try:
            print(f"{USAGE}\n\n{__doc__}", flush=True)
        except BrokenPipeError:  # `elfscreen-objective --help | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if argv:
        print(f"{USAGE}\nelfscreen-objective: error: unexpected arguments: {' '.join(argv)}", file=sys.stderr)
        return 2
    cwd = Path.cwd()
    try:
        conf = {**DEFAULTS, **file_settings(cwd), **env_settings()}
        parse_objective(conf["objective"])
        if conf["evaluation"] not in EVALUATIONS:
            raise ValueError(f"evaluation {conf['evaluation']!r}: use one of {', '.join(EVALUATIONS)}")
        problem = None
    except (OSError, ValueError) as exc:
        conf, problem = {**DEFAULTS, **env_settings()}, exc
    _start_log(cwd, conf)
    if problem is not None:
        log.error("bad configuration: %s", problem)
        write_atomically(cwd / conf["outfile"], "nan\n")
        return 0
    if conf["detach"].lower() in ("yes", "true", "1") and not os.environ.get(DETACHED):
        subprocess.Popen([sys.executable, "-m", "elfscreen.client.xtalopt"], cwd=cwd, env={**os.environ, DETACHED: "1"},
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        return 0
    try:
        value = objective_value(screen_poscar(cwd, conf), conf["objective"])
        if math.isnan(value):
            log.warning("%s is undefined for this structure (no 3D network): nan", conf["objective"])
        else:
            log.info("%s = %r", conf["objective"], value)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, XtalOpt must get a value: nan marks the failure
        log.error("%s: %s", type(exc).__name__, exc)
        value = math.nan
    write_atomically(cwd / conf["outfile"], f"{value!r}\n")
    return 0


def _start_log(cwd: Path, conf: dict[str, str]) -> None:
    handler = logging.FileHandler(cwd / conf["log"])
    handler.setFormatter(logging.Formatter(f"%(asctime)s {cwd.name} %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
