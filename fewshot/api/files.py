"""Files, as OpenAI's Files API: upload a batch's input, read and download results, delete.

Uploads are multipart (`file`, `purpose: batch`), at most MAX_FILE_BYTES (the body limit middleware
answers 413 before reading a larger one, and 411 to an upload that does not declare its length);
Starlette spools the part to a temporary file, from which it is copied into the store a megabyte at
a time: memory does not grow with the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import FileResponse, JSONResponse

from fewshot.api import errors
from fewshot.api.batch_schemas import FileDeleted, FileList, FileListQuery, FileObject
from fewshot.api.errors import documented
from fewshot.api.gateway import FileStoreDep
from fewshot.bentoml_fixes.openapi_document import query_parameters
from fewshot.records.files import COPY_CHUNK_BYTES, FileTooLarge, StoredFile
from fewshot.settings import get_settings

router = APIRouter()
MEDIA_TYPES = {".jsonl": "application/jsonl", ".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}
MAX_FILENAME_CHARS = 255


def unknown_file(file_id: str) -> JSONResponse:
    return errors.error_response(404, f"file_id: no file with id {file_id!r} (it may have expired)")


def file_object(stored: StoredFile) -> FileObject:
    return FileObject(**stored.model_dump())


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(COPY_CHUNK_BYTES):
        yield chunk


@router.post("/v1/files", response_model=FileObject, responses=documented(400, 411, 413))
async def upload_file(store: FileStoreDep, file: Annotated[UploadFile, File(description="The file's bytes.")],
                      purpose: Annotated[Literal["batch"], Form(description="`batch`: a batch's input.")],
                      ) -> FileObject | JSONResponse:
    """Upload a batch's input: OpenAI request lines (JSONL), or a table of texts (CSV, JSONL rows, Parquet)."""
    filename = (file.filename or "").strip()
    if not filename or len(filename) > MAX_FILENAME_CHARS:
        return errors.invalid(f"file: needs a file name of 1 to {MAX_FILENAME_CHARS} characters")
    try:
        stored = await asyncio.to_thread(store.save, _chunks(file.file), filename, "batch",
                                         get_settings().max_file_bytes)
    except FileTooLarge as too_large:
        return errors.error_response(413, str(too_large))
    return file_object(stored)


@router.get("/v1/files", response_model=FileList, responses=documented(400),
            openapi_extra={"parameters": query_parameters(FileListQuery)})
def list_files(request: Request, store: FileStoreDep) -> FileList | JSONResponse:
    """Every file, newest first (`purpose`: batch, the uploads; batch_output, the results)."""
    query = errors.validated_query(FileListQuery, request.query_params)
    if isinstance(query, JSONResponse):
        return query
    return FileList(data=[file_object(stored) for stored in store.list(query.purpose)])


@router.get("/v1/files/{file_id}", response_model=FileObject, responses=documented(404))
def get_file(file_id: str, store: FileStoreDep) -> FileObject | JSONResponse:
    stored = store.get(file_id)
    return file_object(stored) if stored else unknown_file(file_id)


@router.get("/v1/files/{file_id}/content", response_model=None, responses={**documented(404), 200: {
    "description": "The file's bytes.", "content": {"application/octet-stream": {}}}})
def file_content(file_id: str, store: FileStoreDep) -> FileResponse | JSONResponse:
    """The file's bytes (a batch's results: JSONL, CSV or Parquet, as its input)."""
    stored = store.get(file_id)
    if stored is None:
        return unknown_file(file_id)
    suffix = "." + stored.filename.rsplit(".", 1)[-1].lower() if "." in stored.filename else ""
    return FileResponse(store.path(file_id), filename=stored.filename,
                        media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"))


@router.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=documented(404))
def delete_file(file_id: str, store: FileStoreDep) -> FileDeleted | JSONResponse:
    return FileDeleted(id=file_id, deleted=True) if store.delete(file_id) else unknown_file(file_id)
