"""The batch tasks and their lifecycle: plan → shards (any worker, any order) → finish.

- `plan_batch`: the input file cut into shards, the models it names pinned to their served versions,
  one `run_shard` task queued per shard.
- `run_shard`: a worker claims the shard (fewshot/records/batches.py), computes it, puts its results in
  place whole, and queues `finish_batch` when it was the last one (or the batch is stopping).
- `finish_batch`: the done shards' results assembled into the output and error files; the batch
  `completed`, `cancelled` or `expired`.

Nothing is lost: a worker killed mid-shard leaves its claim, which the next sweep of any worker (at
its start, then every BATCH_SWEEP_SECONDS) sees dead and queues again; shards still in the queue
are queued again only at a worker's start (a queue may have lost the task its worker had taken).
A task that finds its work done or held by a live worker does nothing, so a task queued twice is
computed once. The sweep also stops batches past their completion window and deletes expired files.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import lru_cache
from typing import Any

from batches import inputs, results, shards
from batches.queue import batches, files, huey, settings
from fewshot.records.batches import (
    FINISH,
    FINISHED,
    PLAN,
    BatchError,
    BatchNotCancellable,
    BatchRecord,
    ShardDone,
    now_seconds,
    this_worker,
)

logger = logging.getLogger("fewshot.batches")

MAX_SHARD_ATTEMPTS = 3
"""A shard taken this many times from workers that died on it (killed for memory, a crash in a runtime)
is not computed again: its requests become error lines, and the batch ends."""
REPORT_SECONDS = 1.0
"""A working shard's claim is refreshed at most this often (each refresh is a small file write)."""


# The gateway's side (fewshot/api/batches.py's BatchQueue)

def submit_batch(record: BatchRecord) -> BatchRecord:
    batches.create(record)
    plan_batch(record.id)
    return record


def cancel_batch(batch_id: str) -> BatchRecord | None:
    """`cancelling` now; `cancelled` once its workers have put aside what they finished."""
    def cancel(record: BatchRecord) -> BatchRecord | None:
        if record.status == "cancelling":
            return None
        if record.status in (*FINISHED, "finalizing"):
            raise BatchNotCancellable(f"batch {record.id} is {record.status}: nothing left to cancel")
        record.status, record.stopping, record.cancelling_at = "cancelling", "cancel", now_seconds()
        return record

    record = batches.update(batch_id, cancel)
    if record is not None:
        finish_batch(batch_id)
    return record


# The worker's side

@lru_cache(maxsize=1)
def engine() -> Any:
    """The worker's loaded models, as the inference service loads them (same runtime settings): each
    version served by its export (ONNX Runtime or OpenVINO) when one is made."""
    from fewshot.serving.model_cache import ModelCache
    from fewshot.serving.model_loading import InferenceRuntime, single_threaded_numpy

    single_threaded_numpy()
    runtime = InferenceRuntime.from_settings(settings)
    return ModelCache.for_runtime(runtime, settings.model_refresh_seconds, settings.max_loaded_models)


def _endpoint_engine(endpoint: str) -> shards.Engine:
    from fewshot.serving.engine import embed_items, predict_items

    cache = engine()
    if endpoint == "/v1/predict":
        return lambda items: predict_items(cache, items)
    return lambda items: embed_items(cache, items)


def _fail(batch_id: str, error: BatchError) -> None:
    def failed(record: BatchRecord) -> BatchRecord:
        record.status, record.failed_at, record.errors = "failed", now_seconds(), [error]
        return record

    batches.update(batch_id, failed)


@huey.task()
def plan_batch(batch_id: str) -> None:
    worker = this_worker()
    record = batches.get(batch_id)
    if record is None or record.status != "validating" or batches.claim(batch_id, PLAN, worker) is None:
        return
    try:
        _plan(record)
    finally:
        batches.release(batch_id, PLAN)


def _plan(record: BatchRecord) -> None:
    from fewshot import store

    if record.stopping is not None:
        finish_batch(record.id)
        return
    try:
        source = files.path(record.input_file_id)
        plan = inputs.split(source, record.input_format, settings.batch_shard_texts,
                            lambda shard: batches.shard_path(record.id, shard, "in"))
    except FileNotFoundError:
        _fail(record.id, BatchError(code="missing_file", param="input_file_id",
                                    message=f"input_file_id: file {record.input_file_id} was deleted"))
        return
    except inputs.InputRejected as rejected:
        _fail(record.id, BatchError(code=rejected.code, message=rejected.message, line=rejected.line))
        return
    references = plan.models | ({record.model_name} if record.model_name else set())
    versions = {}
    for reference in references:
        name, version = store.split_reference(reference)
        stored = store.resolve(reference) if version is None else None
        if stored is not None:
            versions[name] = stored.version

    def started(current: BatchRecord) -> BatchRecord:
        current.shards, current.requests_total, current.texts_total = plan.shards, plan.requests, plan.texts
        current.model_versions = versions
        if current.status == "validating":
            current.status, current.in_progress_at = "in_progress", now_seconds()
        return current

    record = batches.update(record.id, started)
    logger.info("batch %s: %d requests, %d texts in %d shards", record.id, plan.requests, plan.texts, plan.shards)
    for shard in range(plan.shards):
        run_shard(record.id, shard)
    if plan.shards == 0 or record.stopping is not None:
        finish_batch(record.id)


@huey.task()
def run_shard(batch_id: str, shard: int) -> None:
    worker = this_worker()
    record = batches.get(batch_id)
    if record is None or record.status != "in_progress" or record.stopping is not None:
        return
    attempt = batches.claim(batch_id, shard, worker)
    if attempt is None:
        return
    record = batches.get(batch_id)  # a cancel that came while claiming is seen here
    if record is None or record.stopping is not None:
        batches.release(batch_id, shard)
        finish_batch(batch_id)
        return
    started = time.perf_counter()
    last_report = 0.0

    def report(texts_done: int) -> None:
        nonlocal last_report
        if time.monotonic() - last_report >= REPORT_SECONDS:
            batches.report(batch_id, shard, worker, texts_done)
            last_report = time.monotonic()

    def stop() -> bool:
        current = batches.get(batch_id)
        return current is None or current.stopping is not None

    suffix = uuid.uuid4().hex[:8]
    out = batches.shard_path(batch_id, shard, f"out.{suffix}.partial")
    err = batches.shard_path(batch_id, shard, f"err.{suffix}.partial")
    entries = batches.shard_path(batch_id, shard, "in")
    try:
        if attempt > MAX_SHARD_ATTEMPTS:
            logger.error("batch %s: shard %d was taken %d times by workers that died on it; its requests fail",
                         batch_id, shard, attempt - 1)
            outcome = shards.give_up(entries, record, out, err, f"this request's shard was taken {attempt - 1} "
                                     "times by batch workers that died on it (e.g. killed for memory); not run again")
        else:
            outcome = shards.run(entries, record, _endpoint_engine(record.endpoint), out, err, report, stop,
                                 settings.batch_chunk_texts)
    except BaseException:
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
        raise
    batches.finish_shard(batch_id, shard, {"out": out, "err": err}, ShardDone(
        requests=outcome.requests, completed=outcome.completed, failed=outcome.failed, texts=outcome.texts,
        worker=worker, attempts=attempt, seconds=time.perf_counter() - started, partial=outcome.stopped))
    logger.info("batch %s: shard %d done (%d requests, %d failed, %.1fs, attempt %d)", batch_id, shard,
                outcome.requests, outcome.failed, time.perf_counter() - started, attempt)
    if outcome.stopped or all(batches.is_done(batch_id, k) for k in range(record.shards or 0)):
        finish_batch(batch_id)


@huey.task()
def finish_batch(batch_id: str) -> None:
    worker = this_worker()
    record = batches.get(batch_id)
    if record is None or record.status in FINISHED:
        return
    if record.stopping is None and (record.status != "in_progress" and record.status != "finalizing"):
        return
    if record.stopping is None and not all(batches.is_done(batch_id, k) for k in range(record.shards or 0)):
        return
    if record.stopping is not None and any(name != FINISH for name in batches.live_claims(batch_id)):
        return  # a shard still stopping: it queues this again when it has
    if batches.claim(batch_id, FINISH, worker) is None:
        return
    try:
        _finish(batch_id)
    finally:
        batches.release(batch_id, FINISH)


def _finish(batch_id: str) -> None:
    def finalizing(record: BatchRecord) -> BatchRecord | None:
        if record.status in FINISHED:
            return None
        if record.stopping is None:
            record.status, record.finalizing_at = "finalizing", record.finalizing_at or now_seconds()
        return record

    record = batches.update(batch_id, finalizing)
    if record is None or record.status in FINISHED:
        return
    done = [shard for shard in range(record.shards or 0) if batches.is_done(batch_id, shard)]
    stored = {}
    name = files.get(record.input_file_id)
    stem = (name.filename.rsplit(".", 1)[0] if name else record.input_file_id) or "batch"
    suffix = results.SUFFIXES[record.input_format]
    for kind, errors in (("out", False), ("err", True)):
        target = batches.directory(batch_id) / f"{kind}{suffix}"
        written = results.write(record, [batches.shard_path(batch_id, shard, kind) for shard in done], target, errors)
        if written or (kind == "out" and record.input_format != "openai"):
            stored[kind] = files.adopt(target, f"{stem}_{'errors' if errors else 'results'}{suffix}", "batch_output")
        else:
            target.unlink(missing_ok=True)
    progress = batches.progress(record)

    def finished(current: BatchRecord) -> BatchRecord:
        now = now_seconds()
        if current.stopping == "cancel":
            current.status, current.cancelled_at = "cancelled", now
        elif current.stopping == "expire":
            current.status, current.expired_at = "expired", now
        else:
            current.status, current.completed_at = "completed", now
        current.output_file_id = stored["out"].id if "out" in stored else None
        current.error_file_id = stored["err"].id if "err" in stored else None
        return current

    record = batches.update(batch_id, finished)
    logger.info("batch %s %s: %d requests completed, %d failed", batch_id, record.status,
                progress.requests_completed, progress.requests_failed)
    for shard in range(record.shards or 0):  # their lines are in the result files now
        for kind in ("in", "out", "err"):
            batches.shard_path(batch_id, shard, kind).unlink(missing_ok=True)


# The sweep: what no task will do by itself

def sweep(starting: bool = False) -> None:
    """Queue again what a dead worker left (and, at a worker's `starting`, every shard not done and not
    held: its task may have been taken by a worker that died before claiming it); stop batches past
    their completion window; delete expired files and old batches."""
    now = now_seconds()
    for record in batches.list():
        try:
            _sweep_batch(record, now, starting)
        except Exception:  # one broken batch must not keep the others waiting
            logger.exception("sweep of batch %s failed", record.id)
    for file_id in files.delete_expired():
        logger.info("file %s expired (BATCH_FILE_DAYS=%s): deleted", file_id, settings.batch_file_days)


def _sweep_batch(record: BatchRecord, now: int, starting: bool) -> None:
    if record.status in FINISHED:
        finished_at = record.completed_at or record.failed_at or record.cancelled_at or record.expired_at or now
        if now - finished_at > settings.batch_file_days * 86400:
            batches.delete(record.id)
        return
    claims = batches.claims(record.id)
    live = {name for name, claim in claims.items() if batches.alive(claim)}
    dead = set(claims) - live
    if record.status == "validating":
        if PLAN not in live and (starting or PLAN in dead):
            plan_batch(record.id)
        return
    if record.stopping is None and record.status == "in_progress" and now >= record.expires_at:
        def expire(current: BatchRecord) -> BatchRecord | None:
            if current.stopping is not None or current.status != "in_progress":
                return None
            current.stopping = "expire"
            return current

        batches.update(record.id, expire)
        finish_batch(record.id)
        return
    if record.stopping is not None or record.status == "finalizing":
        if not live:
            finish_batch(record.id)
        return
    for shard in range(record.shards or 0):
        name = batches.shard_path(record.id, shard, "claim").stem
        if name not in live and (starting or name in dead) and not batches.is_done(record.id, shard):
            run_shard(record.id, shard)
    if all(batches.is_done(record.id, shard) for shard in range(record.shards or 0)):
        finish_batch(record.id)
