"""Heartbeats of the jobs a process holds, so the sweep can tell a running job from one whose worker died."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from contextlib import contextmanager

from elfscreen.app.config import Settings
from elfscreen.app.store import Store

log = logging.getLogger("elfscreen.heartbeat")


class Heartbeats:
    """Refreshes the heartbeat of every job this process holds (claimed, or reserved with a message) in
    one UPDATE every ``every_s`` seconds, from one daemon thread per store that runs while anything is held."""

    def __init__(self, store: Store, every_s: float):
        self.store, self.every_s = store, every_s
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._running = False
        self.pid = os.getpid()

    @contextmanager
    def hold(self, *tokens: str):
        """Keep the jobs under ``tokens`` alive while the block runs."""
        with self._lock:
            for token in tokens:
                self._held[token] = self._held.get(token, 0) + 1
            if tokens and not self._running:
                self._running = True
                threading.Thread(target=self._beat, name="elfscreen-heartbeat", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                for token in tokens:
                    left = self._held.pop(token) - 1
                    if left:
                        self._held[token] = left

    def _beat(self) -> None:
        while True:
            time.sleep(self.every_s)
            with self._lock:
                tokens = list(self._held)
                if not tokens:
                    self._running = False
                    return
            try:
                self.store.heartbeat_tokens(tokens)
            except Exception as exc:  # a store hiccup must not kill the jobs; the next beat retries
                log.warning("heartbeat of %d jobs failed (%s: %s); retrying in %.1f s", len(tokens),
                            type(exc).__name__, exc, self.every_s)


_heartbeats_lock = threading.Lock()


def heartbeats(store: Store, settings: Settings) -> Heartbeats:
    """The :class:`Heartbeats` of ``store`` (one per store and process)."""
    with _heartbeats_lock:
        beats = store.__dict__.get("_heartbeats")
        if beats is None or beats.pid != os.getpid():  # a forked child starts its own thread
            beats = store.__dict__["_heartbeats"] = Heartbeats(store, max(settings.lease_s / 4, 0.5))
        return beats


class Receipts:
    """Reservations that a Celery worker's main process makes for the jobs of each message it receives, before
    a pool process takes the message (which may wait seconds: a pool process loads the model before it is
    ready), so a worker killed whole in between costs the jobs one lease, not ``requeue_after_s``. Jobs
    already held are left alone (:meth:`Store.reserve` ``unheld``); the pool process's own reservation, or
    its claim, replaces this one. Every ``every_s`` seconds the reservations are refreshed, and a token that
    no job carries any more is dropped.

    :meth:`reserve` never blocks (the worker's event loop calls it): one thread, with its own store for
    ``db_url``, writes the reservations and their heartbeats."""

    def __init__(self, db_url: str, every_s: float):
        self.db_url, self.every_s = db_url, every_s
        self._received: queue.SimpleQueue[tuple[list[str], str]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="elfscreen-receipts", daemon=True).start()

    def reserve(self, job_ids: list[str], worker: str) -> None:
        """Reserve ``job_ids`` for ``worker`` (done by this object's thread, within milliseconds)."""
        self._received.put((list(job_ids), worker))

    def _run(self) -> None:
        store, held, due = None, set(), time.monotonic() + self.every_s
        while True:
            try:
                received = self._received.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                received = None
            beat = time.monotonic() >= due
            if beat:
                due = time.monotonic() + self.every_s
            if not (received or (beat and held)):
                continue
            try:
                store = store or Store(self.db_url)  # opened here: opening a store queries the database
                if received:
                    held.add(store.reserve(*received, unheld=True))
                if beat:
                    held = store.heartbeat_held(held)
            except Exception as exc:  # the store is down: the pool process reserves the jobs when it takes them
                log.warning("reservation or heartbeat of received jobs failed (%s: %s); retrying at the next beat",
                            type(exc).__name__, exc)
