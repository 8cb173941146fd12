"""What became of one submitted structure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class Outcome:
    """The outcome of one structure: its :class:`~elfscreen.client.inputs.Item`'s name, file and index,
    and either ``result`` (the ScreeningResult JSON: ``phi``, ``phi_star``, ``tc.value_k`` in K, …) or
    ``error`` (``{"code", "message", "input"}``)."""

    name: str
    status: Literal["done", "failed"]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    source: str | None = None
    index: int | None = None
    job_id: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def record(self) -> dict[str, Any]:
        """One line of a results file: ``file`` and ``index``, then the result object, or ``name`` and
        the ``error`` object (the shape ``elfscreen screen`` prints for a structure it cannot read)."""
        body = self.result if self.ok else {"name": self.name, "error": self.error}
        return {"file": self.source, "index": self.index, **body}
