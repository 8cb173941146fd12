"""A seeded fuzzer for ``POST /v1/screenings`` (no tests here): mutated CIF/POSCAR/extxyz files sent as
multipart uploads or JSON bodies, plus broken bodies, against a live ``elfscreen serve``.

Used by ``tests/test_fuzz.py`` (a bounded run in the suite) and ``bench/fuzz.py`` (a long run with a
table). :func:`run` sends the requests from a few threads over keep-alive connections and returns a
:class:`Report`: answers by status code, the slowest answer, requests that got no answer, whether
``/healthz`` kept answering and the process stayed alive, and the server's peak RSS (from /proc).
"""
from __future__ import annotations

import gzip
import io
import json
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import ase.io
import httpx
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

OPTIONS = {"spacing_a": 1.0}  # the coarsest grid: accepted structures cost the job pool little
BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e10", "-1e10", "1e26", "1e100", "1e308", "-1e308", "1e309", "0", "-0",
               "1e-300", "4294967296", "99999999999999999999", "0x10", "1_000", ""]
CALLBACKS = ["http://127.0.0.1:9/hook", "http://localhost/x", "http://[::1]/", "http://10.0.0.1/", "http://169.254.169.254/",
             "ftp://example.org/", "not a url", "http://", "http://0.0.0.0:80/", "http://[fe80::1%25eth0]/"]
NUMBER = re.compile(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?")


def seeds() -> dict[str, tuple[str, str]]:
    """Valid inputs to mutate: name → (format, text)."""
    cah6 = Structure(Lattice.cubic(3.5), ["Ca"] + ["H"] * 6,
                     [[0, 0, 0], [0.25, 0, 0.5], [0.75, 0, 0.5], [0.5, 0.25, 0], [0.5, 0.75, 0], [0, 0.5, 0.25], [0, 0.5, 0.75]])
    hex_h = Structure(Lattice.hexagonal(2.5, 4.0), ["H", "H"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    lih2 = Structure(Lattice.from_parameters(3.1, 3.4, 4.2, 80, 95, 105), ["Li", "H", "H"],
                     [[0.1, 0.2, 0.3], [0.55, 0.15, 0.8], [0.35, 0.7, 0.05]])
    out = {}
    for label, s in (("cah6", cah6), ("h2", hex_h), ("lih2", lih2)):
        out[f"{label}.cif"] = ("cif", s.to(fmt="cif"))
        out[f"POSCAR_{label}"] = ("poscar", s.to(fmt="poscar"))
        text = io.StringIO()
        ase.io.write(text, AseAtomsAdaptor.get_atoms(s), format="extxyz")
        out[f"{label}.xyz"] = ("extxyz", text.getvalue())
    return out


def symmetry_bomb(rng: random.Random) -> str:
    """A short CIF whose space group (named, not listed: 48 to 192 operations) times its 60 to 1000 sites
    expands to 2,880–192,000 atom images (the issue's case: 300 sites in Fm-3m, 14 KB)."""
    group = rng.choice(["F m -3 m", "I m -3 m", "P m -3 m", "F d -3 m"])
    n = rng.choice([60, 100, 300, 1000])
    rows = "\n".join(f"H{k} H {rng.random():.5f} {rng.random():.5f} {rng.random():.5f}" for k in range(n))
    return (f"data_bomb\n_symmetry_space_group_name_H-M '{group}'\n_cell_length_a 20\n_cell_length_b 20\n"
            f"_cell_length_c 20\n_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n"
            f"_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n{rows}\n")


def mutate(rng: random.Random, fmt: str, text: str) -> tuple[str, str]:
    """One mutation of ``text``: (what was done, the new text)."""
    lines = text.splitlines()
    kind = rng.choice(["number", "number", "numbers", "count", "truncate", "garbage", "duplicate", "shuffle", "flip",
                       "lattice", "empty-loop", "bomb", "blank"])
    if kind == "number":
        spots = list(NUMBER.finditer(text))
        m = rng.choice(spots)
        return kind, text[:m.start()] + rng.choice(BAD_NUMBERS) + text[m.end():]
    if kind == "numbers":  # every number of one line (a whole coordinate or lattice row)
        k = rng.randrange(len(lines))
        lines[k] = NUMBER.sub(lambda _: rng.choice(BAD_NUMBERS), lines[k])
        return kind, "\n".join(lines)
    if kind == "count":  # an atom-count line (extxyz line 1, POSCAR counts) made huge or negative
        k = 0 if fmt == "extxyz" else min(6, len(lines) - 1)
        lines[k] = NUMBER.sub(lambda _: rng.choice(["1000000000000", "-5", "0", "2001", "99999999"]), lines[k])
        return kind, "\n".join(lines)
    if kind == "truncate":
        return kind, text[:rng.randrange(len(text))]
    if kind == "garbage":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))).decode("latin-1")
    if kind == "duplicate":  # an atom line repeated: two atoms on one spot
        k = rng.randrange(len(lines))
        return kind, "\n".join(lines[:k + 1] + [lines[k]] * rng.randint(1, 3) + lines[k + 1:])
    if kind == "shuffle":
        rng.shuffle(lines)
        return kind, "\n".join(lines)
    if kind == "flip":
        chars = list(text)
        for _ in range(rng.randint(1, 20)):
            chars[rng.randrange(len(chars))] = rng.choice("0.-eE \n'\"_#;(){}9xX")
        return kind, "".join(chars)
    if kind == "lattice":  # the cell scaled to nothing or to astronomy
        factor = rng.choice(["0", "1e-12", "1e10", "1e200", "-1", "nan"])
        if fmt == "poscar":
            lines[1] = factor
        elif fmt == "cif":
            lines = [re.sub(r"(_cell_length_\w)\s+\S+", rf"\1 {factor}", line) for line in lines]
        else:
            lines[1] = re.sub(r'Lattice="[^"]*"', f'Lattice="{factor} 0 0 0 {factor} 0 0 0 {factor}"', lines[1])
        return kind, "\n".join(lines)
    if kind == "empty-loop":
        if fmt == "cif":
            cut = next((i for i, line in enumerate(lines) if line.strip().startswith(("H ", "Ca ", "Li ", "H0", "H1"))), len(lines))
            return kind, "\n".join(lines[:cut])
        return kind, "\n".join(lines[:2 if fmt == "extxyz" else 8])
    if kind == "bomb":
        return kind, symmetry_bomb(rng)
    return kind, "\n" * rng.randint(0, 3)


@dataclass
class Request:
    kind: str
    json: object = None
    files: list | None = None
    data: dict | None = None
    content: bytes | None = None
    headers: dict = field(default_factory=dict)


def requests(seed: int, n: int) -> list[Request]:
    """``n`` requests from a seeded generator; about 8 in 10 carry mutated structure files."""
    rng = random.Random(seed)
    base = seeds()
    names = list(base)
    out = []
    for _ in range(n):
        roll = rng.random()
        name = rng.choice(names)
        fmt, text = base[name]
        kind, body = mutate(rng, fmt, text)
        if roll < 0.45:  # multipart upload, sometimes gzipped or with a wrong declared format
            data = {"options": json.dumps(OPTIONS)}
            if rng.random() < 0.15:
                data["format"] = rng.choice(["cif", "poscar", "extxyz", "res", "xyz", "pdb", ""])
            raw = body.encode("latin-1" if kind == "garbage" else "utf-8")  # garbage: bytes that are not UTF-8
            if rng.random() < 0.1:
                raw = gzip.compress(raw)[:None if rng.random() < 0.7 else rng.randrange(1, 30)]
            files = [("files", (name, raw))]
            if rng.random() < 0.2:
                files.append(("files", (rng.choice(names), base[rng.choice(names)][1].encode())))
            out.append(Request(f"multipart/{kind}", files=files, data=data))
        elif roll < 0.8:  # JSON submission
            item = {"name": name, "format": rng.choice([fmt, fmt, None, "res", "cif"]), "content": body}
            payload = {"structures": [item], "options": dict(OPTIONS)}
            if rng.random() < 0.1:
                payload["callback_url"] = rng.choice(CALLBACKS)
            out.append(Request(f"json/{kind}", json=payload))
        else:
            out.append(broken_body(rng, base))
    return out


def broken_body(rng: random.Random, base: dict) -> Request:
    """A request whose body, not its structure, is wrong."""
    fmt, text = base[rng.choice(list(base))]
    choice = rng.randrange(9)
    if choice == 0:
        return Request("body/not-json", content=rng.choice([b"{", b"[]", b"null", b"\xff\xfe", b"{}" * 1000]),
                       headers={"content-type": "application/json"})
    if choice == 1:
        return Request("body/wrong-types", json={"structures": rng.choice([None, 1, "x", [1], [{"name": 5, "content": []}]])})
    if choice == 2:
        return Request("body/options", json={"structures": [{"name": "a.cif", "content": text}],
                                             "options": {"spacing_a": rng.choice([0, -1, 1e308, "nan", None, 1e-9]),
                                                         "min_persistence": rng.choice([2, -1, "x"])}})
    if choice == 3:
        return Request("body/callback", json={"structures": [{"name": "a", "format": fmt, "content": text}],
                                              "options": OPTIONS, "callback_url": rng.choice(CALLBACKS)})
    if choice == 4:
        return Request("multipart/no-files", files=[("other", ("x", b"1"))], data={"options": "{"})
    if choice == 5:
        return Request("multipart/options", files=[("files", ("a.cif", text.encode()))],
                       data={"options": rng.choice(["[]", "{\"spacing_a\": \"x\"}", "{\"bogus\": 1}", "nan"])})
    if choice == 6:
        return Request("body/content-type", content=text.encode(), headers={"content-type": rng.choice(
            ["text/plain", "multipart/form-data", "multipart/form-data; boundary=x", "application/xml"])})
    if choice == 7:
        return Request("body/names", json={"structures": [{"name": rng.choice(["", "x" * 300, "../../etc/passwd", "a\x00b"]),
                                                           "content": text}]})
    return Request("body/many", json={"structures": [{"name": f"s{k}.cif", "content": symmetry_bomb(rng)}
                                                     for k in range(rng.randint(2, 4))], "options": OPTIONS})


@dataclass
class Report:
    statuses: Counter = field(default_factory=Counter)
    by_kind_5xx: Counter = field(default_factory=Counter)
    no_answer: list = field(default_factory=list)  # (index, kind, error) of requests not answered in time
    max_latency_s: float = 0.0
    slowest_kind: str = ""
    health_failures: int = 0
    server_died: bool = False
    peak_rss_mb: float = 0.0
    requests: int = 0
    wall_s: float = 0.0


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (/proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def run(url: str, pid: int, reqs: list[Request], *, threads: int = 4, timeout_s: float = 5.0,
        health_every: int = 50, alive=lambda: True) -> Report:
    """Send ``reqs`` to the server at ``url`` (process ``pid``; ``alive()`` tells whether it runs)."""
    report, lock = Report(requests=len(reqs)), threading.Lock()
    local = threading.local()
    start = time.monotonic()

    def send(k: int, req: Request) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=timeout_s)
        began = time.monotonic()
        try:
            r = client.post("/v1/screenings", json=req.json, files=req.files, data=req.data, content=req.content,
                            headers=req.headers)
            status = r.status_code
        except httpx.HTTPError as exc:
            with lock:
                report.no_answer.append((k, req.kind, f"{type(exc).__name__}: {exc}"))
            return
        took = time.monotonic() - began
        with lock:
            report.statuses[status] += 1
            if status >= 500:
                report.by_kind_5xx[req.kind] += 1
            if took > report.max_latency_s:
                report.max_latency_s, report.slowest_kind = took, req.kind
            report.peak_rss_mb = max(report.peak_rss_mb, rss_mb(pid))
        if k % health_every == 0:
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                with lock:
                    report.health_failures += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kr: send(*kr), enumerate(reqs)))
    report.wall_s = time.monotonic() - start
    report.server_died = not alive()
    return report
