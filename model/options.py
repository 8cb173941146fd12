"""The options of one screening (the ``elfscreen screen`` flags), as the service and the client check them."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from elfscreen.model.tc import TC_MODELS

TcModel = Literal[tuple(sorted(TC_MODELS))]  # type: ignore[valid-type]
PIPELINE_OPTIONS = ("spacing_a", "tc_model", "h_dos", "refine", "min_persistence")  # keywords of screen_structure
VERIFY_BY = ("tc", "phi")  # what "verify the best k" ranks screened structures by


def rank_key(result: dict | None, by: str) -> tuple[bool, float]:
    """Sort key, best first, of a screening result by ``by``: ``tc`` (``tc.value_k``, K) or ``phi``; a
    result without the number sorts last. The service's ``verify_top`` and the client's use it."""
    if by not in VERIFY_BY:
        raise ValueError(f"rank by {by!r}: use one of {', '.join(VERIFY_BY)}")
    r = result or {}
    value = (r.get("tc") or {}).get("value_k") if by == "tc" else r.get("phi")
    return (value is None, -(value or 0.0))


class Options(BaseModel):
    """Pipeline options for every structure of a request (the ``elfscreen screen`` flags)."""

    model_config = ConfigDict(extra="forbid")
    spacing_a: float = Field(0.1, ge=0.03, le=1.0, description="grid spacing in Å")
    tc_model: TcModel = Field("belli2021", description="Tc relation")
    h_dos: float | None = Field(None, gt=0, le=1, description="H share of the DOS at E_F; per-structure `hdos` wins")
    refine: bool = Field(True, description="sub-voxel refinement of φ, φ*")
    min_persistence: float = Field(0.005, ge=0, le=1, description="hide critical points of smaller ELF persistence")
    keep_grid: bool = Field(False, description="store the predicted ELF; fetch it at /v1/screenings/{id}/elf.cube")
