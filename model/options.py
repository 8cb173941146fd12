"""The options of one screening (the ``elfscreen screen`` flags), as the service and the client check them.

Light on purpose (pydantic only, no torch): ``elfscreen`` reads the default spacings here before any model
is loaded, and ``model.predict``/``model.adaptive``/``model.pipeline`` take them from here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from elfscreen.model.tc import TC_MODELS

TcModel = Literal[tuple(sorted(TC_MODELS))]  # type: ignore[valid-type]
PIPELINE_OPTIONS = ("spacing_a", "tc_model", "h_dos", "refine", "min_persistence")  # keywords of screen_structure
VERIFY_BY = ("tc", "phi")  # what "verify the best k" ranks screened structures by

DEFAULT_SPACING_A = 0.1  # Å, the whole grid's (``evaluation`` "grid", ``elfscreen screen``)
FINE_SPACING_A = 0.05  # Å, the fine grid whose answer adaptive evaluation gives (``screen --adaptive``)
FAST_SPACING_A = 0.12  # Å, the grid of adaptive.member_estimate_grid (``screen --fast``); bench/adaptive.py measures it
# how a screening evaluates the model (``evaluation``) → its default grid spacing in Å
EVALUATIONS = {"grid": DEFAULT_SPACING_A, "fast": FAST_SPACING_A, "adaptive": FINE_SPACING_A}
Evaluation = Literal["grid", "fast", "adaptive"]


def rank_key(result: dict | None, by: str) -> tuple[bool, float]:
    """Sort key, best first, of a screening result by ``by``: ``tc`` (``tc.value_k``, K) or ``phi``; a
    result without the number sorts last. The service's ``verify_top`` and the client's use it."""
    if by not in VERIFY_BY:
        raise ValueError(f"rank by {by!r}: use one of {', '.join(VERIFY_BY)}")
    r = result or {}
    value = (r.get("tc") or {}).get("value_k") if by == "tc" else r.get("phi")
    return (value is None, -(value or 0.0))


def evaluation_flags(options: dict) -> dict[str, bool]:
    """The ``adaptive``/``fast`` keywords of :func:`~elfscreen.model.pipeline.screen_structure` for a job's
    validated options (a job stored before ``evaluation`` existed was screened on the whole grid)."""
    evaluation = options.get("evaluation", "grid")
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation {evaluation!r}: use one of {', '.join(EVALUATIONS)}")
    return {"adaptive": evaluation == "adaptive", "fast": evaluation == "fast"}


class Options(BaseModel):
    """Pipeline options for every structure of a request (the ``elfscreen screen`` flags)."""

    model_config = ConfigDict(extra="forbid")
    evaluation: Evaluation = Field(
        "grid", description="how the model is evaluated: `grid` the whole grid (default); `fast` one ensemble member "
        "on the grid and every member only near the events, events refined on the model's own ELF (`screen --fast`); "
        "`adaptive` the answer of the grid from one twice as coarse, the model evaluated exactly only where the "
        "result depends on it (`screen --adaptive`). Results say which in `grid.source` (predicted, predicted-fast, "
        "predicted-adaptive) and, for fast and adaptive, `provenance.topology.adaptive` (certificate)")
    spacing_a: float | None = Field(
        None, ge=0.03, le=1.0, description=f"grid spacing in Å; default (null) per evaluation: grid "
        f"{DEFAULT_SPACING_A}, fast {FAST_SPACING_A}, adaptive {FINE_SPACING_A}")
    tc_model: TcModel = Field("belli2021", description="Tc relation")
    h_dos: float | None = Field(None, gt=0, le=1, description="H share of the DOS at E_F; per-structure `hdos` wins")
    refine: bool = Field(True, description="sub-voxel refinement of φ, φ*")
    min_persistence: float = Field(0.005, ge=0, le=1, description="hide critical points of smaller ELF persistence")
    keep_grid: bool = Field(False, description="store the predicted ELF; fetch it at /v1/screenings/{id}/elf.cube "
                            "(evaluation `grid` only)")

    @model_validator(mode="after")
    def _resolve(self) -> Options:
        """The evaluation's default spacing when none is given; ``keep_grid`` only with the whole grid."""
        if self.spacing_a is None:
            self.spacing_a = EVALUATIONS[self.evaluation]
        if self.keep_grid and self.evaluation != "grid":
            raise ValueError(f"keep_grid needs evaluation \"grid\", not {self.evaluation!r}: the fast and adaptive "
                             "evaluations' grids are the ensemble's ELF only near the events, not everywhere (the "
                             "dashboard predicts a job's whole grid again when it needs one)")
        return self
