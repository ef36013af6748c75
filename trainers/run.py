"""One training job from its record to a registered model version, by the request's strategy.

- setfit: fine-tune (the seed's behaviour);
- head: the frozen base body and a fitted head (seconds);
- auto: the head first, registered at once so the model serves within seconds; then fine-tuning,
  whose version is registered only if it beats the head on the evaluation split (or when there is
  no evaluation split to compare on: SetFit's fine-tuned model is the default then).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fewshot import store
from fewshot.api.training_schemas import TrainRequest
from fewshot.base_models import links_out_problem, resolve_base_model
from fewshot.records import embedding_cache
from fewshot.records.examples import examples_digest
from fewshot.records.jobs import (
    EXAMPLES_REF,
    JobRecord,
    MissingExamples,
    RetrainPlan,
    StrategyComparison,
    request_with_examples,
)
from fewshot.records.outcomes import Promotion, Target
from fewshot.settings import Settings
from fewshot.store import StoredModel
from fewshot.timestamps import utc_now
from trainers.errors import TrainingFailed
from trainers.holdout import evaluation_metadata
from trainers.promotion import ENOUGH_UNSEEN_TEXTS, cross_fitted, decide, unseen, without_evidence
from trainers.training import (
    DEFAULT_SEED,
    ProgressCallback,
    Split,
    TrainedClassifier,
    TrainingOptions,
    embed,
    fine_tune,
    load_version_body,
    split_examples,
    train_head,
)

logger = logging.getLogger("fewshot.trainer")


@dataclass(frozen=True)
class JobOutcome:
    version: str
    """The store version the job's model_name now serves (the winner's, for auto)."""
    comparison: StrategyComparison | None = None
    promotion: Promotion | None = None
    """A retrain: whether `version` replaced the served one (when not, it is kept and not served)."""


def compare(head: TrainedClassifier, tuned: TrainedClassifier) -> StrategyComparison:
    """Fine-tuning wins only by beating the head on the evaluation split (accuracy; micro F1 for a
    multi-label model); without one it wins by default."""
    metric = "micro_f1" if head.multi_label else "accuracy"
    head_score, tuned_score = getattr(head, metric), getattr(tuned, metric)
    described = "micro F1" if head.multi_label else "accuracy"
    if head_score is None or tuned_score is None:
        winner, reason = "setfit", "no evaluation examples to compare on: kept the fine-tuned model (SetFit's default)"
    elif tuned_score > head_score:
        winner, reason = "setfit", f"fine-tuning beat the head on the evaluation examples ({described})"
    else:
        winner, reason = "head", f"fine-tuning did not beat the head on the evaluation examples ({described})"
    return StrategyComparison(winner=winner, reason=reason, head_accuracy=head.accuracy,
                              setfit_accuracy=tuned.accuracy, metric=metric, head_micro_f1=head.micro_f1,
                              setfit_micro_f1=tuned.micro_f1,
                              head_training_seconds=round(head.training_duration_seconds, 3),
                              setfit_training_seconds=round(tuned.training_duration_seconds, 3))


def run_job(record: JobRecord, settings: Settings, progress: ProgressCallback | None = None,
            before_registering: Callable[[], None] | None = None,
            on_registered: Callable[[str, str], None] | None = None) -> JobOutcome:
    """Train the job's classifier and register it.

    `progress` may raise (a cancelled job) to stop fine-tuning; so may `before_registering`, the
    last moment a cancellation keeps the fine-tuned model out of the store. `on_registered(version,
    strategy)` hears of auto's head version as soon as it serves.
    """
    if settings.training_threads:  # in the thread that trains: OpenMP's thread count is per thread
        torch.set_num_threads(settings.training_threads)
    try:
        request = TrainRequest.model_validate(submitted_request(record))
    except MissingExamples as missing:
        raise TrainingFailed(f"{missing}; submit the training request again") from missing
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
        abstention_coverage=request.coverage,
        long_texts=request.long_texts,
    )
    if options.base_model.is_local:
        location = Path(options.base_model.location)
        if (problem := links_out_problem(location, [location, *settings.local_model_dirs], "LOCAL_MODEL_DIRS")):
            raise TrainingFailed(f"base_model {base_model!r} {problem}")
    split = split_examples([(e.text, e.target) for e in request.examples], request.holdout_fraction, options.seed,
                           [(e.text, e.target) for e in request.eval_examples or []])
    plan = RetrainPlan.model_validate(record.request["retrain"]) if record.kind == "retrain" else None
    start = store.resolve(plan.from_version) if plan and plan.from_version else None
    if plan and plan.from_version and start is None:
        raise TrainingFailed(f"{plan.from_version}, the version to retrain from, was deleted meanwhile; retrain again")
    if plan is not None:
        logger.info("job %s: retrain (%s, promote %s) on the example set of %d; head from %s, fine-tuning from %s",
                    record.job_id, plan.strategy, plan.promote, plan.set_size,
                    plan.from_version if plan.head_from == "version" else "the base model",
                    plan.from_version if plan.tune_from == "version" else "the base model")
    logger.info("job %s: training %s (%s, strategy %s) on %d examples, evaluating on %d, from %s", record.job_id,
                request.model_name, "multi-label" if split.multi_label else "single-label", request.strategy,
                len(split.train), len(split.evaluation), options.base_model.location)

    promotions: list[Promotion] = []

    def register(trained: TrainedClassifier, comparison: StrategyComparison | None = None) -> str:
        metadata = model_metadata(record, request, base_model, trained, split, comparison)
        if plan is not None:
            promotion = promote_or_hold(plan, request.model_name, trained, split, options)
            promotions.append(promotion)
            metadata.update(promotion=promotion.model_dump(), examples_digest=plan.digest, num_examples=plan.set_size)
            if not promotion.promoted:
                metadata[store.HELD] = promotion.reason
        stored = store.register(request.model_name, trained.save, metadata)
        if trained.embeddings:
            embedding_cache.write(stored.name, stored.version, trained.embeddings)
        logger.info("job %s: registered %s (%s)%s", record.job_id, stored.tag, trained.strategy,
                    "" if store.HELD not in metadata else f", held and not served: {metadata[store.HELD]}")
        prune_old_versions(record, request.model_name, settings)
        return stored.version

    def outcome(version: str, comparison: StrategyComparison | None = None) -> JobOutcome:
        return JobOutcome(version, comparison, promotions[-1] if promotions else None)

    def head_only() -> TrainedClassifier:
        if plan is not None and plan.head_from == "version" and start is not None:
            # the served body as it is: its embeddings of unchanged texts are cached with it
            return train_head(split, options, load_version_body(start.path, split, options),
                              embedding_cache.read(start.name, start.version))
        return train_head(split, options)

    if request.strategy == "head":
        return outcome(register(head_only()))
    head_version = None
    if request.strategy == "auto":
        head = head_only()
        head_version = register(head)
        if on_registered is not None and (not promotions or promotions[-1].promoted):
            on_registered(head_version, "head")
    tuned = fine_tune(split, options, progress, load_version_body(start.path, split, options)
                      if plan is not None and plan.tune_from == "version" and start is not None else None)
    comparison = compare(head, tuned) if request.strategy == "auto" else None
    if comparison is not None and comparison.winner == "head":
        logger.info("job %s: keeping the head (%s vs fine-tuned %s)", record.job_id, head.accuracy, tuned.accuracy)
        store.add_metadata(f"{request.model_name}:{head_version}", {"comparison": comparison.model_dump()})
        return outcome(head_version, comparison)
    if before_registering is not None:
        before_registering()
    return outcome(register(tuned, comparison), comparison)


def promote_or_hold(plan: RetrainPlan, model_name: str, trained: TrainedClassifier, split: Split,
                    options: TrainingOptions) -> Promotion:
    """Whether a retrained version replaces the one `model_name` serves now: always, or (`if_better`)
    unless the evidence neither was trained on says it is worse (trainers/promotion.py)."""
    served = store.latest(model_name)
    if served is None:
        return Promotion(promoted=True, rule=plan.promote, method="first_version",
                         reason="the model served no version yet")
    if plan.promote == "always":
        return Promotion(promoted=True, rule="always", method="always", reason="promote: always",
                         served_version=served.version)
    served_trained = trained_examples(served)
    neither = unseen(split.evaluation, served_trained) if served_trained is not None else []
    # the same body reading long texts the same way: the served version's embeddings are the new one's
    same_body = trained.strategy == "head" and plan.head_from == "version" and plan.from_version == served.tag \
        and (served.metadata.get("long_texts") or "truncate") == trained.long_texts_policy
    if same_body and served_trained is not None and not split.multi_label and served.metadata.get("strategy") \
            in ("head", "setfit") and len(neither) < ENOUGH_UNSEEN_TEXTS:
        from sklearn.linear_model import LogisticRegression

        cache = trained.embeddings if trained.embeddings is not None else {}
        scores = cross_fitted(lambda texts: embed(trained.model, list(texts), cache, trained.long_texts_policy),
                              served_trained, split.train,
                              [*split.train, *split.evaluation],
                              lambda vectors, labels: LogisticRegression(class_weight=options.class_weight)
                              .fit(vectors, labels))
        if len(scores):  # none when every text was relabelled since the served version learned it
            return decide(scores, served.labels, served.version, multi_label=False)
    if neither:
        from trainers.scoring import new_version_probabilities, paired_on, version_probabilities

        texts = [text for text, _ in neither]
        scores = paired_on(neither, version_probabilities(served, texts, trained.embeddings if same_body else None),
                           new_version_probabilities(trained, texts, split.refuses), split.multi_label,
                           served.metadata.get("thresholds"), trained.thresholds)
        return decide(scores, served.labels, served.version, split.multi_label)
    return without_evidence(served_trained, split.train, served.labels, trained.labels, served.version)


def submitted_request(record: JobRecord) -> dict[str, Any]:
    """The job's request with its examples, read from the job store when its record refers to them (a
    record made here, by a test, that holds them inline needs no store)."""
    if EXAMPLES_REF not in record.request:
        return record.request
    from trainers.queue import jobs  # opened on first use: as in trained_examples

    return request_with_examples(jobs, record)


def trained_examples(version: StoredModel) -> list[tuple[str, Target]] | None:
    """The examples `version` was trained on: kept in its files; for a version made before they were,
    the split its job's request gives again (the same seed), while the job's record lasts; else None
    (an import: trained elsewhere)."""
    if (version.path / store.TRAINING_EXAMPLES_FILE).is_file():
        return version.training_examples()
    from trainers.queue import jobs

    record = jobs.get(version.metadata.get("job_id") or "") if version.metadata.get("strategy") != "imported" else None
    if record is None or record.kind not in ("train", "retrain"):
        return None
    try:
        request = TrainRequest.model_validate(request_with_examples(jobs, record))
    except MissingExamples:
        return None
    return split_examples([(e.text, e.target) for e in request.examples], request.holdout_fraction,
                          DEFAULT_SEED,
                          [(e.text, e.target) for e in request.eval_examples or []]).train


def model_metadata(record: JobRecord, request: TrainRequest, base_model: str, trained: TrainedClassifier,
                   split: Split, comparison: StrategyComparison | None) -> dict[str, Any]:
    evaluation = trained.evaluation
    return {
        "base_model": base_model,
        "created_at": utc_now().isoformat(),
        "strategy": trained.strategy,
        "task": "multi_label" if trained.multi_label else "single_label",
        **evaluation_metadata(evaluation),
        "thresholds": trained.thresholds,
        "abstention": trained.abstention.model_dump() if trained.abstention else None,
        "scope": trained.scope.model_dump() if trained.scope else None,
        "eval_source": None if evaluation is None else "eval_examples" if split.separate_evaluation else "holdout",
        "comparison": comparison.model_dump() if comparison else None,
        "training_duration_seconds": round(trained.training_duration_seconds, 3),
        "num_examples": trained.num_examples,
        "examples_digest": examples_digest((example.text, example.target) for example in request.examples),
        "labels": trained.labels,
        "job_id": record.job_id,
        "num_iterations": request.num_iterations,
        "learning_rate": request.learning_rate,
        "batch_size": request.batch_size,
        **(trained.long_texts.metadata() if trained.long_texts else {}),
    }


def prune_old_versions(record: JobRecord, model_name: str, settings: Settings) -> None:
    if settings.keep_model_versions:
        for removed in store.prune(model_name, keep=settings.keep_model_versions):
            logger.info("job %s: deleted %s (KEEP_MODEL_VERSIONS=%d)", record.job_id, removed,
                        settings.keep_model_versions)
