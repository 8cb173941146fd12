"""Run code on untrusted input in child processes with a memory and a time budget.

Parsers and C extensions (pymatgen, ASE, spglib) can be made to crash, hang or allocate without
bound by a crafted file. :class:`Sandbox` keeps a few long-lived child processes, forked from a
clean fork server that has the parsers imported (a new child starts in milliseconds), each with
an address-space limit (``RLIMIT_AS``) and, per call, a CPU-time limit (``RLIMIT_CPU``: the kernel
kills a child that computes too long, however busy the machine is) with a wall-clock backstop of
:data:`WALL_FACTOR` times it (for a call that blocks without computing). A child that dies (time,
segfault, out of memory) is replaced. Either way the caller gets an
:class:`~elfscreen.model.errors.InputError` naming the input; the API process itself never runs
the parser.
"""
from __future__ import annotations

import logging
import multiprocessing
import math
import os
import queue
import resource
import signal
import threading
from multiprocessing import forkserver
from multiprocessing.connection import Connection

from elfscreen.model.errors import InputError, StructureError

log = logging.getLogger("elfscreen.sandbox")
PRELOAD = ["elfscreen.app.intake", "pymatgen.io.cif", "pymatgen.io.res", "pymatgen.io.ase", "pymatgen.symmetry.groups",
           "ase.io"]  # what the fork server imports once, so each child starts with it
_FORK_SERVER_NICE: dict[str, int] = {}
NICE = 5  # reading submissions is request handling: it yields the CPU to running jobs, as the API does
WALL_FACTOR = 3  # a call's wall-clock backstop, × its CPU budget (a starved call is slow, not broken)


def fork_server():
    """The multiprocessing context of every child of the server (sandbox and embedded job processes):
    a fork server, started once with the parsers imported (:data:`PRELOAD`), whichever asks first."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    _FORK_SERVER_NICE.setdefault("nice", os.nice(0))  # the priority its children start with
    forkserver.ensure_running()
    return ctx


def step_back(below_children: int) -> None:
    """Lower this process's priority to ``below_children`` niceness under the fork server's children
    (idempotent: a second server in the same process does not lower it again)."""
    target = _FORK_SERVER_NICE.get("nice", os.nice(0)) + below_children
    os.nice(max(0, target - os.nice(0)))


class Sandbox:
    """``workers`` child processes, each limited to ``memory_mb`` MiB of address space; a call
    (:meth:`run`) may take ``timeout_s`` seconds of CPU (rounded up to whole seconds). Thread-safe: a
    call waits for a free child."""

    def __init__(self, workers: int, memory_mb: int, timeout_s: float):
        self.memory_bytes, self.timeout_s = memory_mb * 2**20, timeout_s
        self._ctx = fork_server()
        self._idle: queue.Queue[_Child] = queue.Queue()
        self._lock = threading.Lock()
        self._children: list[_Child] = []
        self._closed = False
        for _ in range(max(1, workers)):
            self._idle.put(self._start())

    def _start(self) -> "_Child":
        child = _Child(self._ctx, self.memory_bytes)
        with self._lock:
            self._children.append(child)
        return child

    def _replace(self, child: "_Child", name: str, why: str) -> None:
        log.warning("sandbox: %s %s; its process is replaced", name, why)
        child.kill()
        with self._lock:
            self._children.remove(child)
        if not self._closed:
            self._idle.put(self._start())

    def run(self, name: str, fn, *args):
        """``fn(*args)`` in a child (``fn`` importable by name, arguments and result picklable). An
        :class:`InputError` it raises is raised here; a crash, running out of memory or of time becomes a
        :class:`StructureError` naming ``name``, as does any other exception (a bug: logged here with the
        child's traceback)."""
        child = self._idle.get()
        try:
            child.conn.send((fn, args, self.timeout_s))
            if not child.conn.poll(self.timeout_s * WALL_FACTOR):
                self._replace(child, name, f"ran out of its {self.timeout_s * WALL_FACTOR:g} s of wall time")
                child = None
                raise StructureError(name, self._too_long)
            kind, payload = child.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            if child is None:
                raise
            child.process.join(5)
            out_of_cpu = child.process.exitcode == -signal.SIGXCPU
            self._replace(child, name, "ran out of CPU time" if out_of_cpu else "crashed its process")
            child = None
            raise StructureError(name, self._too_long if out_of_cpu else "made the structure reader crash; refused") from None
        finally:
            if child is not None:
                self._idle.put(child)
        if kind == "ok":
            return payload
        if kind == "input_error":
            cls, input_name, problem = payload
            raise cls(input_name, problem)
        if kind == "memory":
            raise StructureError(name, f"needs more than {self.memory_bytes // 2**20} MiB to read and check; refused")
        log.error("sandbox: reading %s failed with an internal error:\n%s", name, payload)
        raise StructureError(name, "could not be read: an internal error of elfscreen (logged); please report it")

    @property
    def _too_long(self) -> str:
        return (f"took longer than {self.timeout_s:g} s to read and check; refused (is it far larger or more "
                "complex than a crystal needs?)")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            children = list(self._children)
        for child in children:
            child.kill()


class _Child:
    def __init__(self, ctx, memory_bytes: int):
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(theirs, memory_bytes), daemon=True, name="elfscreen-sandbox")
        self.process.start()
        theirs.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


def _serve(conn: Connection, memory_bytes: int) -> None:
    """The child's loop: run each call, send back its result or what went wrong."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a child killed for CPU time or a crash leaves no core file
    os.nice(NICE)
    while True:
        try:
            fn, args, cpu_s = conn.recv()
        except EOFError:  # the parent is gone
            return
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(used.ru_utime + used.ru_stime + cpu_s)  # SIGXCPU (terminates) at this total
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        try:
            reply = ("ok", fn(*args))
        except InputError as err:
            reply = ("input_error", (type(err), err.input_name, err.problem))
        except MemoryError:
            reply = ("memory", None)
        except Exception:  # noqa: BLE001 - a bug, reported to the parent with its traceback
            import traceback

            reply = ("bug", traceback.format_exc())
        del fn, args
        conn.send(reply)

