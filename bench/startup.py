"""Start-up cost of one-off ``elfscreen`` commands: wall time of a fresh process, median of N runs.

Rows: ``elfscreen --help``, ``elfscreen --version``, ``elfscreen topology --example h2_molecular_cubic``
and ``elfscreen topology`` on a 50³ cube file of the synthetic 64-atom H crystal of
``bench/topology.py`` (written once into a temporary folder). Each command runs as the installed
``elfscreen`` script in a new process (interpreter start, imports, numba cache load, work, JSON
out), the compiled-kernel cache warm. The last row runs the 50³ topology once with an empty
``ELFSCREEN_CACHE`` (the one-time numba compile a machine pays on first use), then once more with that
same cache (the second process must load, not recompile). Heavy modules each command imported are
read from ``python -X importtime``.

    python bench/startup.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
HEAVY = ("torch", "pymatgen.core", "pymatgen.io.vasp", "scipy", "numba", "pydantic")
TARGETS = {"help": 0.5, "topology 50³": 1.0}


def _script() -> str:
    found = shutil.which("elfscreen", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        sys.exit("the elfscreen script is not installed in this environment")
    return found


def _wall(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    return wall


def _heavy_imports(args: list[str]) -> str:
    """Which of HEAVY the command imports (top-level package names as importtime lists them)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "elfscreen.app.cli", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return ", ".join(h for h in HEAVY if h in names) or "—"


def write_grid_50(folder: Path) -> Path:
    from topology import make_field, make_structure  # bench/topology.py

    from elfscreen.model.volumetric import ElfGrid, write_grid

    structure = make_structure()
    return write_grid(ElfGrid(structure, make_field(structure, 50), name="h64-50"), folder / "h64-50.cube")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    exe = _script()
    with tempfile.TemporaryDirectory() as tmp:
        cube = write_grid_50(Path(tmp))
        rows = {"help": ["--help"], "version": ["--version"],
                "topology example": ["topology", "--example", "h2_molecular_cubic"],
                "topology 50³": ["topology", str(cube)]}
        _wall([exe, *rows["topology 50³"]])  # the kernel cache exists before the timed runs
        print(f"load average before: {os.getloadavg()[0]:.2f}; {args.repeat} runs each; {exe}\n")
        print("| command | median wall s | min s | max s | target | heavy imports |")
        print("|---|---|---|---|---|---|")
        for label, argv in rows.items():
            times = [_wall([exe, *argv]) for _ in range(args.repeat)]
            target = TARGETS.get(label)
            verdict = "—" if target is None else f"≤ {target} s: {'met' if statistics.median(times) <= target else 'NOT met'}"
            print(f"| `elfscreen {' '.join(argv[:1] + (['--example …'] if 'example' in label else []) + (['50³.cube'] if '50' in label else []))}` "
                  f"| {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | {verdict} | {_heavy_imports(argv)} |")
        cache = Path(tmp) / "cache"
        env = {**os.environ, "ELFSCREEN_CACHE": str(cache)}
        env.pop("NUMBA_CACHE_DIR", None)
        cold = _wall([exe, *rows["topology 50³"]], env)
        second = _wall([exe, *rows["topology 50³"]], env)
        print(f"| `elfscreen topology 50³.cube`, empty cache (first use on a machine) | {cold:.3f} | | | | |")
        print(f"| the same, second process on that cache | {second:.3f} | | | | |")
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
