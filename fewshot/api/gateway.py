"""What the routes take from the running gateway service, as FastAPI dependencies.

BentoML hands a service method its `self` the same way (`Depends(bentoml.get_current_service)`,
_bentoml_sdk/_internals.py); routes that live in their resource's module ask for the one part they
use instead: the inference client, or the training queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bentoml import get_current_service

if TYPE_CHECKING:
    from fewshot.api.inference import InferenceClient
    from fewshot.api.training import TrainingQueue


def inference_client() -> InferenceClient:
    return get_current_service().client


def training_queue() -> TrainingQueue:
    return get_current_service().queue
