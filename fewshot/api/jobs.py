"""Jobs: list them a page at a time, read one, cancel one."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from fewshot.api import errors
from fewshot.api.errors import documented
from fewshot.api.gateway import JobStoreDep, QueueDep
from fewshot.api.job_schemas import JobList, JobListQuery, JobView
from fewshot.api.views import job_view
from fewshot.bentoml_fixes.openapi_document import query_parameters
from fewshot.records.jobs import NotCancellable, UnknownCursor

router = APIRouter()


@router.get("/v1/jobs", response_model=JobList, responses=documented(400),
            openapi_extra={"parameters": query_parameters(JobListQuery)})
def list_jobs(request: Request, jobs: JobStoreDep) -> JobList | JSONResponse:
    """Jobs newest first, optionally of one status and model, a bounded page at a time."""
    query = errors.validated_query(JobListQuery, request.query_params)
    if isinstance(query, JSONResponse):
        return query
    try:
        # One more than asked: whether there is a next page, without a count.
        page = jobs.page(query.limit + 1, status=query.status, model_name=query.model_name, after=query.cursor)
    except UnknownCursor:
        return errors.invalid("cursor: no job with this id (it may have expired); start again without cursor")
    shown = page[:query.limit]
    return JobList(jobs=[job_view(record) for record in shown],
                   next_cursor=shown[-1].job_id if len(page) > query.limit else None)


@router.get("/v1/jobs/{job_id}", response_model=JobView, responses=documented(404))
def get_job(job_id: str, jobs: JobStoreDep) -> JobView | JSONResponse:
    record = jobs.get(job_id)
    return job_view(record) if record else errors.unknown_job(job_id)


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobView, responses=documented(404, 409))
def cancel_job(job_id: str, queue: QueueDep) -> JobView | JSONResponse:
    """A pending job ends `cancelled` at once; a running one at its trainer's next step."""
    try:
        record = queue.cancel_job(job_id)
    except NotCancellable as finished:
        return errors.conflict(str(finished))
    return job_view(record) if record else errors.unknown_job(job_id)
