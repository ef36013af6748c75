"""Training job records: written before a job is queued, updated as it runs, kept across restarts.

Two backends behind one interface: SQLite under MODEL_PATH (embedded default) and Redis (when
REDIS_URL is set, for several trainer machines). Every status change is a compare-and-set, so a
late signal can never overwrite a newer state (e.g. "interrupted" after "completed").

A training job's examples (`request["examples"]`, `request["eval_examples"]`) are stored apart from
its record, written and deleted with it: the record keeps `request["examples_ref"]` (the job id and
the counts). A 10,000-example set is ~1 MB of JSON, and every status change (a compare-and-set:
read, parse, write), every progress step and every listed job parsed it again; the trainer reads
them once (`request_with_examples`). Records written before hold them inline and are read as they are.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from fewshot.records.outcomes import Promotion
from fewshot.records.sqlite_file import SqliteFile
from fewshot.settings import Settings
from fewshot.timestamps import UtcTimestamp, utc_now

JobKind = Literal["train", "import", "retrain"]
JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "running", "completed", "failed", "cancelled")
FINISHED_STATUSES: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")


class StrategyComparison(BaseModel):
    """strategy auto: the head-only and the fine-tuned model, scored on the same evaluation examples."""

    winner: Literal["head", "setfit"]
    reason: str
    head_accuracy: float | None = None
    setfit_accuracy: float | None = None
    metric: Literal["accuracy", "micro_f1"] = "accuracy"
    """What decided: accuracy, or micro F1 for multi-label models (on a few evaluation texts and many
    labels, both models' subset accuracy is mostly 0: a tie every time)."""
    head_micro_f1: float | None = None
    setfit_micro_f1: float | None = None
    head_training_seconds: float
    setfit_training_seconds: float


class RetrainPlan(BaseModel):
    """A retrain job's own part of its request (`request["retrain"]`): where each part starts from and
    whether the new version replaces the served one."""

    strategy: Literal["head", "continue", "full", "auto"]
    from_version: str | None = None
    """The version (name:version) it starts from: the one served when the retrain was asked for."""
    promote: Literal["if_better", "always"] = "if_better"
    digest: str
    """The example set's digest when the job was made (fewshot/records/examples.py: set_digest)."""
    set_size: int

    @property
    def head_from(self) -> Literal["version", "base"]:
        """Where a head-only part starts: the served version's body (head, auto), else the base model's."""
        return "version" if self.strategy in ("head", "auto") and self.from_version else "base"

    @property
    def tune_from(self) -> Literal["version", "base"]:
        """Where fine-tuning starts: the served version's body (continue), or the base model (full, auto)."""
        return "version" if self.strategy == "continue" and self.from_version else "base"


class JobRecord(BaseModel):
    """Everything known about one job. What the API shows of it is built in `fewshot.api.views`."""

    job_id: str
    status: JobStatus
    model_name: str
    created_at: UtcTimestamp
    request: dict[str, Any]
    """The validated request, as JSON: the task reads it from here, not from the queue."""
    kind: JobKind = "train"
    """train (a TrainRequest) or import (an ImportRequest)."""
    started_at: UtcTimestamp | None = None
    finished_at: UtcTimestamp | None = None
    error: str | None = None
    model_version: str | None = None
    attempts: int = 0
    note: str | None = None
    progress: float | None = None
    step: int | None = None
    total_steps: int | None = None
    cancel_requested: bool = False
    warnings: list[str] = Field(default_factory=list)
    comparison: StrategyComparison | None = None
    promotion: Promotion | None = None
    """A retrain: whether its version replaced the served one, and why."""
    worker: str | None = None
    """Which trainer (host:pid) ran it last."""


def new_job(model_name: str, request: dict[str, Any], kind: JobKind = "train") -> JobRecord:
    return JobRecord(job_id=str(uuid.uuid4()), status="pending", model_name=model_name,
                     created_at=utc_now(), request=request, kind=kind)


EXAMPLES_REF = "examples_ref"
"""The key of `request` that replaces a job's examples in its stored record."""
EXAMPLE_FIELDS = ("examples", "eval_examples")


class ExamplesRef(BaseModel):
    """`request["examples_ref"]`: where a job's examples are (its own id) and how many there are."""

    job_id: str
    examples: int
    eval_examples: int


def split_off_examples(record: JobRecord) -> tuple[JobRecord, str | None]:
    """The record as stored (its request's examples replaced by a reference) and the examples as JSON;
    the record as it is and None when its request carries no examples (an import, a test's record)."""
    request = record.request
    if record.kind not in ("train", "retrain") or not isinstance(request.get("examples"), list):
        return record, None
    held = {field: request.get(field) for field in EXAMPLE_FIELDS}
    ref = ExamplesRef(job_id=record.job_id, examples=len(held["examples"] or []),
                      eval_examples=len(held["eval_examples"] or []))
    kept = {key: value for key, value in request.items() if key not in EXAMPLE_FIELDS}
    return (record.model_copy(update={"request": {**kept, EXAMPLES_REF: ref.model_dump()}}),
            json.dumps(held, ensure_ascii=False, separators=(",", ":")))


class MissingExamples(LookupError):
    """A record refers to examples that are not in the store (deleted with the record meanwhile)."""


def request_with_examples(store: JobStore, record: JobRecord) -> dict[str, Any]:
    """The job's request as it was submitted: its examples read back by reference, or (a record written
    before they were kept apart) its request as stored. Raises MissingExamples if they are gone."""
    if EXAMPLES_REF not in record.request:
        return record.request
    ref = ExamplesRef.model_validate(record.request[EXAMPLES_REF])
    held = store.examples(ref.job_id)
    if held is None:
        raise MissingExamples(f"the examples of job {ref.job_id} are no longer stored")
    kept = {key: value for key, value in record.request.items() if key != EXAMPLES_REF}
    return {**kept, **held}


class UnknownCursor(LookupError):
    """A page was asked for after a job that does not exist (never did, or expired meanwhile)."""


# Refusals of trainers/tasks.py's submit and cancel functions, which the gateway answers (409, 429).
class QueueFull(Exception):
    """The queue already holds MAX_QUEUED_JOBS pending jobs."""


class SetNotTrainable(Exception):
    """`mode: add`: the example set with the request's examples is not a valid training set;
    `errors`: pydantic's, as validating it as a /v1/train request found them."""

    def __init__(self, model_name: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"the example set of {model_name!r} with these examples")
        self.errors = errors


class NotCancellable(Exception):
    """The job has already finished (completed or failed)."""


class JobStore(Protocol):
    def create(self, record: JobRecord) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def examples(self, job_id: str) -> dict[str, Any] | None:
        """The examples stored apart for the job (`{"examples": [...], "eval_examples": [...] | None}`),
        None when it has none there (no such job, or one whose record holds them inline)."""
        ...

    def transition(self, job_id: str, allowed_from: Iterable[JobStatus], **changes: Any) -> JobRecord | None:
        """Apply `changes` if the job's status is in `allowed_from`; the new record, else None."""
        ...

    def with_status(self, status: JobStatus) -> list[JobRecord]: ...

    def page(self, limit: int, status: JobStatus | None = None, model_name: str | None = None,
             after: str | None = None) -> list[JobRecord]:
        """Up to `limit` records, newest first (by created_at, then job id), optionally of one status
        and model, starting after job `after` in that order. Raises UnknownCursor if `after` is gone."""
        ...

    def count(self, status: JobStatus) -> int:
        """How many jobs have `status`, without reading their records."""
        ...

    def delete(self, job_id: str) -> None: ...

    def beat(self, worker: str, ttl_seconds: float) -> None:
        """Record that trainer `worker` is alive for the next `ttl_seconds`."""
        ...

    def live_workers(self) -> set[str]:
        """Trainers whose last heartbeat has not expired."""
        ...


def count_by_status(store: JobStore) -> dict[JobStatus, int]:
    return {status: store.count(status) for status in JOB_STATUSES}


def expire_finished(store: JobStore, finished_before: datetime) -> int:
    """Delete completed, failed and cancelled records that finished before `finished_before`; how many."""
    expired = [record.job_id for status in FINISHED_STATUSES for record in store.with_status(status)
               if record.finished_at is not None and record.finished_at < finished_before]
    for job_id in expired:
        store.delete(job_id)
    return len(expired)


def _changed(record: JobRecord, allowed_from: Iterable[JobStatus], changes: dict[str, Any]) -> JobRecord | None:
    if record.status not in set(allowed_from):
        return None
    return JobRecord.model_validate({**record.model_dump(), **changes})


class SqliteJobStore(SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "created_at TEXT NOT NULL, record TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)",
            "CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (created_at DESC, job_id DESC)",
            "CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS job_examples (job_id TEXT PRIMARY KEY, examples TEXT NOT NULL)")

    def create(self, record: JobRecord) -> None:
        stored, examples = split_off_examples(record)
        with self._write() as db:  # one transaction: never a record without its examples, nor the reverse
            db.execute("INSERT INTO jobs (job_id, status, created_at, record) VALUES (?, ?, ?, ?)",
                       (stored.job_id, stored.status, stored.created_at.isoformat(), stored.model_dump_json()))
            if examples is not None:
                db.execute("INSERT INTO job_examples (job_id, examples) VALUES (?, ?)", (stored.job_id, examples))

    def examples(self, job_id: str) -> dict[str, Any] | None:
        with self._connection() as db:
            row = db.execute("SELECT examples FROM job_examples WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def get(self, job_id: str) -> JobRecord | None:
        with self._connection() as db:
            row = db.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def transition(self, job_id: str, allowed_from: Iterable[JobStatus], **changes: Any) -> JobRecord | None:
        with self._write() as db:
            row = db.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            updated = _changed(JobRecord.model_validate_json(row[0]), allowed_from, changes)
            if updated is not None:
                db.execute("UPDATE jobs SET status = ?, record = ? WHERE job_id = ?",
                           (updated.status, updated.model_dump_json(), job_id))
        return updated

    def with_status(self, status: JobStatus) -> list[JobRecord]:
        with self._connection() as db:
            rows = db.execute("SELECT record FROM jobs WHERE status = ? ORDER BY created_at",
                              (status,)).fetchall()
        return [JobRecord.model_validate_json(row[0]) for row in rows]

    def page(self, limit: int, status: JobStatus | None = None, model_name: str | None = None,
             after: str | None = None) -> list[JobRecord]:
        conditions, parameters = [], []
        if status is not None:
            conditions.append("status = ?")
            parameters.append(status)
        if model_name is not None:
            conditions.append("json_extract(record, '$.model_name') = ?")
            parameters.append(model_name)
        if after is not None:
            cursor = self.get(after)
            if cursor is None:
                raise UnknownCursor(after)
            conditions.append("(created_at < ? OR (created_at = ? AND job_id < ?))")
            created = cursor.created_at.isoformat()
            parameters += [created, created, after]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._connection() as db:
            rows = db.execute(f"SELECT record FROM jobs {where} ORDER BY created_at DESC, job_id DESC LIMIT ?",
                              (*parameters, limit)).fetchall()
        return [JobRecord.model_validate_json(row[0]) for row in rows]

    def count(self, status: JobStatus) -> int:
        with self._connection() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def delete(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM job_examples WHERE job_id = ?", (job_id,))

    def beat(self, worker: str, ttl_seconds: float) -> None:
        now = time.time()
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO workers (worker, expires_at) VALUES (?, ?)", (worker, now + ttl_seconds))
            db.execute("DELETE FROM workers WHERE expires_at < ?", (now,))

    def live_workers(self) -> set[str]:
        with self._connection() as db:
            rows = db.execute("SELECT worker FROM workers WHERE expires_at >= ?", (time.time(),)).fetchall()
        return {row[0] for row in rows}


class RedisJobStore:
    """Each record a JSON string under `<prefix>:job:<id>`, its examples under `<prefix>:job_examples:<id>`,
    plus one set of ids per status and a sorted set of every id by creation time (for listing newest first).

    A trainer's heartbeat is a key `<prefix>:worker:<id>` that Redis expires by itself.
    """

    PAGE_SCAN = 256  # records read per round trip while filtering a listing

    def __init__(self, url: str, prefix: str = "fewshot") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix
        self._by_created = f"{prefix}:jobs:by_created"
        self._index_unlisted_records()

    def _index_unlisted_records(self) -> None:
        """Records written before the creation-time index existed get into it (idempotent)."""
        statuses = [self._status_key(status) for status in JOB_STATUSES]
        if self._redis.zcard(self._by_created) >= sum(self._redis.scard(key) for key in statuses):
            return
        for job_id in self._redis.sunion(statuses):
            record = self.get(job_id.decode())
            if record is not None:
                self._redis.zadd(self._by_created, {record.job_id: record.created_at.timestamp()}, nx=True)

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _status_key(self, status: str) -> str:
        return f"{self._prefix}:jobs:{status}"

    def _examples_key(self, job_id: str) -> str:
        return f"{self._prefix}:job_examples:{job_id}"

    def create(self, record: JobRecord) -> None:
        stored, examples = split_off_examples(record)
        with self._redis.pipeline() as pipe:  # MULTI/EXEC: the record and its examples together
            if examples is not None:
                pipe.set(self._examples_key(stored.job_id), examples)
            pipe.set(self._key(stored.job_id), stored.model_dump_json())
            pipe.sadd(self._status_key(stored.status), stored.job_id)
            pipe.zadd(self._by_created, {stored.job_id: stored.created_at.timestamp()})
            pipe.execute()

    def examples(self, job_id: str) -> dict[str, Any] | None:
        raw = self._redis.get(self._examples_key(job_id))
        return json.loads(raw) if raw else None

    def get(self, job_id: str) -> JobRecord | None:
        raw = self._redis.get(self._key(job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    def transition(self, job_id: str, allowed_from: Iterable[JobStatus], **changes: Any) -> JobRecord | None:
        import redis

        key = self._key(job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    current = JobRecord.model_validate_json(raw)
                    updated = _changed(current, allowed_from, changes)
                    if updated is None:
                        return None
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json())
                    pipe.srem(self._status_key(current.status), job_id)
                    pipe.sadd(self._status_key(updated.status), job_id)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue  # another writer changed it first; decide again on its value

    def with_status(self, status: JobStatus) -> list[JobRecord]:
        ids = sorted(member.decode() for member in self._redis.smembers(self._status_key(status)))
        records = [self.get(job_id) for job_id in ids]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    def page(self, limit: int, status: JobStatus | None = None, model_name: str | None = None,
             after: str | None = None) -> list[JobRecord]:
        start = 0
        if after is not None:
            rank = self._redis.zrevrank(self._by_created, after)
            if rank is None:
                raise UnknownCursor(after)
            start = rank + 1
        found: list[JobRecord] = []
        # Equal scores come in reverse id order, as SQLite's ORDER BY created_at DESC, job_id DESC.
        while len(found) < limit:
            ids = [member.decode() for member in
                   self._redis.zrevrange(self._by_created, start, start + self.PAGE_SCAN - 1)]
            if not ids:
                break
            start += len(ids)
            for raw in self._redis.mget([self._key(job_id) for job_id in ids]):
                record = JobRecord.model_validate_json(raw) if raw else None
                if (record is not None and status in (None, record.status)
                        and model_name in (None, record.model_name)):
                    found.append(record)
        return found[:limit]

    def count(self, status: JobStatus) -> int:
        return int(self._redis.scard(self._status_key(status)))

    def delete(self, job_id: str) -> None:
        record = self.get(job_id)
        with self._redis.pipeline() as pipe:
            pipe.delete(self._key(job_id), self._examples_key(job_id))
            pipe.zrem(self._by_created, job_id)
            if record is not None:
                pipe.srem(self._status_key(record.status), job_id)
            pipe.execute()

    def beat(self, worker: str, ttl_seconds: float) -> None:
        self._redis.set(f"{self._prefix}:worker:{worker}", "1", px=max(1, int(ttl_seconds * 1000)))

    def live_workers(self) -> set[str]:
        start = len(f"{self._prefix}:worker:")
        return {key.decode()[start:] for key in self._redis.scan_iter(match=f"{self._prefix}:worker:*", count=1000)}


def open_job_store(settings: Settings) -> JobStore:
    """Redis when REDIS_URL is set, else SQLite in the queue directory (which `fewshot.records.stores` creates)."""
    if settings.redis_url:
        return RedisJobStore(settings.redis_url)
    return SqliteJobStore(settings.jobs_file)
