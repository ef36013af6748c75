"""What the API shows of a job, and the job list's query.

Views: `fewshot.api.views` builds them from the records.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fewshot.api.schemas import ModelName
from fewshot.records.jobs import JobKind, JobStatus, StrategyComparison
from fewshot.records.outcomes import Promotion
from fewshot.timestamps import UtcTimestamp


class JobView(BaseModel):
    job_id: str
    kind: JobKind = Field(default="train", description="train (POST /v1/train), import (POST /v1/models/import) or "
                                                     "retrain (POST /v1/models/{name}/retrain).")
    status: JobStatus
    model_name: str
    created_at: UtcTimestamp
    started_at: UtcTimestamp | None = None
    finished_at: UtcTimestamp | None = None
    error: str | None = None
    model_version: str | None = Field(default=None, description="Store version, once completed.")
    attempts: int = Field(default=0, description="How many times a trainer started this job.")
    note: str | None = Field(default=None, description="What happened to the job besides its status.")
    progress: float | None = Field(default=None, ge=0, le=1,
                                   description="Share of fine-tuning steps done (0–1) once training started; "
                                               "1 when completed.")
    step: int | None = Field(default=None, description="Fine-tuning steps done.")
    total_steps: int | None = Field(default=None, description="Fine-tuning steps in all.")
    cancel_requested: bool = Field(default=False, description="Cancelled while running: the trainer stops "
                                                              "at its next step and the job ends `cancelled`.")
    warnings: list[str] = Field(default_factory=list, description="About the examples, e.g. labels with very few.")
    comparison: StrategyComparison | None = Field(default=None, description="strategy auto: which model won.")
    promotion: Promotion | None = Field(default=None, description=(
        "A retrain: whether its version replaced the served one (`promoted`), and why; when not, the version is "
        "kept (reachable as name:version) and not served."))


MAX_JOBS_PAGE = 500


class JobListQuery(BaseModel):
    """GET /v1/jobs query parameters."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    model_name: ModelName | None = None
    limit: int = Field(default=50, ge=1, le=MAX_JOBS_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=64,
                               description="`next_cursor` of the previous page.")


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last.")
