"""The training task and the job lifecycle around it.

Status flow: pending → running → completed | failed, and running → pending when the trainer is
shut down mid-job (the task is queued again). A cancelled job ends `cancelled`: at once when it was
pending, at the trainer's next step when it was running. Huey signals move the status; the task
itself only records its result, so that a job's record always says what really happened.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

from huey import signals
from pydantic import ValidationError

from fewshot.api.example_schemas import new_examples
from fewshot.api.schemas import Example, label_counts
from fewshot.api.training_schemas import ImportRequest, TrainRequest
from fewshot.records.examples import NewExample, SetRuleBroken, SetRules
from fewshot.records.jobs import (
    JobRecord,
    NotCancellable,
    QueueFull,
    RetrainPlan,
    SetNotTrainable,
    StrategyComparison,
    expire_finished,
    new_job,
)
from fewshot.records.outcomes import Promotion
from fewshot.settings import get_settings
from fewshot.timestamps import utc_now
from trainers.holdout import data_warnings
from trainers.label_names import templated_texts
from trainers.logs import job_context
from trainers.queue import example_sets, huey, jobs

logger = logging.getLogger("fewshot.trainer")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
DIED_WHILE_RUNNING = (
    "the trainer process stopped unexpectedly (killed or crashed) while training this job; "
    "no model was registered. Submit the training request again."
)


def cancel_job(job_id: str) -> JobRecord | None:
    """Cancel a pending job at once, or ask its trainer to stop a running one; None if no such job.

    A pending job's queued task still runs, finds the job cancelled and does nothing. Cancelling a
    cancelled job again changes nothing. Raises NotCancellable for a completed or failed job.
    """
    cancelled = jobs.transition(job_id, {"pending"}, status="cancelled", finished_at=utc_now(),
                                note="cancelled before a trainer started it")
    if cancelled is not None:
        logger.info("job %s: cancelled while pending", job_id)
        return cancelled
    stopping = jobs.transition(job_id, {"running"}, cancel_requested=True)
    if stopping is not None:
        logger.info("job %s: cancellation requested; its trainer stops at its next step", job_id)
        return stopping
    current = jobs.get(job_id)
    if current is None or current.status in ("cancelled", "pending", "running"):
        return current  # pending/running here: it changed under us; the caller shows its state
    raise NotCancellable(f"job_id: job {job_id!r} has already {current.status}; only pending or running jobs "
                         "can be cancelled")


def submit_training(request: TrainRequest, max_queued: int) -> JobRecord:
    """Record the job, then queue it: a job is never queued without a record to report on. Then the
    request's examples become the model's example set (`mode: replace`), or join it (`add`: the job
    trains on the whole set, SetNotTrainable when that is not a valid training set); not when the
    job was refused.

    Refused with `QueueFull` when `max_queued` jobs are already pending (a soft bound: two
    submissions racing at the bound may both get in).
    """
    sent, mode = new_examples(request.examples), request.mode
    templated: list[NewExample] = []
    if request.labels:  # start from label names: their sentences are trained on, and kept in the set
        templated = [NewExample(text, label.name) for label in request.labels
                     for text in templated_texts(label.name, label.description)]
        request = request.model_copy(update={
            "examples": [*request.examples, *(Example(text=e.text, label=e.label) for e in templated)],
            "holdout_fraction": 0 if request.holdout_fraction is None else request.holdout_fraction})
    if mode == "add":
        return _submit_to_the_set(request, sent, templated, max_queued)
    record = new_job(request.model_name, request.model_dump(mode="json"), kind="train")
    record.warnings = data_warnings(label_counts(request.examples))
    submitted = _submit(record, max_queued)
    example_sets.add(request.model_name, sent, "train", replace=True)
    if templated:
        example_sets.add(request.model_name, templated, "template")
    return submitted


def _submit_to_the_set(request: TrainRequest, sent: list[NewExample], templated: list[NewExample],
                       max_queued: int) -> JobRecord:
    """`mode: add`: the examples join the set first, its rules checked inside the store's write (two
    requests at once must not mix the set's forms or pass its caps: SetRuleBroken), then the job
    trains on the whole set as it is then. A set that cannot be trained on, or a full queue, takes
    the added examples back out: a refused request changes no set."""
    settings = get_settings()
    rules = SetRules(max_labels=settings.max_labels, max_examples=settings.max_train_examples)
    outcomes = [example_sets.add(request.model_name, sent, "train", rules=rules)]
    try:
        if templated:
            outcomes.append(example_sets.add(request.model_name, templated, "template", rules=rules))
        whole_set = [example.as_training_example() for example in example_sets.all(request.model_name)]
        try:
            request = TrainRequest.model_validate({**request.model_dump(mode="json"), "mode": "replace",
                                                   "examples": whole_set})
        except ValidationError as invalid:
            raise SetNotTrainable(request.model_name, invalid.errors(include_url=False, include_input=False)) \
                from invalid
        conflicts = [conflict for outcome in outcomes for conflict in outcome.conflicts]
        record = new_job(request.model_name, request.model_dump(mode="json"), kind="train")
        record.warnings = data_warnings(label_counts(request.examples))
        if conflicts:
            record.warnings.append(
                f"{len(conflicts)} text(s) are in the example set with another label, which was kept "
                f"(delete them from the set to relabel): " + "; ".join(
                    f"{conflict.existing.text[:60]!r} stays {conflict.existing.target!r}"
                    for conflict in conflicts[:5]))
        return _submit(record, max_queued)
    except (SetNotTrainable, SetRuleBroken, QueueFull):
        example_sets.delete(request.model_name, [example.id for outcome in outcomes for example in outcome.added])
        raise


def submit_retrain(request: TrainRequest, plan: RetrainPlan, max_queued: int) -> JobRecord:
    """A retrain job: `request` trains on the example set (fewshot.records.outcomes.fixed_evaluation split it),
    `plan` says where it starts from and whether its version replaces the served one."""
    record = new_job(request.model_name, {**request.model_dump(mode="json"), "retrain": plan.model_dump()},
                     kind="retrain")
    record.warnings = data_warnings(label_counts([*request.examples, *(request.eval_examples or [])]))
    return _submit(record, max_queued)


def submit_import(request: ImportRequest, max_queued: int) -> JobRecord:
    """An import job: queued, listed, cancelled and reported like a training job."""
    return _submit(new_job(request.model_name, request.model_dump(mode="json"), kind="import"), max_queued)


def _submit(record: JobRecord, max_queued: int) -> JobRecord:
    pending = jobs.count("pending")
    if pending >= max_queued:
        raise QueueFull(f"the training queue is full: {pending} jobs are pending (MAX_QUEUED_JOBS={max_queued}); "
                        "retry when some have finished")
    jobs.create(record)
    enqueue(record.job_id)
    return record


def enqueue(job_id: str) -> None:
    # The task id is the job id, so a job queued twice is recognised and runs once.
    huey.enqueue(train_model.s(job_id, id=job_id))


@huey.task()
def train_model(job_id: str) -> None:
    """Run the job, whichever its kind (a train or an import job: one task, one lifecycle)."""
    record = jobs.get(job_id)
    if record is None or record.status != "running" or record.worker != WORKER_ID:
        logger.info("job %s: not ours to run (status %s); skipped", job_id, record and record.status)
        return
    from fewshot import metrics  # lazily, as everything here: the gateway imports this module
    from trainers.errors import JobCancelled
    from trainers.importing import run_import  # heavy ML imports stay out of the gateway
    from trainers.run import run_job

    started = time.monotonic()
    progress = JobProgress(job_id)
    with job_context(job_id):
        try:
            if record.kind == "import":
                outcome = run_import(record, get_settings(), before_registering=progress.stop_if_cancelled)
            else:
                outcome = run_job(record, get_settings(), progress=progress,
                                  before_registering=progress.stop_if_cancelled,
                                  on_registered=lambda version, strategy: _serving_early(job_id, version, strategy))
        except JobCancelled as cancelled:
            served = (jobs.get(job_id) or record).model_version
            note = str(cancelled) if served is None else (
                f"{cancelled}; the head-only version {served} registered before fine-tuning stays and is served")
            jobs.transition(job_id, {"running"}, status="cancelled", finished_at=utc_now(), note=note)
            logger.info("job %s: %s", job_id, note)
            metrics.TRAINING_JOBS_FINISHED.labels("cancelled").inc()
            return
        notes = [*([] if outcome.comparison is None else [describe_outcome(outcome.version, outcome.comparison)]),
                 *([] if outcome.promotion is None else [describe_promotion(outcome.version, outcome.promotion)])]
        finished = jobs.transition(job_id, {"running"}, status="completed", model_version=outcome.version,
                                   comparison=outcome.comparison, promotion=outcome.promotion, finished_at=utc_now(),
                                   error=None, progress=1.0, **({"note": "; ".join(notes)} if notes else {}))
        logger.info("job %s: completed as %s:%s", job_id, record.model_name, outcome.version if finished else "?")
    metrics.TRAINING_JOBS_FINISHED.labels("completed").inc()
    metrics.TRAINING_DURATION.observe(time.monotonic() - started)
    expire_old_records()


def describe_promotion(version: str, promotion: Promotion) -> str:
    """A retrain, once it has finished: whether its version is served, and why."""
    if promotion.promoted:
        return f"version {version} is served: {promotion.reason}"
    return (f"version {version} is kept but not served (promote: if_better): {promotion.reason}; version "
            f"{promotion.served_version} is still served")


def describe_outcome(version: str, comparison: StrategyComparison) -> str:
    """strategy auto, once it has finished: which version serves, and why."""
    kept = "the fine-tuned" if comparison.winner == "setfit" else "the head-only"
    if comparison.metric == "micro_f1":
        head, tuned = comparison.head_micro_f1, comparison.setfit_micro_f1
    else:
        head, tuned = comparison.head_accuracy, comparison.setfit_accuracy
    return (f"{kept} version {version} is served: {comparison.reason} ({comparison.metric.replace('_', ' ')}: "
            f"head {head}, fine-tuned {tuned})")


def _serving_early(job_id: str, version: str, strategy: str) -> None:
    """strategy auto: the head-only version serves while the body is fine-tuned."""
    jobs.transition(job_id, {"running"}, model_version=version,
                    note=f"the {strategy}-only version {version} is registered and served; fine-tuning now, "
                         "and its version replaces it only if it scores better")


class JobProgress:
    """Called after every fine-tuning step: records progress in the job (and the log) at most every
    `every_seconds`, and stops training (JobCancelled) once the job was cancelled, looking for
    that at most every `cancel_check_seconds` (one read of the job store)."""

    def __init__(self, job_id: str, every_seconds: float = 2.0, cancel_check_seconds: float = 0.5) -> None:
        self._job_id = job_id
        self._every = every_seconds
        self._last = float("-inf")
        self._cancel_check = cancel_check_seconds
        self._last_cancel_check = float("-inf")
        self._step = 0

    def stop_if_cancelled(self) -> None:
        from trainers.errors import JobCancelled

        record = jobs.get(self._job_id)
        if record is not None and record.cancel_requested:
            where = "before registering the imported model" if record.kind == "import" else \
                f"stopped after fine-tuning step {self._step}"
            raise JobCancelled(f"cancelled while running ({where}); no model was registered")

    def __call__(self, step: int, total_steps: int) -> None:
        self._step = step
        now = time.monotonic()
        if now - self._last_cancel_check >= self._cancel_check:
            self._last_cancel_check = now
            self.stop_if_cancelled()
        if now - self._last < self._every and step < total_steps:
            return
        self._last = now
        fraction = round(step / total_steps, 4) if total_steps else 0.0
        jobs.transition(self._job_id, {"running"}, progress=fraction, step=step, total_steps=total_steps)
        logger.info("job %s: fine-tuning step %d/%d (%.0f%%)", self._job_id, step, total_steps, 100 * fraction)


def expire_old_records() -> None:
    """Delete finished job records older than JOB_RETENTION_DAYS (after each job and at start-up)."""
    days = get_settings().job_retention_days
    if days:
        expired = expire_finished(jobs, utc_now() - timedelta(days=days))
        if expired:
            logger.info("deleted %d job records finished more than %g days ago", expired, days)


@huey.signal(signals.SIGNAL_EXECUTING)
def _mark_running(signal: str, task: Any) -> None:
    record = jobs.get(task.id)
    if record is None:
        return
    jobs.transition(task.id, {"pending"}, status="running", started_at=utc_now(), worker=WORKER_ID,
                    attempts=record.attempts + 1)


@huey.signal(signals.SIGNAL_ERROR)
def _mark_failed(signal: str, task: Any, exc: BaseException | None = None) -> None:
    from fewshot import metrics
    from trainers.errors import describe_failure

    message = describe_failure(exc)
    logger.error("job %s: failed: %s", task.id, message)
    if jobs.transition(task.id, {"running"}, status="failed", error=message, finished_at=utc_now()):
        metrics.TRAINING_JOBS_FINISHED.labels("failed").inc()


@huey.signal(signals.SIGNAL_INTERRUPTED)
def _requeue_interrupted(signal: str, task: Any) -> None:
    record = jobs.get(task.id)
    if record is not None and record.cancel_requested:  # it was to stop anyway
        jobs.transition(task.id, {"running"}, status="cancelled", finished_at=utc_now(),
                        note="cancelled while running; the trainer shut down before its next step")
        return
    note = (f"the trainer shut down while this job was running ({utc_now().isoformat()}); "
            "it was queued again and restarts from the beginning when a trainer runs")
    if jobs.transition(task.id, {"running"}, status="pending", note=note, worker=None,
                       progress=None, step=None, total_steps=None) is not None:
        enqueue(task.id)
        logger.warning("job %s: interrupted by shutdown; queued again", task.id)


def fail_jobs_of_dead_trainers() -> list[str]:
    """Fail `running` jobs whose trainer's heartbeat has expired (killed, crashed, machine gone).

    Another trainer starting never fails a job: only the silence of the job's own trainer does.
    """
    # Running jobs first, heartbeats second: a trainer beats before it runs a job, so a job that
    # starts between the two reads still finds its trainer alive.
    running = jobs.with_status("running")
    if not running:
        return []
    live = jobs.live_workers()
    failed = []
    for record in running:
        if record.worker in live:
            continue
        if record.cancel_requested:  # it was to stop anyway: cancelled, not failed
            jobs.transition(record.job_id, {"running"}, status="cancelled", finished_at=utc_now(),
                            note="cancelled while running; its trainer stopped before its next step")
        elif jobs.transition(record.job_id, {"running"}, status="failed",
                             error=DIED_WHILE_RUNNING, finished_at=utc_now()):
            logger.warning("job %s: its trainer %s stopped sending heartbeats; marked failed",
                           record.job_id, record.worker)
            failed.append(record.job_id)
    return failed


def reconcile_after_restart(sole_consumer: bool) -> None:
    """Put the records right after a trainer (re)starts: nothing stays running or unqueued forever.

    A job left `running` by a dead worker is failed at once when this is the one consumer of its
    state directory; with several trainers it may be running elsewhere, so it is left to the
    heartbeats (`fail_jobs_of_dead_trainers`). A `pending` job whose task
    is not in the queue (the gateway died between the two writes) is queued again.
    """
    if sole_consumer:
        for record in jobs.with_status("running"):
            jobs.transition(record.job_id, {"running"}, status="failed", error=DIED_WHILE_RUNNING,
                            finished_at=utc_now())
            logger.warning("job %s: was running when its trainer died; marked failed", record.job_id)
    queued = {task.id for task in huey.pending()}
    for record in jobs.with_status("pending"):
        if record.job_id not in queued:
            enqueue(record.job_id)
            logger.warning("job %s: was pending but not queued; queued again", record.job_id)
    expire_old_records()
