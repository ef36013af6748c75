"""Files and batches as OpenAI's Batch API shows them (the `openai` client reads these unchanged),
with our additions: a table's `model_name`, the pinned `model_versions`, the `input_format` and the
batch's `progress`. Times are Unix seconds, as OpenAI's."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fewshot.api.schemas import ModelReference
from fewshot.records.batches import BatchError, BatchStatus, InputFormat
from fewshot.records.files import FilePurpose

BatchEndpoint = Literal["/v1/predict", "/v1/embeddings"]
MAX_METADATA_KEYS = 16  # OpenAI's: 16 pairs, keys of 64 characters, values of 512
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"
    expires_at: int | None = Field(default=None, description="When it is deleted (BATCH_FILE_DAYS).")
    status_details: None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchCreate(BaseModel):
    model_config = {"json_schema_extra": {"example": {
        "input_file_id": "file-0123456789abcdef0123456789abcdef", "endpoint": "/v1/predict",
        "completion_window": "24h"}}}

    input_file_id: str = Field(description="An uploaded file (POST /v1/files, purpose `batch`).")
    endpoint: BatchEndpoint = Field(description="What each request of the file asks: /v1/predict or /v1/embeddings.")
    completion_window: Literal["24h"] = Field(default="24h", description=(
        "As OpenAI's: a batch not finished within it ends `expired`, keeping what it finished."))
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=MAX_METADATA_KEYS)
    model_name: ModelReference | None = Field(default=None, description=(
        "For a table of texts (CSV, JSONL rows or Parquet with a `text` column, optionally `id`): the model "
        "that answers every row. Without it the file is OpenAI's request lines, each naming its model."))


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchProgress(BaseModel):
    texts_done: int
    texts_total: int | None = Field(description="Known once the file is planned (status in_progress).")
    texts_per_second: float | None
    eta_seconds: float | None
    shards_done: int
    shards_total: int | None
    shard_attempts: int = Field(description="Shard computations started: above shards_done + the running ones "
                                            "when a worker died mid-shard and another computed it again.")


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    model_name: str | None = None
    model_versions: dict[str, str] = Field(description="Each model the batch uses, pinned to the version "
                                                       "served when its file was planned.")
    input_format: InputFormat
    progress: BatchProgress


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: FilePurpose | None = Field(default=None, description="batch: the uploads; batch_output: results.")


class BatchListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = Field(default=None, description="A batch id: the page after it (newest first).")
