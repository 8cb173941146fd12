#!/usr/bin/env python3
"""Regenerate the Quantum ESPRESSO ELF cube files used by the elfscreen tests.

For each structure defined below this script

  1. checks that no two H atoms (periodic images included) are closer than
     MIN_DIST Angstrom,
  2. writes a pw.x SCF input and a pp.x input (plot_num=8 -> ELF,
     iflag=3, output_format=6 -> Gaussian cube on the FFT grid),
  3. runs both serially (no mpirun, OMP_NUM_THREADS=1) in a temporary work
     folder outside the repository,
  4. writes ``<name>.ELF.cube.gz`` and a JSON sidecar ``<name>.json`` next to
     this script.

Structures whose ``.cube.gz`` already exists are skipped, so the script is
resumable.  An SCF run that does not reach self-consistency raises an error
and no cube is written.

Only the Python standard library is used.

Usage::

    python3 tests/data/qe/make_cubes.py            # generate missing cubes
    python3 tests/data/qe/make_cubes.py --check    # only verify existing cubes
    python3 tests/data/qe/make_cubes.py --only h_hexagonal

Environment variables ``PW_X``, ``PP_X`` and ``H_PSEUDO`` override the pw.x
and pp.x executables and the (optionally gzipped) hydrogen pseudopotential.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Norm-conserving PBE hydrogen shipped by Debian's quantum-espresso package.
# Never use PAW/ultrasoft potentials here: pp.x's ELF (plot_num=8) only
# contains the smooth part of the density for them.
DEFAULT_PSEUDO = ("/usr/share/doc/quantum-espresso/examples/CPV/"
                  "EXX-wf-example/H_HSCV_PBE-1.0.UPF.gz")
PSEUDO_NAME = "H_HSCV_PBE-1.0.UPF"

ECUTWFC = 80.0          # Ry
DUAL = 4.0              # ecutrho = DUAL * ecutwfc (norm-conserving)
ECUTWFC_FALLBACKS = (80.0, 70.0, 60.0, 50.0, 40.0)
KSPACING = 0.6          # 1/Angstrom, 2*pi included
CONV_THR = 1.0e-8
DEGAUSS = 0.01
MAX_CUBE_GZ_BYTES = 700_000
MIN_DIST = 0.7          # Angstrom
RUN_TIMEOUT = 3 * 3600  # seconds per pw.x / pp.x run

BOHR = 0.529177210903   # Angstrom


# ----------------------------------------------------------------------------
# structures (cell vectors as rows, Angstrom; positions in crystal coordinates)
# ----------------------------------------------------------------------------

def _h2_molecular_cubic():
    """Pa-3 solid H2: 4 molecules, centres on fcc sites, axes along <111>."""
    vol_per_atom = 2.9                      # Angstrom^3 / atom
    nat = 8
    a = (vol_per_atom * nat) ** (1.0 / 3.0)
    bond = 0.74
    # Wyckoff 8c (x,x,x): half-bond along a body diagonal
    x = bond / (2.0 * math.sqrt(3.0) * a)
    # Pa-3 8c orbit: (x,x,x), (1/2-x,-x,1/2+x), (-x,1/2+x,1/2-x),
    # (1/2+x,1/2-x,-x) and their inversions.
    centres_dirs = [
        ((0.0, 0.0, 0.0), (1, 1, 1)),
        ((0.5, 0.0, 0.5), (-1, -1, 1)),
        ((0.0, 0.5, 0.5), (-1, 1, -1)),
        ((0.5, 0.5, 0.0), (1, -1, -1)),
    ]
    pos = []
    for c, d in centres_dirs:
        for s in (1, -1):
            pos.append(tuple((c[i] + s * x * d[i]) % 1.0 for i in range(3)))
    cell = [[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]]
    return dict(
        name="h2_molecular_cubic",
        description=("Molecular solid H2 in the Pa-3 arrangement: 4 H2 "
                     "molecules (bond 0.74 A) centred on fcc sites of a cubic "
                     "cell, oriented along the four body diagonals; "
                     "%.2f A^3/atom." % vol_per_atom),
        cell=cell, positions=pos)


def _h_chains_tetragonal():
    """Atomic H chains along c; 2 atoms per cell (c doubled to >= 2 A)."""
    a = 2.2          # inter-chain distance (Angstrom)
    spacing = 1.05   # H-H distance along the chain (Angstrom)
    c = 2 * spacing  # two atoms per cell so that every length is >= 2 A
    cell = [[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, c]]
    pos = [(0.5, 0.5, 0.25), (0.5, 0.5, 0.75)]
    return dict(
        name="h_chains_tetragonal",
        description=("Linear chains of atomic H along c (equally spaced, "
                     "H-H %.2f A; cell c = %.2f A holds 2 atoms) on a square "
                     "lattice with inter-chain distance %.2f A." %
                     (spacing, c, a)),
        cell=cell, positions=pos)


def _h_hexagonal():
    """Atomic hcp hydrogen (P6_3/mmc, ideal c/a) at 2.3 A^3/atom."""
    vol_per_atom = 2.3
    nat = 2
    c_over_a = math.sqrt(8.0 / 3.0)
    # V = sqrt(3)/2 a^2 c
    a = (vol_per_atom * nat / (math.sqrt(3.0) / 2.0 * c_over_a)) ** (1.0 / 3.0)
    c = c_over_a * a
    cell = [[a, 0.0, 0.0],
            [-0.5 * a, 0.5 * math.sqrt(3.0) * a, 0.0],
            [0.0, 0.0, c]]
    pos = [(1.0 / 3.0, 2.0 / 3.0, 0.25), (2.0 / 3.0, 1.0 / 3.0, 0.75)]
    return dict(
        name="h_hexagonal",
        description=("Atomic hcp hydrogen (P6_3/mmc, ideal c/a = %.4f) in the "
                     "hexagonal cell a = b, gamma = 120 deg; %.2f A^3/atom." %
                     (c_over_a, vol_per_atom)),
        cell=cell, positions=pos)


STRUCTURES = [_h2_molecular_cubic(), _h_chains_tetragonal(), _h_hexagonal()]


# ----------------------------------------------------------------------------
# small linear-algebra helpers (3x3, pure Python)
# ----------------------------------------------------------------------------

def _dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def _cross(u, v):
    return [u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0]]


def _norm(u):
    return math.sqrt(_dot(u, u))


def volume(cell):
    return abs(_dot(cell[0], _cross(cell[1], cell[2])))


def reciprocal(cell):
    """Reciprocal vectors b_i (rows), including the factor 2*pi (1/Angstrom)."""
    v = _dot(cell[0], _cross(cell[1], cell[2]))
    f = 2.0 * math.pi / v
    return [[f * x for x in _cross(cell[1], cell[2])],
            [f * x for x in _cross(cell[2], cell[0])],
            [f * x for x in _cross(cell[0], cell[1])]]


def kmesh(cell, spacing=KSPACING):
    return [max(1, int(math.ceil(_norm(b) / spacing - 1e-9)))
            for b in reciprocal(cell)]


def frac_to_cart(cell, f):
    return [sum(f[i] * cell[i][j] for i in range(3)) for j in range(3)]


def min_distance(cell, positions, nimg=2):
    """Smallest H-H distance including periodic images (and self-images)."""
    best = float("inf")
    pair = None
    rng = range(-nimg, nimg + 1)
    for i, fi in enumerate(positions):
        for j, fj in enumerate(positions):
            for n in itertools.product(rng, rng, rng):
                if i == j and n == (0, 0, 0):
                    continue
                d = [fj[k] - fi[k] + n[k] for k in range(3)]
                dist = _norm(frac_to_cart(cell, d))
                if dist < best:
                    best, pair = dist, (i, j, n)
    return best, pair


def cell_params(cell):
    a, b, c = (_norm(v) for v in cell)
    ang = lambda u, v: math.degrees(math.acos(_dot(u, v) / (_norm(u) * _norm(v))))
    return dict(a=a, b=b, c=c, alpha=ang(cell[1], cell[2]),
                beta=ang(cell[0], cell[2]), gamma=ang(cell[0], cell[1]))


# ----------------------------------------------------------------------------
# input files
# ----------------------------------------------------------------------------

def pw_input(s, ecutwfc):
    ecutrho = DUAL * ecutwfc
    k = kmesh(s["cell"])
    lines = [
        "&CONTROL",
        "  calculation = 'scf'",
        "  prefix = '%s'" % s["name"],
        "  outdir = './tmp'",
        "  pseudo_dir = './pseudo'",
        "/",
        "&SYSTEM",
        "  ibrav = 0",
        "  nat = %d" % len(s["positions"]),
        "  ntyp = 1",
        "  ecutwfc = %.1f" % ecutwfc,
        "  ecutrho = %.1f" % ecutrho,
        "  occupations = 'smearing'",
        "  smearing = 'mv'",
        "  degauss = %.3f" % DEGAUSS,
        "  nspin = 1",
        "/",
        "&ELECTRONS",
        "  conv_thr = %.1e" % CONV_THR,
        "  mixing_beta = 0.3",
        "  electron_maxstep = 200",
        "/",
        "ATOMIC_SPECIES",
        "  H  1.00794  %s" % PSEUDO_NAME,
        "CELL_PARAMETERS angstrom",
    ]
    for v in s["cell"]:
        lines.append("  %16.10f %16.10f %16.10f" % tuple(v))
    lines.append("ATOMIC_POSITIONS crystal")
    for p in s["positions"]:
        lines.append("  H %16.10f %16.10f %16.10f" % tuple(p))
    lines.append("K_POINTS automatic")
    lines.append("  %d %d %d 0 0 0" % tuple(k))
    return "\n".join(lines) + "\n"


def pp_input(s):
    return "\n".join([
        "&INPUTPP",
        "  prefix = '%s'" % s["name"],
        "  outdir = './tmp'",
        "  filplot = 'elf.dat'",
        "  plot_num = 8",
        "/",
        "&PLOT",
        "  nfile = 1",
        "  filepp(1) = 'elf.dat'",
        "  weight(1) = 1.0",
        "  iflag = 3",
        "  output_format = 6",
        "  fileout = '%s.ELF.cube'" % s["name"],
        "/",
    ]) + "\n"


# ----------------------------------------------------------------------------
# running and parsing
# ----------------------------------------------------------------------------

class QEError(RuntimeError):
    pass


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


def run_exe(exe, infile, outfile, cwd):
    t0 = time.monotonic()
    with open(os.path.join(cwd, outfile), "w") as fo:
        proc = subprocess.run([exe, "-in", infile], cwd=cwd, stdout=fo,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=_env(), timeout=RUN_TIMEOUT)
    wall = time.monotonic() - t0
    with open(os.path.join(cwd, outfile)) as fi:
        text = fi.read()
    return proc.returncode, text, wall


def parse_pw(text):
    info = {}
    m = re.search(r"Program PWSCF v\.(\S+) starts", text)
    info["qe_version"] = m.group(1) if m else None
    m = re.search(r"^(\s*Program PWSCF .*)$", text, re.M)
    info["qe_header"] = m.group(1).strip() if m else None
    m = re.findall(r"^!\s+total energy\s+=\s+(-?\d+\.\d+)\s+Ry", text, re.M)
    info["total_energy_ry"] = float(m[-1]) if m else None
    m = re.search(r"convergence has been achieved in\s+(\d+)\s+iterations", text)
    m_not = re.search(r"convergence NOT achieved after\s+(\d+)\s+iterations", text)
    info["scf_converged"] = bool(m) and not m_not
    if m:
        info["scf_iterations"] = int(m.group(1))
    elif m_not:
        info["scf_iterations"] = int(m_not.group(1))
    else:
        info["scf_iterations"] = len(re.findall(r"^\s+iteration #\s*\d+", text, re.M))
    m = re.search(r"the Fermi energy is\s+(-?\d+\.\d+)\s+ev", text)
    info["fermi_energy_ev"] = float(m.group(1)) if m else None
    m = re.search(r"number of k points=\s+(\d+)", text)
    info["n_kpoints_irreducible"] = int(m.group(1)) if m else None
    m = re.search(r"Dense\s+grid:.*FFT dimensions:\s*\(\s*(\d+),\s*(\d+),\s*(\d+)\)", text)
    info["fft_grid"] = [int(g) for g in m.groups()] if m else None
    m = re.search(r"PWSCF\s*:\s*(.+?)CPU\s+(.+?)WALL", text)
    info["pw_timing_line"] = ("%s CPU %s WALL" % (m.group(1).strip(), m.group(2).strip())
                              if m else None)
    return info


def _gzip_bytes(data):
    """Deterministic gzip (no file name, mtime=0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0,
                       compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------
# cube verification
# ----------------------------------------------------------------------------

def read_cube_summary(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        text = f.read()
    lines = text.splitlines()
    head = lines[2].split()
    natoms = int(head[0])
    origin = [float(x) for x in head[1:4]]
    grid, voxel = [], []
    for i in range(3):
        p = lines[3 + i].split()
        grid.append(int(p[0]))
        voxel.append([float(x) for x in p[1:4]])
    atoms = []
    for i in range(abs(natoms)):
        p = lines[6 + i].split()
        atoms.append([int(p[0]), float(p[1])] + [float(x) for x in p[2:5]])
    start = 6 + abs(natoms)
    vals = [float(x) for ln in lines[start:] for x in ln.split()]
    npts = grid[0] * grid[1] * grid[2]
    if len(vals) != npts:
        raise QEError("%s: %d values, expected %d" % (path, len(vals), npts))
    vmin, vmax = min(vals), max(vals)
    return dict(natoms=natoms, grid=grid, origin_bohr=origin,
                voxel_bohr=voxel, atomic_numbers=sorted({a[0] for a in atoms}),
                elf_min=vmin, elf_max=vmax, elf_mean=sum(vals) / npts,
                n_values=len(vals))


def check_cube(path, expect_natoms=None):
    s = read_cube_summary(path)
    problems = []
    if expect_natoms is not None and s["natoms"] != expect_natoms:
        problems.append("natoms %d != %d" % (s["natoms"], expect_natoms))
    if s["atomic_numbers"] != [1]:
        problems.append("atomic numbers %s" % s["atomic_numbers"])
    if not (0.0 <= s["elf_min"] <= s["elf_max"] <= 1.0):
        problems.append("ELF range [%g, %g] outside [0, 1]" % (s["elf_min"], s["elf_max"]))
    size = os.path.getsize(path)
    if size >= MAX_CUBE_GZ_BYTES:
        problems.append("size %d >= %d bytes" % (size, MAX_CUBE_GZ_BYTES))
    s["size_bytes"] = size
    s["problems"] = problems
    return s


def summary_line(name, s):
    return ("%-22s %7d B  grid %s  natoms %d  ELF min %.5f max %.5f mean %.4f%s" %
            (name, s["size_bytes"], "x".join(map(str, s["grid"])), s["natoms"],
             s["elf_min"], s["elf_max"], s["elf_mean"],
             ("  PROBLEMS: " + "; ".join(s["problems"])) if s["problems"] else ""))


# ----------------------------------------------------------------------------
# main driver
# ----------------------------------------------------------------------------

def _read_pseudo(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    head = data[:20000].decode("ascii", "replace")
    v1 = re.search(r"<PP_HEADER>\s*\n\s*\S+[^\n]*\n\s*\S+[^\n]*\n\s*(\S+)", head)
    v2 = re.search(r'pseudo_type\s*=\s*"(\w+)"', head)
    ptype = (v2 or v1).group(1).upper() if (v1 or v2) else None
    if ptype not in ("NC", "SL"):
        raise QEError("%s: pseudopotential type %r is not norm-conserving; "
                      "pp.x's ELF is wrong for US/PAW" % (path, ptype))
    return data


def run_structure(s, outdir, pw_x, pp_x, pseudo_path, keep_work=False):
    name = s["name"]
    cube_path = os.path.join(outdir, name + ".ELF.cube.gz")
    json_path = os.path.join(outdir, name + ".json")
    nat = len(s["positions"])

    dmin, pair = min_distance(s["cell"], s["positions"])
    if dmin < MIN_DIST:
        raise QEError("%s: atoms %d and %d (image %s) are %.3f A apart (< %.2f A)"
                      % (name, pair[0], pair[1], pair[2], dmin, MIN_DIST))

    pseudo = _read_pseudo(pseudo_path)
    attempts = []
    for ecutwfc in ECUTWFC_FALLBACKS:
        if ecutwfc > ECUTWFC:
            continue
        work = tempfile.mkdtemp(prefix="elfscreen_qe_%s_" % name)
        try:
            os.makedirs(os.path.join(work, "pseudo"))
            with open(os.path.join(work, "pseudo", PSEUDO_NAME), "wb") as f:
                f.write(pseudo)
            pw_in = pw_input(s, ecutwfc)
            pp_in = pp_input(s)
            with open(os.path.join(work, "pw.in"), "w") as f:
                f.write(pw_in)
            with open(os.path.join(work, "pp.in"), "w") as f:
                f.write(pp_in)

            print("[%s] pw.x (ecutwfc %.0f Ry, k %s) in %s" %
                  (name, ecutwfc, kmesh(s["cell"]), work), flush=True)
            rc, pw_out, pw_wall = run_exe(pw_x, "pw.in", "pw.out", work)
            info = parse_pw(pw_out)
            if rc != 0 or not info["scf_converged"]:
                raise QEError("%s: pw.x rc=%d, SCF converged=%s after %s iterations; "
                              "see %s/pw.out" % (name, rc, info["scf_converged"],
                                                 info["scf_iterations"], work))
            print("[%s] SCF converged in %d iterations, E = %.8f Ry, %.1f s" %
                  (name, info["scf_iterations"], info["total_energy_ry"], pw_wall),
                  flush=True)

            rc, pp_out, pp_wall = run_exe(pp_x, "pp.in", "pp.out", work)
            raw_cube = os.path.join(work, name + ".ELF.cube")
            if rc != 0 or not os.path.exists(raw_cube):
                raise QEError("%s: pp.x failed (rc=%d); see %s/pp.out" % (name, rc, work))
            with open(raw_cube, "rb") as f:
                cube_bytes = f.read()
            gz = _gzip_bytes(cube_bytes)
            attempts.append(dict(ecutwfc=ecutwfc, ecutrho=DUAL * ecutwfc,
                                 cube_gz_bytes=len(gz)))
            if len(gz) >= MAX_CUBE_GZ_BYTES:
                print("[%s] cube.gz is %d bytes (>= %d): lowering the cutoff" %
                      (name, len(gz), MAX_CUBE_GZ_BYTES), flush=True)
                shutil.rmtree(work)
                continue

            # verify before installing
            tmp_gz = os.path.join(work, "check.cube.gz")
            with open(tmp_gz, "wb") as f:
                f.write(gz)
            summ = check_cube(tmp_gz, expect_natoms=nat)
            if summ["problems"]:
                raise QEError("%s: cube check failed: %s" % (name, summ["problems"]))

            cutoff_note = None
            if ecutwfc != ECUTWFC:
                cutoff_note = ("ecutwfc lowered from %.0f to %.0f Ry (ecutrho %.0f Ry) "
                               "to keep the cube.gz below %d bytes"
                               % (ECUTWFC, ecutwfc, DUAL * ecutwfc, MAX_CUBE_GZ_BYTES))
            meta = dict(
                name=name,
                description=s["description"],
                generated_by="tests/data/qe/make_cubes.py (elfscreen)",
                generated_on=datetime.datetime.now(datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ"),
                qe_version=info["qe_version"],
                qe_header=info["qe_header"],
                pseudopotential=dict(file=PSEUDO_NAME, source=pseudo_path,
                                     sha256=_sha256(pseudo), type="norm-conserving PBE"),
                settings=dict(ecutwfc_ry=ecutwfc, ecutrho_ry=DUAL * ecutwfc,
                              occupations="smearing", smearing="mv",
                              degauss_ry=DEGAUSS, conv_thr_ry=CONV_THR, nspin=1,
                              kspacing_inv_angstrom=KSPACING,
                              kmesh=kmesh(s["cell"]), kmesh_shift=[0, 0, 0]),
                cutoff_reduced=cutoff_note is not None,
                cutoff_note=cutoff_note,
                cutoff_attempts=attempts,
                structure=dict(
                    natoms=nat,
                    cell_angstrom=s["cell"],
                    cell_parameters=cell_params(s["cell"]),
                    positions_crystal=[list(p) for p in s["positions"]],
                    volume_angstrom3=volume(s["cell"]),
                    volume_per_atom_angstrom3=volume(s["cell"]) / nat,
                    min_hh_distance_angstrom=dmin),
                pw_input=pw_in,
                pp_input=pp_in,
                wall_time_s=dict(pw=round(pw_wall, 2), pp=round(pp_wall, 2),
                                 total=round(pw_wall + pp_wall, 2)),
                pw_timing_line=info["pw_timing_line"],
                total_energy_ry=info["total_energy_ry"],
                fermi_energy_ev=info["fermi_energy_ev"],
                scf_converged=info["scf_converged"],
                scf_iterations=info["scf_iterations"],
                n_kpoints_irreducible=info["n_kpoints_irreducible"],
                fft_grid=info["fft_grid"],
                cube=dict(file=os.path.basename(cube_path),
                          gz_bytes=len(gz), sha256_uncompressed=_sha256(cube_bytes),
                          grid=summ["grid"], natoms=summ["natoms"],
                          elf_min=summ["elf_min"], elf_max=summ["elf_max"],
                          elf_mean=summ["elf_mean"]),
            )
            # install: json first, cube last (the cube marks completion)
            with open(json_path + ".part", "w") as f:
                json.dump(meta, f, indent=2)
                f.write("\n")
            os.replace(json_path + ".part", json_path)
            with open(cube_path + ".part", "wb") as f:
                f.write(gz)
            os.replace(cube_path + ".part", cube_path)
            summ["size_bytes"] = len(gz)
            print("[%s] wrote %s" % (name, summary_line(os.path.basename(cube_path), summ)),
                  flush=True)
            if not keep_work:
                shutil.rmtree(work)
            return meta
        except BaseException:
            print("[%s] failed; work folder kept at %s" % (name, work), file=sys.stderr)
            raise
    raise QEError("%s: cube.gz still >= %d bytes at the lowest cutoff" %
                  (name, MAX_CUBE_GZ_BYTES))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="only verify the existing cube files and print a summary")
    ap.add_argument("--only", nargs="*", help="structure names to process")
    ap.add_argument("--outdir", default=HERE, help="output folder (default: script folder)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print geometry checks and the pw.x/pp.x inputs, run nothing")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the temporary work folders (outside the repository)")
    args = ap.parse_args(argv)

    structs = [s for s in STRUCTURES if not args.only or s["name"] in args.only]
    pw_x = os.environ.get("PW_X") or shutil.which("pw.x")
    pp_x = os.environ.get("PP_X") or shutil.which("pp.x")
    pseudo = os.environ.get("H_PSEUDO", DEFAULT_PSEUDO)

    failed = False
    if args.dry_run:
        for s in structs:
            dmin, pair = min_distance(s["cell"], s["positions"])
            print("# %s: %d atoms, %.3f A^3/atom, min H-H %.3f A, k %s, cell %s" % (
                s["name"], len(s["positions"]), volume(s["cell"]) / len(s["positions"]),
                dmin, kmesh(s["cell"]),
                {k: round(v, 4) for k, v in cell_params(s["cell"]).items()}))
            print(pw_input(s, ECUTWFC))
            print(pp_input(s))
        return 0
    if not args.check:
        if not (pw_x and pp_x):
            sys.exit("pw.x / pp.x not found (set PW_X / PP_X)")
        for s in structs:
            cube = os.path.join(args.outdir, s["name"] + ".ELF.cube.gz")
            if os.path.exists(cube):
                print("[%s] %s exists, skipping" % (s["name"], os.path.basename(cube)))
                continue
            run_structure(s, args.outdir, pw_x, pp_x, pseudo, keep_work=args.keep_work)

    print("\nsummary:")
    for s in structs:
        cube = os.path.join(args.outdir, s["name"] + ".ELF.cube.gz")
        if not os.path.exists(cube):
            print("%-22s missing" % s["name"])
            failed = True
            continue
        summ = check_cube(cube, expect_natoms=len(s["positions"]))
        failed |= bool(summ["problems"])
        print(summary_line(os.path.basename(cube), summ))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
