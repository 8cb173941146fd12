"""The client: :class:`Client` submits structures, :class:`Batch` follows them to their results."""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from elfscreen.client.errors import ScreeningFailed
from elfscreen.client.inputs import Item, StructureLike, as_items
from elfscreen.client.local import LocalBackend
from elfscreen.client.outcome import Outcome
from elfscreen.client.progress import Bar, Callback
from elfscreen.client.remote import RemoteBackend
from elfscreen.client.transport import Http

if TYPE_CHECKING:
    from typing_extensions import Self


class Client:
    """Screens structures on an elfscreen server, or in this process when ``server`` is None.

    ``server``: the service's base URL, e.g. ``http://localhost:8000``; None runs the embedded pipeline
    (the model of ``$ELFSCREEN_MODEL`` or the shipped one, on ``device``: e.g. ``cpu``, ``cuda``; None:
    CUDA when present). ``api_key``: sent as ``X-API-Key`` (default ``$ELFSCREEN_API_KEY``).
    ``timeout``: seconds per HTTP request; ``retries``: extra attempts after a transient failure
    (connection error, 429 after its ``Retry-After``, 502/503/504), waiting ``backoff_s``·2^attempt s.

    Options (``options=`` of :meth:`submit`) are the API's: ``spacing_a`` (Å, default 0.1), ``tc_model``
    (default ``belli2021``), ``h_dos`` (0–1], ``refine``, ``min_persistence``, ``keep_grid``.
    """

    def __init__(self, server: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 5, backoff_s: float = 0.5, device: str | None = None):
        self.server = server
        self._http = None
        if server:
            key = api_key if api_key is not None else os.environ.get("ELFSCREEN_API_KEY")
            self._http = Http(server, key, timeout=timeout, retries=retries, backoff_s=backoff_s)
            self._backend = RemoteBackend(self._http)
        else:
            self._backend = LocalBackend(device)

    def submit(self, structures: StructureLike | Iterable[StructureLike], options: dict | None = None, *,
               names: Iterable[str] | None = None, format: str | None = None) -> Batch:
        """Submit structures (see :func:`~elfscreen.client.inputs.as_items`: paths, pymatgen ``Structure``,
        ASE ``Atoms``, :class:`~elfscreen.client.inputs.Item`; ``format`` for files whose name does not
        tell it). A structure the server refuses does not stop the others: its outcome is ``failed``.
        Raises :class:`~elfscreen.client.errors.ClientError` when the submission as a whole fails."""
        items = as_items(structures, names, format)
        if not items:
            raise ValueError("nothing to screen")
        return Batch(self._backend, items, self._backend.submit(items, dict(options or {})))

    def screen(self, structure: StructureLike, options: dict | None = None, *, name: str | None = None,
               format: str | None = None, timeout: float | None = None) -> dict:
        """The result of one structure (ScreeningResult JSON: ``phi``, ``phi_star``, ``tc["value_k"]`` in K,
        ``bottleneck``, …). Raises :class:`~elfscreen.client.errors.ScreeningFailed` with the error object
        when it cannot be screened, ``TimeoutError`` after ``timeout`` s."""
        batch = self.submit(structure, options, names=None if name is None else [name], format=format)
        if len(batch) != 1:
            raise ValueError(f"this input holds {len(batch)} structures; use submit()")
        outcome = next(batch.results(timeout=timeout))
        if not outcome.ok:
            raise ScreeningFailed(outcome.error)
        return outcome.result

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Batch:
    """Submitted structures, in the order given (``items``), and what became of them."""

    def __init__(self, backend, items: list[Item], tickets: list):
        self.items = items
        self._backend = backend
        self._outcomes: list[Outcome | None] = [None] * len(items)
        self._pending: dict[str, int] = {}  # ticket (job id) → position
        for k, ticket in enumerate(tickets):
            if isinstance(ticket, dict):  # refused at submission
                self._outcomes[k] = _outcome(items[k], ticket)
            else:
                self._pending[ticket] = k

    def __len__(self) -> int:
        return len(self.items)

    @property
    def finished(self) -> bool:
        """Every structure is done or failed."""
        return not self._pending

    def results(self, progress: bool | Callback = False, timeout: float | None = None) -> Iterator[Outcome]:
        """The :class:`~elfscreen.client.outcome.Outcome` of each structure in submission order, each as
        soon as it and those before it have finished. ``progress``: True for a bar on stderr, or a
        callable ``(outcome, n_finished, total)`` called once per structure in the order they finish.
        Raises ``TimeoutError`` when some are unfinished after ``timeout`` s (the jobs go on: call again)."""
        total = len(self)
        report, bar = (Bar(total), True) if progress is True else (progress or None, False)
        count = 0

        def tell(positions):
            nonlocal count
            for k in positions:
                count += 1
                if report:
                    report(self._outcomes[k], count, total)

        first, longest = self._backend.poll_s
        try:
            tell([k for k, o in enumerate(self._outcomes) if o is not None])
            deadline = None if timeout is None else time.monotonic() + timeout
            wait_s, nxt = first, 0
            while nxt < total:
                if self._outcomes[nxt] is not None:
                    yield self._outcomes[nxt]
                    nxt += 1
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self._pending)} of {total} structures unfinished after {timeout} s")
                new = self._step()
                tell(new)
                if new:
                    wait_s = first
                else:
                    time.sleep(wait_s)
                    wait_s = min(longest, wait_s * 1.5)
        finally:
            if bar:
                report.close()

    def wait(self, progress: bool | Callback = False, timeout: float | None = None) -> Batch:
        """Block until every structure has finished (see :meth:`results` for ``progress``, ``timeout``)."""
        for _ in self.results(progress, timeout):
            pass
        return self

    def outcomes(self) -> list[Outcome]:
        """Every outcome, in submission order (waits for them)."""
        return list(self.results())

    def _step(self) -> list[int]:
        """Ask the backend once; the positions that finished."""
        new = []
        for ticket, fields in self._backend.poll(list(self._pending)).items():
            k = self._pending.pop(ticket)
            self._outcomes[k] = _outcome(self.items[k], fields)
            new.append(k)
        return new


def _outcome(item: Item, fields: dict) -> Outcome:
    return Outcome(name=item.name, status=fields["status"], result=fields.get("result"), error=fields.get("error"),
                   source=item.source, index=item.index, job_id=fields.get("job_id"), cached=fields.get("cached", False))
