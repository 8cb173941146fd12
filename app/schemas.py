"""The API's request and response bodies. A job's ``result`` is :class:`model.result.ScreeningResult`,
the object ``elfscreen screen`` prints; errors are the result schema's ``{"error": {…}}`` object."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, Optional

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from model.result import ScreeningResult
from model.structures import FORMATS
from model.tc import TC_MODELS

TcModel = Literal[tuple(sorted(TC_MODELS))]  # type: ignore[valid-type]
Status = Literal["queued", "running", "done", "failed"]
FormatName = Literal[FORMATS + ("vasp", "contcar", "xyz", "airss")]  # type: ignore[valid-type]


class Options(BaseModel):
    """Pipeline options for every structure of a request (the ``elfscreen screen`` flags)."""

    model_config = ConfigDict(extra="forbid")
    spacing_a: float = Field(0.1, ge=0.03, le=1.0, description="grid spacing in Å")
    tc_model: TcModel = Field("belli2021", description="Tc relation")
    h_dos: Optional[float] = Field(None, gt=0, le=1, description="H share of the DOS at E_F; per-structure `hdos` wins")
    refine: bool = Field(True, description="sub-voxel refinement of φ, φ*")
    min_persistence: float = Field(0.005, ge=0, le=1, description="hide critical points of smaller ELF persistence")
    keep_grid: bool = Field(False, description="store the predicted ELF; fetch it at /v1/screenings/{id}/elf.cube")


class StructureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255, description="reported as the result's `name`")
    format: Optional[FormatName] = Field(None, description="structure format; default: from `name`")
    content: str = Field(description="the file's text")
    hdos: Optional[float] = Field(None, gt=0, le=1, description="H share of the DOS at E_F for this structure")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    structures: list[StructureIn] = Field(min_length=1)
    options: Options = Options()
    callback_url: Optional[AnyHttpUrl] = Field(None, description="POSTed the batch summary when every job has finished")


class JobRef(BaseModel):
    id: str
    name: str
    status: Status
    cached: bool = False


class SubmitResponse(BaseModel):
    batch_id: str
    jobs: list[JobRef]


class ErrorBody(BaseModel):
    code: str
    message: str
    input: Optional[str] = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorBody


class Job(BaseModel):
    id: str
    batch_id: str
    name: str
    status: Status
    cached: bool = Field(description="answered from the stored result of the same structure, model version and options")
    cached_from: Optional[str] = Field(None, description="the job whose result was reused")
    options: dict
    attempts: int = Field(description="times a worker claimed the job (>1 after a worker was lost)")
    grid_available: bool = Field(description="the predicted ELF can be fetched at elf.cube")
    created_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    result: Optional[ScreeningResult] = None
    error: Optional[ErrorBody] = None


class JobPage(BaseModel):
    items: list[Job]
    total: int
    limit: int
    offset: int


class Batch(BaseModel):
    id: str
    created_at: datetime
    total: int
    counts: dict[str, int] = Field(description="jobs by status")
    progress: float = Field(description="finished jobs / all jobs, 0…1")
    finished: bool
    callback_state: Optional[str] = None
    jobs: list[Job] = Field(description="one page of the batch's jobs, with results")
    limit: int
    offset: int


def timestamp(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc)


def job_out(row: dict, with_result: bool = True) -> Job:
    """The API view of a store row."""
    return Job(id=row["id"], batch_id=row["batch_id"], name=row["name"], status=row["status"], cached=row["cached"],
               cached_from=row["cached_from"], options=row["options"], attempts=row["attempts"],
               grid_available=bool(row["has_grid"] or (row["cached"] and row["options"].get("keep_grid"))),
               created_at=timestamp(row["created_at"]), started_at=timestamp(row["started_at"]),
               finished_at=timestamp(row["finished_at"]),
               result=row["result"] if with_result else None,
               error=(row["error"] or {}).get("error"))
