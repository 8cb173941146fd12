"""``elfscreen submit``, ``watch`` and ``rank``: many structure files through :mod:`elfscreen.client`
(a server, or the embedded pipeline), results as JSON lines or CSV, and a ranked table of them.

A results line is the ScreeningResult object with ``file`` and ``index`` (position in a multi-structure
file, else null) in front, or ``file``, ``index``, ``name`` and the ``error`` object. A file that cannot
be read or screened fails alone; the summary on stderr names every failure.
"""
from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from elfscreen.client import (
    Client,
    ClientError,
    Item,
    Outcome,
    find_structure_files,
    read_file,
)

from elfscreen.app.downloads import csv_row, csv_value
from elfscreen.model.errors import InputError

CSV_COLUMNS = ("file", "index", "name", "status", "formula", "reduced_formula", "n_atoms", "spacegroup", "phi",
               "phi_star", "phi_1d", "phi_2d", "phi_dos", "tc_k", "tc_raw_k", "tc_model", "phi_std", "tc_std_k",
               "warnings", "error")
NUMERIC = ("index", "n_atoms", "phi", "phi_star", "phi_1d", "phi_2d", "phi_dos", "tc_k", "tc_raw_k", "phi_std", "tc_std_k")
RANK_KEYS = {"tc": "tc_k", "phi": "phi", "phi_star": "phi_star"}


# --- results files -------------------------------------------------------------------------------
def flat(record: dict) -> dict:
    """A results line as one CSV row (:data:`CSV_COLUMNS`; Tc in K; warnings joined with " | ")."""
    tc = record.get("tc") or {}
    spread = record.get("uncertainty") or {}
    error = record.get("error") or {}
    return {"file": record.get("file"), "index": record.get("index"), "name": record.get("name"),
            "status": "failed" if error else "done", "formula": record.get("formula"),
            "reduced_formula": record.get("reduced_formula"), "n_atoms": record.get("n_atoms"),
            "spacegroup": record.get("spacegroup"), "phi": record.get("phi"), "phi_star": record.get("phi_star"),
            "phi_1d": record.get("phi_1d"), "phi_2d": record.get("phi_2d"), "phi_dos": record.get("phi_dos"),
            "tc_k": tc.get("value_k"), "tc_raw_k": tc.get("raw_k"), "tc_model": tc.get("model"),
            "phi_std": spread.get("phi_std"), "tc_std_k": spread.get("tc_std_k"),
            "warnings": " | ".join(record.get("warnings") or []), "error": error.get("message")}


class ResultWriter:
    """Writes outcomes as they come: JSON lines (stdout when ``out`` is None) or CSV (``out`` ends in
    ``.csv``); ``append`` continues an existing file (``watch``)."""

    def __init__(self, out: str | None, append: bool = False):
        self.csv = out is not None and out.lower().endswith(".csv")
        if out is None:
            self.file = sys.stdout
        else:
            fresh = not append or not Path(out).exists() or Path(out).stat().st_size == 0
            self.file = open(out, "a" if append else "w", newline="" if self.csv else None,  # noqa: SIM115 - see close()
                             encoding="utf-8")
        if self.csv:
            self.rows = csv.DictWriter(self.file, CSV_COLUMNS)
            if fresh:
                self.rows.writeheader()

    def write(self, outcome: Outcome) -> None:
        record = outcome.record()
        if self.csv:
            self.rows.writerow(csv_row(flat(record)))  # text cells escaped against spreadsheet formulas
        else:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not sys.stdout:
            self.file.close()


def read_results(path: str) -> list[dict]:
    """The rows (:func:`flat`) of a results file: JSON lines (``submit``, ``watch``, ``elfscreen screen``)
    or the CSV ``submit --out x.csv`` writes."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if p.suffix.lower() == ".csv":
        return [{k: _number(v) if k in NUMERIC else csv_value(v or "") for k, v in row.items()}
                for row in csv.DictReader(text.splitlines())]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(flat(json.loads(line)))
            except (ValueError, AttributeError):
                raise InputError(path, f"line {n} is not a JSON object (expected a results file)") from None
    return rows


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- submit and watch ------------------------------------------------------------------------------
class Summary:
    """Counts of this run and the failures, printed to stderr at the end."""

    def __init__(self):
        self.done, self.failed = 0, []

    def add(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.done += 1
        else:
            message = outcome.error.get("message", "")
            self.failed.append((outcome.name, message.removeprefix(f"{outcome.name}: ")))

    def print(self) -> None:
        total = self.done + len(self.failed)
        print(f"elfscreen: screened {self.done} of {total} structures; {len(self.failed)} failed", file=sys.stderr)
        for name, message in self.failed:
            print(f"  {name}: {message}", file=sys.stderr)

    def exit_code(self) -> int:
        """0 when every structure was screened, 1 when some failed or there was none."""
        return 0 if self.done and not self.failed else 1


def screen_files(files: list[Path], client: Client, options: dict, fmt: str | None, writer: ResultWriter,
                 summary: Summary, on_file: Callable[[Path, list[Outcome]], None] | None = None,
                 verify_top: int | None = None, verify_by: str = "tc") -> list[dict]:
    """Screen every structure of ``files`` as one batch, writing each outcome as soon as it and those
    before it are known; ``on_file(path, outcomes)`` once all of a file's structures have finished.
    ``verify_top``: then queue the DFT verification of the best k by ``verify_by``; their job JSON."""
    items: list[Item] = []
    unread: list[Outcome] = []
    for path in files:
        try:
            items += read_file(path, fmt)
        except OSError as exc:
            unread.append(_unreadable(path, f"{path}: cannot be read ({exc.strerror or exc})"))
        except ValueError as exc:  # no format given and none in the name
            unread.append(_unreadable(path, str(exc)))
    left = Counter(item.source for item in items)
    by_file: dict[str, list[Outcome]] = {}

    def record(outcome: Outcome) -> None:
        writer.write(outcome)
        summary.add(outcome)
        by_file.setdefault(outcome.source, []).append(outcome)
        left[outcome.source] -= 1
        if left[outcome.source] <= 0 and on_file:
            on_file(Path(outcome.source), by_file.pop(outcome.source))

    for outcome in unread:
        record(outcome)
    if not items:
        return []
    batch = client.submit(items, options, verify_top=verify_top, verify_by=verify_by)
    for outcome in batch.results(progress=True):
        record(outcome)
    return batch.verifications


def _unreadable(path: Path, message: str) -> Outcome:
    return Outcome(str(path), "failed", source=str(path),
                   error={"code": "invalid_structure", "message": message, "input": str(path)})


def submit(paths: list[str], client: Client, options: dict, fmt: str | None, out: str | None,
           verify_top: int | None = None, verify_by: str = "tc") -> int:
    """``elfscreen submit``: every structure under ``paths`` (files, folders, globs), one batch; with
    ``verify_top``, the best k are then queued for DFT verification on the server (listed on stderr)."""
    files, missing = find_structure_files(paths, fmt)
    for pattern in missing:
        print(f"elfscreen: warning: {pattern}: no such file, or no structure file in it", file=sys.stderr)
    summary = Summary()
    if not files:
        print("elfscreen: error: no structure file found", file=sys.stderr)
        return 1
    writer = ResultWriter(out)
    try:
        verifying = screen_files(files, client, options, fmt, writer, summary, verify_top=verify_top,
                                 verify_by=verify_by)
        for job in verifying:
            print(f"elfscreen: verifying by DFT: {job['name']} (job {job['id']}, {job['verification']['status']}); "
                  f"follow it at {client.server.rstrip('/')}/v1/screenings/{job['id']}", file=sys.stderr)
    except (ClientError, KeyboardInterrupt) as exc:
        print(f"\nelfscreen: error: {str(exc) or 'interrupted'}", file=sys.stderr)
        summary.print()
        return 1
    finally:
        writer.close()
    summary.print()
    return summary.exit_code()


class WatchState:
    """The files ``watch`` has finished (screened, or failed for good): one JSON line each, appended as
    each file finishes, so a restart neither loses nor repeats work. A file counts as done while its
    content (SHA-256) is unchanged; a file rewritten with other content is screened again."""

    def __init__(self, path: Path):
        self.path = path
        self.sha: dict[str, str] = {}  # file (relative to the folder) → SHA-256 of the content screened
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.sha[entry["file"]] = entry["sha256"]
                except (ValueError, KeyError, TypeError):  # a line cut by a crash: that file is done again
                    continue

    def add(self, rel: str, sha: str, outcomes: list[Outcome]) -> None:
        self.sha[rel] = sha
        entry = {"file": rel, "sha256": sha, "structures": len(outcomes), "failed": sum(not o.ok for o in outcomes),
                 "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def watch(folder: str, client: Client, options: dict, fmt: str | None, out: str | None, state: str | None,
          once: bool, timeout_s: float | None, settle_s: float, interval_s: float) -> int:
    """``elfscreen watch``: screen each structure file that appears under ``folder`` once it is complete
    (size and modification time unchanged between two scans ``interval_s`` apart, and untouched for
    ``settle_s``). Runs until Ctrl-C, until ``timeout_s``, or with ``once`` until every file present is
    done. Without ``once`` a server that stays away is retried at each scan; with it, the run ends (1)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(folder, "is not a folder")
    done = WatchState(Path(state) if state else root / ".elfscreen-watch.jsonl")
    own = {p.resolve() for p in (done.path, Path(out) if out else None) if p}  # never screened, even with --format
    writer, summary = ResultWriter(out, append=True), Summary()
    last: dict[Path, tuple[int, int]] = {}  # stat at the previous scan
    known: dict[Path, tuple[int, int]] = {}  # stat of files found done
    start, lost = time.monotonic(), False

    def finished(path: Path, outcomes: list[Outcome]) -> None:
        done.add(_rel(path, root), _sha(path), outcomes)
        known[path] = last[path]

    try:
        while True:
            ready, waiting = _scan(root, fmt, own, done, last, known, settle_s)
            if ready:
                try:
                    screen_files(ready, client, options, fmt, writer, summary, finished)
                except ClientError as exc:  # the server is away: its files are tried again at the next scan
                    print(f"\nelfscreen: {'error' if once else 'warning'}: {exc}", file=sys.stderr)
                    lost = once
                    waiting += 1
            if lost or (once and not waiting) or (timeout_s is not None and time.monotonic() - start > timeout_s):
                break
            time.sleep(interval_s)
    except KeyboardInterrupt:
        print("\nelfscreen: stopped", file=sys.stderr)
    finally:
        writer.close()
    summary.print()
    if not lost and not summary.done and not summary.failed and done.sha:
        return 0  # everything was screened by an earlier run
    return 1 if lost else summary.exit_code()


def _scan(root: Path, fmt: str | None, own: set[Path], done: WatchState, last: dict, known: dict,
          settle_s: float) -> tuple[list[Path], int]:
    """Files ready to screen, and how many are still being written."""
    files = [f for f in find_structure_files([root], fmt)[0] if f.resolve() not in own]
    ready, waiting = [], 0
    now = time.time()
    for path in files:
        try:
            st = path.stat()
        except OSError:  # gone since the listing
            continue
        stat, previous = (st.st_size, st.st_mtime_ns), last.get(path)
        last[path] = stat
        if known.get(path) == stat:
            continue
        if stat != previous or now - st.st_mtime < settle_s:
            waiting += 1
        elif done.sha.get(_rel(path, root)) == _sha(path):
            known[path] = stat
        else:
            ready.append(path)
    return ready, waiting


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _sha(path: Path) -> str:
    """SHA-256 of the file's content ("" when it is gone)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


# --- rank ------------------------------------------------------------------------------------------
def rank(path: str, by: str, top: int | None) -> int:
    """``elfscreen rank``: the screened structures of a results file, best first by Tc (K), φ or φ*."""
    rows = read_results(path)
    key = RANK_KEYS[by]
    ranked = sorted((r for r in rows if isinstance(r.get(key), (int, float))), key=lambda r: r[key], reverse=True)
    left_out = len(rows) - len(ranked)
    if left_out:
        print(f"elfscreen: {left_out} of {len(rows)} lines have no {by} (failed, or undefined) and are not ranked",
              file=sys.stderr)
    if not ranked:
        print(f"elfscreen: error: {path}: nothing to rank", file=sys.stderr)
        return 1
    table = [("#", "structure", "formula", "spacegroup", "phi", "phi*", "Tc (K)", "warnings")]
    for n, r in enumerate(ranked[:top] if top else ranked, 1):
        table.append((str(n), str(r["name"]), str(r.get("reduced_formula") or r["formula"]), str(r["spacegroup"]),
                      _fixed(r["phi"], 4), _fixed(r["phi_star"], 4), _fixed(r["tc_k"], 1), r.get("warnings") or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:  # the warnings, last, are not padded
        cells = [cell.ljust(w) if i in (1, 2, 3) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row[:-1], widths))]
        print("  ".join([*cells, row[-1]]))
    return 0


def _fixed(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"
