"""Batches, as OpenAI's Batch API: create one over an uploaded file, follow it, list, cancel.

The work is the batch workers' (batches/): this room checks the request, records the batch and
queues it (`BatchQueue`), and shows its record with the progress its shards report.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from fewshot import store as model_store
from fewshot.api import errors
from fewshot.api.batch_schemas import (
    BatchCreate,
    BatchErrors,
    BatchList,
    BatchListQuery,
    BatchObject,
    BatchProgress,
    RequestCounts,
)
from fewshot.api.errors import documented
from fewshot.api.gateway import BatchQueueDep, BatchStoreDep, FileStoreDep
from fewshot.bentoml_fixes.openapi_document import query_parameters
from fewshot.records.batches import (
    FINISHED,
    BatchNotCancellable,
    BatchRecord,
    BatchStore,
    new_batch_id,
    now_seconds,
    table_format,
)
from fewshot.records.files import StoredFile

router = APIRouter()
COMPLETION_WINDOW_SECONDS = {"24h": 24 * 3600}


def unknown_batch(batch_id: str) -> JSONResponse:
    return errors.error_response(404, f"batch_id: no batch with id {batch_id!r}")


def batch_view(record: BatchRecord, batches: BatchStore) -> BatchObject:
    progress = batches.progress(record)
    started = record.in_progress_at
    ended = record.finalizing_at or record.completed_at or record.cancelled_at or record.expired_at
    elapsed = ((ended or time.time()) - started) if started else None
    rate = progress.texts_done / elapsed if elapsed and elapsed > 0 and progress.texts_done else None
    remaining = (record.texts_total or 0) - progress.texts_done
    eta = (remaining / rate if rate else None) if record.status == "in_progress" else (
        0.0 if record.status in FINISHED else None)
    return BatchObject(
        **record.model_dump(exclude={"errors", "stopping", "shards", "requests_total", "texts_total"}),
        errors=BatchErrors(data=record.errors) if record.errors else None,
        request_counts=RequestCounts(total=record.requests_total or 0, completed=progress.requests_completed,
                                     failed=progress.requests_failed),
        progress=BatchProgress(texts_done=progress.texts_done, texts_total=record.texts_total,
                               texts_per_second=round(rate, 1) if rate else None,
                               eta_seconds=round(eta, 1) if eta is not None else None,
                               shards_done=progress.shards_done, shards_total=record.shards,
                               shard_attempts=progress.attempts))


def _input_format(request: BatchCreate, stored: StoredFile) -> str | JSONResponse:
    table = table_format(stored.filename)
    if request.model_name is None:
        if table in ("csv", "parquet"):
            return errors.invalid(f"model_name: required for a table of texts ({stored.filename}); OpenAI's "
                                  "request lines (JSONL) name their models")
        return "openai"
    if table is None:
        return errors.invalid(f"input_file_id: a table of texts must be a .csv, .jsonl or .parquet file; "
                              f"got {stored.filename!r}")
    return table


@router.post("/v1/batches", response_model=BatchObject, responses=documented(400, 404))
async def create_batch(request: BatchCreate, files: FileStoreDep, batches: BatchStoreDep,
                       queue: BatchQueueDep) -> BatchObject | JSONResponse:
    """Run every request of an uploaded file (OpenAI's request lines, or a table of texts with
    `model_name`); its results become a file (GET /v1/files/{output_file_id}/content)."""
    stored = files.get(request.input_file_id)
    if stored is None:
        return errors.error_response(404, f"input_file_id: no file with id {request.input_file_id!r}")
    if stored.purpose != "batch":
        return errors.invalid(f"input_file_id: a batch's input must be uploaded with purpose 'batch'; "
                              f"{stored.id} is {stored.purpose!r}")
    input_format = _input_format(request, stored)
    if isinstance(input_format, JSONResponse):
        return input_format
    if request.model_name is not None and await asyncio.to_thread(model_store.resolve, request.model_name) is None:
        return errors.unknown_model(request.model_name)
    now = now_seconds()
    record = BatchRecord(id=new_batch_id(), endpoint=request.endpoint, input_file_id=stored.id,
                         completion_window=request.completion_window, metadata=request.metadata,
                         model_name=request.model_name, input_format=input_format, created_at=now,
                         expires_at=now + COMPLETION_WINDOW_SECONDS[request.completion_window])
    record = await asyncio.to_thread(queue.submit_batch, record)
    return batch_view(record, batches)


@router.get("/v1/batches", response_model=BatchList, responses=documented(400),
            openapi_extra={"parameters": query_parameters(BatchListQuery)})
def list_batches(request: Request, batches: BatchStoreDep) -> BatchList | JSONResponse:
    """Batches newest first, `limit` at a time; `after`: the last id of the page before."""
    query = errors.validated_query(BatchListQuery, request.query_params)
    if isinstance(query, JSONResponse):
        return query
    records = batches.list()
    if query.after is not None:
        ids = [record.id for record in records]
        if query.after not in ids:
            return errors.invalid(f"after: no batch with id {query.after!r}")
        records = records[ids.index(query.after) + 1:]
    page = [batch_view(record, batches) for record in records[:query.limit]]
    return BatchList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                     has_more=len(records) > query.limit)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject, responses=documented(404))
def get_batch(batch_id: str, batches: BatchStoreDep) -> BatchObject | JSONResponse:
    record = batches.get(batch_id)
    return batch_view(record, batches) if record else unknown_batch(batch_id)


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject, responses=documented(404, 409))
def cancel_batch(batch_id: str, batches: BatchStoreDep, queue: BatchQueueDep) -> BatchObject | JSONResponse:
    """Stop a batch: `cancelling` at once, `cancelled` within seconds, with what it finished in its files."""
    try:
        record = queue.cancel_batch(batch_id)
    except BatchNotCancellable as finished:
        return errors.conflict(str(finished))
    return batch_view(record, batches) if record else unknown_batch(batch_id)
