"""What the routes take from the running gateway, as FastAPI dependencies: the shared stores, the
inference client, the training queue and the batch queue.

Each handler declares the parts it uses (`sets: ExampleStoreDep`), so a room is called without HTTP
by handing it those parts (tests/test_api_rooms.py), and importing a room opens no store. BentoML
hands a service method its `self` the same way (`Depends(bentoml.get_current_service)`,
_bentoml_sdk/_internals.py).
"""

from __future__ import annotations

from typing import Annotated, Protocol

from bentoml import get_current_service
from fastapi import Depends

from fewshot.api.inference import InferenceClient
from fewshot.api.prediction_sampling import PredictionSampler
from fewshot.api.training_schemas import ImportRequest, TrainRequest
from fewshot.records.batches import BatchRecord, BatchStore
from fewshot.records.examples import ExampleStore
from fewshot.records.files import FileStore
from fewshot.records.jobs import JobRecord, JobStore, RetrainPlan
from fewshot.records.prediction_log import PredictionLog


class TrainingQueue(Protocol):
    """What the routes ask of the training queue (trainers/tasks.py is one, handed over by service.py):
    each submit records the job, then queues it, and raises QueueFull past `max_queued` pending jobs."""

    def submit_training(self, request: TrainRequest, max_queued: int) -> JobRecord: ...

    def submit_retrain(self, request: TrainRequest, plan: RetrainPlan, max_queued: int) -> JobRecord: ...

    def submit_import(self, request: ImportRequest, max_queued: int) -> JobRecord: ...

    def cancel_job(self, job_id: str) -> JobRecord | None: ...


class BatchQueue(Protocol):
    """What the batch routes ask of the batch queue (batches/tasks.py is one, handed over by service.py)."""

    def submit_batch(self, record: BatchRecord) -> BatchRecord:
        """Record the batch and queue its planning."""
        ...

    def cancel_batch(self, batch_id: str) -> BatchRecord | None:
        """`cancelling` (None: no such batch); raises BatchNotCancellable once it has finished."""
        ...


def inference_client() -> InferenceClient:
    return get_current_service().client


def training_queue() -> TrainingQueue:
    return get_current_service().queue


def batch_queue() -> BatchQueue:
    return get_current_service().batch_queue


def prediction_sampler() -> PredictionSampler | None:
    """This gateway worker's sampler of predicted texts (None: PREDICTION_LOG_SAMPLE is 0)."""
    return get_current_service().sampler


# fewshot.records.stores opens the stores when first imported: here, when a request first asks.
def job_store() -> JobStore:
    from fewshot.records.stores import jobs

    return jobs


def example_store() -> ExampleStore:
    from fewshot.records.stores import example_sets

    return example_sets


def prediction_log_store() -> PredictionLog:
    from fewshot.records.stores import prediction_log

    return prediction_log


def file_store() -> FileStore:
    from fewshot.records.stores import files

    return files


def batch_store() -> BatchStore:
    from fewshot.records.stores import batches

    return batches


InferenceDep = Annotated[InferenceClient, Depends(inference_client)]
QueueDep = Annotated[TrainingQueue, Depends(training_queue)]
JobStoreDep = Annotated[JobStore, Depends(job_store)]
ExampleStoreDep = Annotated[ExampleStore, Depends(example_store)]
PredictionLogDep = Annotated[PredictionLog, Depends(prediction_log_store)]
SamplerDep = Annotated[PredictionSampler | None, Depends(prediction_sampler)]
BatchQueueDep = Annotated[BatchQueue, Depends(batch_queue)]
FileStoreDep = Annotated[FileStore, Depends(file_store)]
BatchStoreDep = Annotated[BatchStore, Depends(batch_store)]
