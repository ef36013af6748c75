"""One training job from its record to a registered model version."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from fewshot import store
from fewshot.base_models import resolve_base_model
from fewshot.schemas import TrainRequest, utc_now
from fewshot.settings import Settings
from trainers.jobs import JobRecord
from trainers.training import ProgressCallback, TrainingOptions, train_classifier

logger = logging.getLogger("fewshot.trainer")


def run_job(record: JobRecord, settings: Settings, progress: ProgressCallback | None = None,
            before_registering: Callable[[], None] | None = None) -> str:
    """Train the job's classifier and register it; returns the new store version.

    `progress` may raise (a cancelled job) to stop training; so may `before_registering`, the last
    moment a cancellation keeps the model out of the store.
    """
    if settings.training_threads:  # in the thread that trains: OpenMP's thread count is per thread
        torch.set_num_threads(settings.training_threads)
    request = TrainRequest.model_validate(record.request)
    base_model = request.base_model or settings.default_base_model
    options = TrainingOptions(
        base_model=resolve_base_model(base_model),
        num_iterations=request.num_iterations,
        learning_rate=request.learning_rate,
        batch_size=request.batch_size,
        holdout_fraction=request.holdout_fraction,
        hf_token=settings.hf_token,
        trust_remote_code=settings.trust_remote_code,
        max_seconds=settings.max_training_seconds,
    )
    logger.info("job %s: training %s on %d examples from %s", record.job_id, request.model_name,
                len(request.examples), options.base_model.location)
    trained = train_classifier([e.text for e in request.examples], [e.label for e in request.examples],
                               options, progress)
    metadata = {
        "base_model": base_model,
        "created_at": utc_now().isoformat(),
        "accuracy": trained.accuracy,
        "training_duration_seconds": round(trained.training_duration_seconds, 3),
        "num_examples": trained.num_examples,
        "eval_num_examples": trained.eval_num_examples,
        "labels": trained.labels,
        "job_id": record.job_id,
        "num_iterations": request.num_iterations,
        "learning_rate": request.learning_rate,
        "batch_size": request.batch_size,
    }
    if before_registering is not None:
        before_registering()
    stored = store.register(request.model_name, trained.save, metadata)
    logger.info("job %s: registered %s", record.job_id, stored.tag)
    if settings.keep_model_versions:
        for removed in store.prune(request.model_name, keep=settings.keep_model_versions):
            logger.info("job %s: deleted %s (KEEP_MODEL_VERSIONS=%d)", record.job_id, removed,
                        settings.keep_model_versions)
    return stored.version
