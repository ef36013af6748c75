"""Training, importing and retraining: a request becomes a queued job (202) or an error naming its rule.

The queue itself is the trainers' (trainers/tasks.py); the gateway hands it to these routes as a
`TrainingQueue` (fewshot/api/gateway.py), so this room knows the jobs it submits, not how they are run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter
from pydantic import ValidationError
from starlette.responses import JSONResponse

from fewshot import store
from fewshot.api import errors
from fewshot.api.errors import describe_validation_errors, documented
from fewshot.api.example_schemas import RetrainRequest, training_request
from fewshot.api.examples import form_to_send
from fewshot.api.gateway import ExampleStoreDep, QueueDep, TrainingQueue
from fewshot.api.schemas import is_valid_model_name
from fewshot.api.training_schemas import ImportRequest, TrainAccepted, TrainRequest
from fewshot.api.views import accepted_view
from fewshot.records.examples import SetRuleBroken, WrongForm, set_digest
from fewshot.records.jobs import JobRecord, QueueFull, RetrainPlan, SetNotTrainable
from fewshot.settings import get_settings

if TYPE_CHECKING:
    import bentoml

router = APIRouter()


def _queued(ctx: bentoml.Context, submit: Callable[[], JobRecord]) -> TrainAccepted | JSONResponse:
    """202 with the job `submit` recorded and queued, or 429 when the queue is full."""
    try:
        record = submit()
    except QueueFull as full:
        return errors.queue_full(ctx, str(full))
    ctx.response.status_code = 202
    return accepted_view(record)


def train(queue: TrainingQueue, request: TrainRequest, ctx: bentoml.Context) -> TrainAccepted | JSONResponse:
    """POST /v1/train (a BentoML API: the context carries its status)."""
    try:
        return _queued(ctx, lambda: queue.submit_training(request, max_queued=get_settings().max_queued_jobs))
    except SetNotTrainable as invalid:
        return errors.invalid_in(ctx, f"{invalid}: {describe_validation_errors(invalid.errors)}")
    except WrongForm as wrong:
        return errors.invalid_in(ctx, f"examples: the example set of {request.model_name!r} is "
                                      f"{form_to_send(wrong.multi_label)}")
    except SetRuleBroken as broken:  # MAX_LABELS, MAX_TRAIN_EXAMPLES: checked in the store's write
        return errors.invalid_in(ctx, f"examples: {broken} (MAX_LABELS, MAX_TRAIN_EXAMPLES)")


def import_model(queue: TrainingQueue, request: ImportRequest, ctx: bentoml.Context) -> TrainAccepted | JSONResponse:
    """POST /v1/models/import (a BentoML API)."""
    return _queued(ctx, lambda: queue.submit_import(request, max_queued=get_settings().max_queued_jobs))


@router.post("/v1/models/{model_name}/retrain", status_code=202, response_model=TrainAccepted,
             responses=documented(400, 404, 429))
def retrain(model_name: str, queue: QueueDep, sets: ExampleStoreDep,
            body: RetrainRequest | None = None) -> TrainAccepted | JSONResponse:
    """Train the model again on its example set, from its served version (`strategy`), served only if no
    worse on the set's fixed evaluation examples (`promote`): a job like any other (GET /v1/jobs/{job_id})."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    body = body or RetrainRequest()  # no body: every default
    held = sets.all(model_name)
    if not held:
        return errors.error_response(404, f"model_name: {model_name!r} has no example set; add examples with "
                                          f"POST /v1/models/{model_name}/examples or train with POST /v1/train")
    served = store.resolve(model_name)
    try:
        request = TrainRequest.model_validate(training_request(model_name, held, served and served.metadata, body))
    except ValidationError as invalid:
        return errors.invalid(f"the example set of {model_name!r} cannot be trained on: "
                              f"{describe_validation_errors(invalid.errors(include_url=False))}")
    plan = RetrainPlan(strategy=body.strategy, from_version=served and served.tag, promote=body.promote,
                       digest=set_digest(held), set_size=len(held))
    try:
        record = queue.submit_retrain(request, plan, max_queued=get_settings().max_queued_jobs)
    except QueueFull as full:
        return errors.queue_full_response(str(full))
    return accepted_view(record)
