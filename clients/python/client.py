"""The client: :class:`Client` submits structures, :class:`Batch` follows them to their results."""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from elfscreen.client.errors import ClientError, ScreeningFailed
from elfscreen.client.inputs import Item, StructureLike, as_items
from elfscreen.client.local import LocalBackend
from elfscreen.client.outcome import Outcome
from elfscreen.client.progress import Bar, Callback
from elfscreen.client.remote import RemoteBackend
from elfscreen.client.transport import Http
from elfscreen.model.options import rank_key

VERIFY_FINISHED = ("done", "failed", "cancelled")

if TYPE_CHECKING:
    from typing_extensions import Self


class Client:
    """Screens structures on an elfscreen server, or in this process when ``server`` is None.

    ``server``: the service's base URL, e.g. ``http://localhost:8000``; None runs the embedded pipeline
    (the model of ``$ELFSCREEN_MODEL`` or the shipped one, on ``device``: e.g. ``cpu``, ``cuda``; None:
    CUDA when present). ``api_key``: sent as ``X-API-Key`` (default ``$ELFSCREEN_API_KEY``).
    ``timeout``: seconds per HTTP request; ``retries``: extra attempts after a transient failure
    (connection error, 429 after its ``Retry-After``, 502/503/504), waiting ``backoff_s``·2^attempt s.

    Options (``options=`` of :meth:`submit`) are the API's (:class:`~elfscreen.model.options.Options`):
    ``evaluation`` (``grid`` default, ``fast``, ``adaptive``: as ``elfscreen screen``, ``--fast``,
    ``--adaptive``), ``spacing_a`` (Å, default per evaluation 0.1, 0.12, 0.05), ``tc_model`` (default
    ``belli2021``), ``h_dos`` (0–1], ``refine``, ``min_persistence``, ``keep_grid`` (``grid`` only).

    DFT verification (a server with Quantum ESPRESSO): :meth:`verify` one screened job, or
    ``submit(..., verify_top=k, verify_by="tc"|"phi")`` to verify the best k once the batch is screened
    (:meth:`Batch.verify_top`); the job's ``result`` then gains ``dft`` and ``delta_phi``.
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
               names: Iterable[str] | None = None, format: str | None = None, verify_top: int | None = None,
               verify_by: str = "tc") -> Batch:
        """Submit structures (see :func:`~elfscreen.client.inputs.as_items`: paths, pymatgen ``Structure``,
        ASE ``Atoms``, :class:`~elfscreen.client.inputs.Item`; ``format`` for files whose name does not
        tell it). A structure the server refuses does not stop the others: its outcome is ``failed``.
        ``verify_top``: once every structure is screened (the batch's :meth:`~Batch.results` has run to its
        end), verify the best ``verify_top`` of them by DFT, ranked by ``verify_by`` (``tc`` or ``phi``);
        the queued jobs are then in ``batch.verifications``. Raises
        :class:`~elfscreen.client.errors.ClientError` when the submission as a whole fails."""
        if verify_top is not None:
            self._server("verify_top")
            rank_key(None, verify_by)  # an unknown ranking fails now, not after the screening
        items = as_items(structures, names, format)
        if not items:
            raise ValueError("nothing to screen")
        batch = Batch(self._backend, items, self._backend.submit(items, dict(options or {})), client=self)
        batch._verify = None if verify_top is None else (verify_top, verify_by)
        return batch

    def verify(self, job_id: str, *, wait: bool = False, timeout: float | None = None) -> dict:
        """Queue the DFT verification of a done job (``POST /v1/screenings/{id}/verify``; a queued, running
        or done one is left as it is) and return the job JSON (``verification``: status, attempts, error).
        ``wait``: block until the verification has finished (:meth:`wait_verified`). Needs a server; a
        server without Quantum ESPRESSO answers :class:`~elfscreen.client.errors.ServerError` 503."""
        job = self._server("verify").json("POST", f"/v1/screenings/{job_id}/verify")
        return self.wait_verified(job_id, timeout) if wait else job

    def wait_verified(self, job_id: str, timeout: float | None = None, poll_s: float = 2.0) -> dict:
        """The job JSON once its verification is done, failed or cancelled (``result.dft``,
        ``result.delta_phi`` when done); ``TimeoutError`` after ``timeout`` s."""
        http = self._server("wait_verified")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = http.json("GET", f"/v1/screenings/{job_id}")
            if (job.get("verification") or {}).get("status") in VERIFY_FINISHED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the verification of job {job_id} is unfinished after {timeout} s")
            time.sleep(poll_s)

    def cancel_verification(self, job_id: str) -> dict:
        """Cancel a queued or running verification (``DELETE /v1/screenings/{id}/verify``); the job JSON."""
        return self._server("cancel_verification").json("DELETE", f"/v1/screenings/{job_id}/verify")

    def _server(self, what: str) -> Http:
        if self._http is None:
            raise ClientError(f"{what}: DFT verification runs on a server (Client(server_url)), not in this process")
        return self._http

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

    def __init__(self, backend, items: list[Item], tickets: list, client: Client | None = None):
        self.items = items
        self._backend = backend
        self._client = client
        self._verify: tuple[int, str] | None = None  # (k, by): verify the best k once every outcome is in
        self.verifications: list[dict] = []  # the job JSON of each verification verify_top queued
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
        if self._verify is not None:
            k, by = self._verify
            self._verify = None
            self.verify_top(k, by)

    def verify_top(self, k: int, by: str = "tc") -> list[dict]:
        """Verify by DFT the best ``k`` screened structures, ranked by ``by`` (``tc``: ``tc.value_k``;
        ``phi``), once every outcome is in (waits for them); the job JSON of each, best first (also kept
        in :attr:`verifications`). Follow them with :meth:`Client.wait_verified`."""
        if self._client is None:
            raise ClientError("verify_top: this batch was not submitted by a Client")
        ranked = sorted((o for o in self.outcomes() if o.ok and o.job_id), key=lambda o: rank_key(o.result, by))
        self.verifications = [self._client.verify(o.job_id) for o in ranked[:k]]
        return self.verifications

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
