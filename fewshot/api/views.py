"""The API's views of stored things: what a job record and a model version show over HTTP.

Records (`fewshot.records.jobs.JobRecord`) and stored versions (`fewshot.store.StoredModel`) know nothing
of HTTP; the views here are the only place that decides which of their fields the API shows.
"""

from __future__ import annotations

from fewshot import backend_cache, store
from fewshot.api.job_schemas import JobView
from fewshot.api.model_schemas import LongTexts, ModelVersions, ModelView
from fewshot.api.training_schemas import TrainAccepted
from fewshot.records.jobs import JobRecord
from fewshot.store import StoredModel


def accepted_view(record: JobRecord) -> TrainAccepted:
    """The 202 answer to a queued job (training or import)."""
    return TrainAccepted.model_validate(record.model_dump(include=set(TrainAccepted.model_fields)))


def job_view(record: JobRecord) -> JobView:
    """The record without what only the trainers need (the request it carries, which trainer ran it)."""
    return JobView.model_validate(record.model_dump(include=set(JobView.model_fields)))


def model_view(stored: StoredModel) -> ModelView:
    meta = stored.metadata
    return ModelView(
        model_name=stored.name,
        model_version=stored.version,
        tag=stored.tag,
        base_model=meta["base_model"],
        created_at=meta["created_at"],
        task=meta.get("task", "single_label"),  # versions from before multi-label
        accuracy=meta.get("accuracy"),
        micro_f1=meta.get("micro_f1"),
        macro_f1=meta.get("macro_f1"),
        thresholds=meta.get("thresholds"),
        abstention=meta.get("abstention"),
        scope=meta.get("scope"),
        training_duration_seconds=meta.get("training_duration_seconds"),  # null: imported
        num_examples=meta.get("num_examples"),
        eval_num_examples=meta["eval_num_examples"],
        labels=meta["labels"],
        job_id=meta.get("job_id"),
        strategy=meta.get("strategy", "setfit"),  # versions from before strategies were fine-tuned
        label_metrics=meta.get("label_metrics"),
        eval_source=meta.get("eval_source"),
        confusion_matrix=meta.get("confusion_matrix"),
        comparison=meta.get("comparison"),
        examples_digest=meta.get("examples_digest"),
        held=meta.get(store.HELD),
        promotion=meta.get("promotion"),
        source=meta.get("source"),
        revision=meta.get("revision"),
        long_texts=LongTexts(policy=meta.get("long_texts") or "truncate", requested=meta.get("long_texts_requested"),
                             window_tokens=meta.get("window_tokens"), long_examples=meta.get("long_texts_examples"),
                             scores=meta.get("long_texts_scores"), reason=meta.get("long_texts_reason")),
        backend=backend_cache.read_status(stored.name, stored.version),
    )


def model_versions(name: str, listed: list[StoredModel]) -> ModelVersions:
    return ModelVersions(model_name=name, versions=[model_view(stored) for stored in listed])
