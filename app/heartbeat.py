"""Heartbeats of the jobs a process holds, so the sweep can tell a running job from one whose worker died."""
from __future__ import annotations

import logging
import os
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
