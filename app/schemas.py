"""The API's request and response bodies. A job's ``result`` is :class:`elfscreen.model.result.ScreeningResult`,
the object ``elfscreen screen`` prints; errors are the result schema's ``{"error": {…}}`` object."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from elfscreen.app.links import job_links
from elfscreen.app.store import VERIFY_STATUSES, merged_result
from elfscreen.model.options import VERIFY_BY, Options
from elfscreen.model.result import ScreeningResult
from elfscreen.model.structures import FORMATS

Status = Literal["queued", "running", "done", "failed"]
VerifyStatus = Literal[VERIFY_STATUSES]  # type: ignore[valid-type]
VerifyBy = Literal[VERIFY_BY]  # type: ignore[valid-type]
FormatName = Literal[FORMATS + ("vasp", "contcar", "xyz", "airss")]  # type: ignore[valid-type]


class StructureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255, description="reported as the result's `name`")
    format: FormatName | None = Field(None, description="structure format; default: from `name`")
    content: str = Field(description="the file's text")
    hdos: float | None = Field(None, gt=0, le=1, description="H share of the DOS at E_F for this structure")


class VerifyRequest(BaseModel):
    """What of a batch to verify by DFT after screening (503 when Quantum ESPRESSO is not installed)."""

    model_config = ConfigDict(extra="forbid")
    verify: bool = Field(False, description="verify every structure by DFT once it is screened")
    verify_top: int | None = Field(None, ge=1, le=1000, description="verify the best k structures once the batch "
                                                                     "is screened")
    verify_by: VerifyBy = Field("tc", description="what verify_top ranks by: tc (result.tc.value_k) or phi")


class SubmitRequest(VerifyRequest):
    model_config = ConfigDict(extra="forbid")
    structures: list[StructureIn] = Field(min_length=1)
    options: Options = Options()
    callback_url: AnyHttpUrl | None = Field(None, description="POSTed the batch summary when every job has finished")


class JobLinks(BaseModel):
    """Absolute permanent URLs of a job (on ``ELFSCREEN_PUBLIC_URL`` when set)."""

    self: str = Field(description="this job's JSON")
    ui: str = Field(description="the job's structure page in the dashboard: the permalink to paste into notes")
    batch: str = Field(description="the batch's JSON")
    batch_ui: str = Field(description="the batch's dashboard page")
    cube: str = Field(description="the ELF grid as a cube file (kept, or predicted again on demand)")


class BatchLinks(BaseModel):
    self: str = Field(description="this batch's JSON")
    ui: str = Field(description="the batch's dashboard page")
    csv: str = Field(description="the batch's results as CSV")


class JobRef(BaseModel):
    id: str
    name: str
    status: Status
    cached: bool = False
    links: JobLinks | None = None


class SubmitResponse(BaseModel):
    batch_id: str
    jobs: list[JobRef]


class ErrorBody(BaseModel):
    code: str
    message: str
    input: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorBody


class DftBlock(BaseModel):
    """The DFT numbers of a verified structure (``model.verify.verify``'s ``dft``)."""

    model_config = ConfigDict(extra="allow")
    phi: float | None
    phi_star: float | None
    phi_1d: float | None
    phi_2d: float | None
    h_dos: float | None = Field(description="H share of the DOS at E_F (projwfc.x)")
    tc: dict | None
    grid: dict | None
    settings: dict = Field(description="the DFT settings (`name`: pure-h or hydride, the dataset settings)")
    code_version: dict
    cpu_seconds: float | None
    wall_seconds: float | None = None


class VerifiedResult(ScreeningResult):
    """The ML result with its DFT verification."""

    dft: DftBlock
    delta_phi: float | None = Field(description="DFT φ − ML φ")


class Verification(BaseModel):
    """The state of a job's DFT verification."""

    status: VerifyStatus
    attempts: int = Field(description="times a DFT worker claimed it (>1 after a worker was lost)")
    error: ErrorBody | None = None
    requested_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    grid_available: bool = Field(description="the DFT ELF can be fetched at dft.cube")


class Job(BaseModel):
    id: str
    batch_id: str
    name: str
    status: Status
    cached: bool = Field(description="answered from the stored result of the same structure, model version and options")
    cached_from: str | None = Field(None, description="the job whose result was reused")
    options: dict
    attempts: int = Field(description="times a worker claimed the job (>1 after a worker was lost)")
    grid_available: bool = Field(description="the predicted ELF can be fetched at elf.cube")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: VerifiedResult | ScreeningResult | None = Field(None, union_mode="left_to_right", description=(
        "the `screen` object; with `dft` and `delta_phi` once a verification is done"))
    error: ErrorBody | None = None
    verification: Verification | None = Field(None, description="the DFT verification; null when never asked")
    links: JobLinks | None = None


class JobPage(BaseModel):
    items: list[Job]
    total: int
    limit: int
    offset: int


class _BatchProgress(BaseModel):
    id: str
    created_at: datetime
    total: int
    counts: dict[str, int] = Field(description="jobs by status")
    progress: float = Field(description="finished jobs / all jobs, 0…1")
    finished: bool


class Batch(_BatchProgress):
    callback_state: str | None = None
    jobs: list[Job] = Field(description="one page of the batch's jobs, with results")
    limit: int
    offset: int
    links: BatchLinks | None = None


class BatchSummary(_BatchProgress):
    """A batch without its jobs (the dashboard's list)."""

    links: BatchLinks


class BatchPage(BaseModel):
    items: list[BatchSummary] = Field(description="newest first")
    total: int
    limit: int
    offset: int


class ResultRow(BaseModel):
    """One job as a flat row of the dashboard's table (and of the CSV): the result's headline numbers."""

    id: str
    batch_id: str
    name: str
    status: Status
    cached: bool
    created_at: datetime
    finished_at: datetime | None = None
    formula: str | None = Field(None, description="the cell's formula, e.g. H6S2")
    reduced_formula: str | None = Field(None, description="per formula unit, e.g. H3S")
    spacegroup: str | None = None
    n_atoms: int | None = None
    volume_per_atom_a3: float | None = None
    phi: float | None = None
    phi_star: float | None = None
    phi_1d: float | None = None
    phi_2d: float | None = None
    phi_dos: float | None = None
    h_fraction: float | None = None
    tc_k: float | None = Field(None, description="Tc estimate in K (result.tc.value_k)")
    tc_raw_k: float | None = None
    tc_model: str | None = None
    phi_std: float | None = Field(None, description="ensemble spread of φ (result.uncertainty.phi_std)")
    tc_std_k: float | None = Field(None, description="ensemble spread of Tc in K")
    warnings: list[str] = []
    error: str | None = Field(None, description="the error message of a failed job")
    verification: VerifyStatus | None = Field(None, description="state of the job's DFT verification (null: never asked)")
    dft_phi: float | None = Field(None, description="φ of the DFT ELF (result.dft.phi), once verified")
    dft_phi_star: float | None = Field(None, description="φ* of the DFT ELF")
    dft_tc_k: float | None = Field(None, description="Tc estimate in K from the DFT φ and H_DOS")
    delta_phi: float | None = Field(None, description="DFT φ − ML φ (result.delta_phi)")
    permalink: str = Field(description="the job's structure page")


class ResultPage(BaseModel):
    items: list[ResultRow] = Field(description="in submission order")
    total: int
    limit: int
    offset: int


def timestamp(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc)


def job_out(row: dict, with_result: bool = True, base: str | None = None) -> Job:
    """The API view of a store row; with ``base`` (see :func:`elfscreen.app.links.base_url`), its permanent links."""
    return Job(id=row["id"], batch_id=row["batch_id"], name=row["name"], status=row["status"], cached=row["cached"],
               cached_from=row["cached_from"], options=row["options"], attempts=row["attempts"],
               grid_available=grid_kept(row),
               created_at=timestamp(row["created_at"]), started_at=timestamp(row["started_at"]),
               finished_at=timestamp(row["finished_at"]),
               result=merged_result(row) if with_result else None,
               error=(row["error"] or {}).get("error"),
               verification=verification_out(row.get("verification")),
               links=None if base is None else job_links(base, row["id"], row["batch_id"], keep_grid(row)))


def verification_out(v: dict | None) -> Verification | None:
    """The API view of a verifications row (None: never asked)."""
    if v is None:
        return None
    return Verification(status=v["status"], attempts=v["attempts"], error=(v["error"] or {}).get("error"),
                        requested_at=timestamp(v["created_at"]), started_at=timestamp(v["started_at"]),
                        finished_at=timestamp(v["finished_at"]), grid_available=v["grid_structure"] is not None)


def keep_grid(row: dict) -> bool:
    """Whether the job was submitted to keep its grid (it has one once it is done)."""
    return bool(row["options"].get("keep_grid"))


def grid_kept(row: dict) -> bool:
    """Whether the job's predicted ELF is stored (its own, or that of the job it was cached from)."""
    return bool(row["has_grid"] or (row["cached"] and keep_grid(row)))
