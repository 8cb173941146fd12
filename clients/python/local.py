"""The embedded pipeline: no server, the jobs run in this process with the functions the service's jobs
run (``elfscreen.model`` only: the model of :func:`~elfscreen.model.pipeline.get_model`, then
``model.pipeline.screen_structure``: ``predict_grid`` + ``screen_prediction``, or ``screen_adaptive`` for the
``fast`` and ``adaptive`` evaluations). Needs elfscreen's science stack (torch, pymatgen), not the server's
(FastAPI, SQLAlchemy, Celery)."""
from __future__ import annotations

import itertools
import time

from elfscreen.client.errors import ClientError
from elfscreen.client.inputs import Item


class LocalBackend:
    """Runs one job per :meth:`poll`. ``device``: torch device (None: CUDA when present, as the service);
    the model is the service's: ``$ELFSCREEN_MODEL`` or the one shipped with elfscreen. Structures are
    validated as ``elfscreen screen`` validates them (no service size limits)."""

    poll_s = (0.0, 0.0)  # every poll makes progress

    def __init__(self, device: str | None = None):
        self.device = device
        self._queue: dict[str, tuple[Item, dict]] = {}
        self._ids = itertools.count()

    def submit(self, items: list[Item], options: dict) -> list[str]:
        options = _validated(options)
        tickets = [f"local-{next(self._ids)}" for _ in items]
        self._queue.update(zip(tickets, ((item, options) for item in items)))
        return tickets

    def poll(self, tickets: list[str]) -> dict[str, dict]:
        ticket = tickets[0]
        item, options = self._queue.pop(ticket)
        return {ticket: {**self._run(item, options), "job_id": None, "cached": False}}

    def _run(self, item: Item, options: dict) -> dict:
        from elfscreen.model.errors import InputError
        from elfscreen.model.options import PIPELINE_OPTIONS, evaluation_flags
        from elfscreen.model.pipeline import get_model, screen_structure
        from elfscreen.model.structures import parse_structure

        start = time.perf_counter()
        try:
            model, _ = get_model(self.device)
            structure = parse_structure(item.content, item.format, item.name)
            kwargs = {**{k: options[k] for k in PIPELINE_OPTIONS}, "h_dos": item.hdos or options["h_dos"],
                      **evaluation_flags(options)}
            result = screen_structure(structure, item.name, model, device=self.device,
                                      timings_s={"parse": time.perf_counter() - start}, **kwargs)
        except InputError as err:
            return {"status": "failed", "result": None, "error": err.to_dict()["error"]}
        except Exception as exc:  # noqa: BLE001 - as a service job: reported, not raised, so the other structures go on
            return {"status": "failed", "result": None,
                    "error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "input": item.name}}
        return {"status": "done", "result": result.model_dump(mode="json"), "error": None}


def _validated(options: dict) -> dict:
    """The options with the service's defaults, checked as the service checks them."""
    from pydantic import ValidationError

    from elfscreen.model.options import Options

    try:
        return Options.model_validate(options).model_dump()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ClientError(f"{'.'.join(map(str, ('options', *first['loc'])))}: {first['msg']}") from None
