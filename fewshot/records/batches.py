"""Batch records: a batch's state, its shards and who computes them, as files under MODEL_PATH/batches.

Every batch worker (one per machine, batches/) and the gateway share MODEL_PATH, as they share the
model store, so the batch's record lives beside its shards:

    batches/<id>/batch.json           the record (status, counts, pinned model versions)
    batches/<id>/shard-00003.in       the shard's input lines, written when the batch is planned
    batches/<id>/shard-00003.claim    which worker computes it (host, pid) and how far it got
    batches/<id>/shard-00003.out/.err its result lines, renamed into place when complete
    batches/<id>/shard-00003.done     its counts, written last: a shard with `.done` is finished

Every change of the record or of a claim happens under an exclusive lock of the batch (`flock`), so
a cancel never crosses a worker's finish, and two workers never take one shard. A shard's results
are written whole (temporary name, then rename) before its `.done`: a worker killed mid-shard
leaves nothing of it but a claim, which the next worker takes over and computes again.

A claim is dead when its process is gone (same machine) or it has not reported for
BATCH_CLAIM_SECONDS (another machine).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
FINISHED: tuple[BatchStatus, ...] = ("failed", "completed", "expired", "cancelled")
InputFormat = Literal["openai", "csv", "jsonl", "parquet"]
TABLE_FORMATS: dict[str, InputFormat] = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl",
                                         "parquet": "parquet"}
Stopping = Literal["cancel", "expire"]
PLAN = "plan"
FINISH = "finish"
HOST = socket.gethostname()


class BatchNotCancellable(Exception):
    """The batch has finished, or is assembling its results: nothing left to cancel."""


class BatchError(BaseModel):
    """OpenAI's batch error (`errors.data[]`): why a batch failed as a whole."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchRecord(BaseModel):
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None = None
    model_name: str | None = None
    """A table's model (CSV, JSONL rows, Parquet); OpenAI lines name theirs."""
    input_format: InputFormat
    status: BatchStatus = "validating"
    stopping: Stopping | None = None
    """Asked to stop: cancelled (POST …/cancel) or past its completion window."""
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[BatchError] | None = None
    model_versions: dict[str, str] = {}
    """Each model the batch names, pinned to the version served when it was planned."""
    shards: int | None = None
    requests_total: int | None = None
    texts_total: int | None = None


class ShardDone(BaseModel):
    requests: int
    completed: int
    failed: int
    texts: int
    worker: str
    """The worker (host:pid) that finished it."""
    attempts: int
    """How many workers took it: more than 1 when a worker died mid-shard (or a cancel cut it)."""
    seconds: float
    partial: bool = False
    """Stopped by a cancel or expiry: the requests it had answered whole are kept, the rest are not run."""


class Claim(BaseModel):
    host: str
    pid: int
    worker: str
    attempt: int
    heartbeat: float
    texts_done: int = 0


class Progress(BaseModel):
    requests_completed: int
    requests_failed: int
    texts_done: int
    shards_done: int
    attempts: int
    """Shard computations started, the recomputed ones included."""


def table_format(filename: str) -> InputFormat | None:
    """A table's format by its file name's extension (None: not one a batch reads as a table)."""
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return TABLE_FORMATS.get(suffix)


def now_seconds() -> int:
    return int(time.time())


def this_worker() -> str:
    return f"{HOST}:{os.getpid()}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


class BatchStore:
    def __init__(self, directory: Path, claim_seconds: float) -> None:
        self._directory = directory
        self._claim_seconds = claim_seconds

    def directory(self, batch_id: str) -> Path:
        if not batch_id.startswith("batch_") or not batch_id[6:].isalnum():
            raise KeyError(batch_id)
        return self._directory / batch_id

    def shard_path(self, batch_id: str, shard: int | str, suffix: str) -> Path:
        name = f"shard-{shard:05d}" if isinstance(shard, int) else shard
        return self.directory(batch_id) / f"{name}.{suffix}"

    @contextmanager
    def _locked(self, batch_id: str) -> Iterator[None]:
        with open(self.directory(batch_id) / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def create(self, record: BatchRecord) -> BatchRecord:
        self.directory(record.id).mkdir(parents=True)
        _write_atomic(self.directory(record.id) / "batch.json", record.model_dump_json())
        return record

    def get(self, batch_id: str) -> BatchRecord | None:
        try:
            return BatchRecord.model_validate_json((self.directory(batch_id) / "batch.json").read_text())
        except (KeyError, FileNotFoundError):
            return None

    def list(self) -> list[BatchRecord]:
        """Every batch, newest first."""
        records = []
        for path in self._directory.glob("batch_*/batch.json") if self._directory.is_dir() else ():
            try:
                records.append(BatchRecord.model_validate_json(path.read_text()))
            except (FileNotFoundError, ValueError):
                continue
        return sorted(records, key=lambda record: (record.created_at, record.id), reverse=True)

    def update(self, batch_id: str, change: Callable[[BatchRecord], BatchRecord | None]) -> BatchRecord | None:
        """Apply `change` to the current record under the batch's lock; it returns the new record, or
        None to leave it as it is. The record after the call (None: no such batch)."""
        if self.get(batch_id) is None:
            return None
        with self._locked(batch_id):
            current = self.get(batch_id)
            if current is None:
                return None
            changed = change(current.model_copy(deep=True))
            if changed is None:
                return current
            _write_atomic(self.directory(batch_id) / "batch.json", changed.model_dump_json())
            return changed

    def delete(self, batch_id: str) -> None:
        shutil.rmtree(self.directory(batch_id), ignore_errors=True)

    # shards

    def is_done(self, batch_id: str, shard: int) -> bool:
        return self.shard_path(batch_id, shard, "done").exists()

    def done(self, batch_id: str, shard: int) -> ShardDone | None:
        try:
            return ShardDone.model_validate_json(self.shard_path(batch_id, shard, "done").read_text())
        except FileNotFoundError:
            return None

    def claim(self, batch_id: str, shard: int | str, worker: str) -> int | None:
        """Take a shard (or the batch's PLAN / FINISH step) for `worker`: its attempt number, or None
        when it is done or a live worker holds it."""
        with self._locked(batch_id):
            if isinstance(shard, int) and self.is_done(batch_id, shard):
                return None
            held = self._claim(batch_id, shard)
            if held is not None and self.alive(held) and held.worker != worker:
                return None
            attempt = held.attempt + 1 if held is not None else 1  # its last holder died on it (or gave it up)
            host, pid = worker.rsplit(":", 1)
            _write_atomic(self.shard_path(batch_id, shard, "claim"), Claim(
                host=host, pid=int(pid), worker=worker, attempt=attempt, heartbeat=time.time()).model_dump_json())
            return attempt

    def report(self, batch_id: str, shard: int, worker: str, texts_done: int) -> None:
        """A worker's heartbeat on its shard, with how many of its texts are computed."""
        held = self._claim(batch_id, shard)
        if held is not None and held.worker == worker:
            held.heartbeat, held.texts_done = time.time(), texts_done
            _write_atomic(self.shard_path(batch_id, shard, "claim"), held.model_dump_json())

    def release(self, batch_id: str, shard: int | str) -> None:
        self.shard_path(batch_id, shard, "claim").unlink(missing_ok=True)

    def finish_shard(self, batch_id: str, shard: int, outputs: dict[str, Path], done: ShardDone) -> None:
        """Put a shard's complete results in place (`outputs`: suffix → written file), then its `.done`."""
        for suffix, written in outputs.items():
            os.replace(written, self.shard_path(batch_id, shard, suffix))
        _write_atomic(self.shard_path(batch_id, shard, "done"), done.model_dump_json())
        self.release(batch_id, shard)

    def claims(self, batch_id: str) -> dict[str, Claim]:
        """Every claim of the batch (live or not), by shard file name."""
        found = {}
        for path in self.directory(batch_id).glob("*.claim"):
            claim = self._read_claim(path)
            if claim is not None:
                found[path.stem] = claim
        return found

    def live_claims(self, batch_id: str) -> dict[str, Claim]:
        return {name: claim for name, claim in self.claims(batch_id).items() if self.alive(claim)}

    def alive(self, claim: Claim) -> bool:
        if claim.host == HOST and not _process_exists(claim.pid):
            return False
        return time.time() - claim.heartbeat < self._claim_seconds

    def progress(self, record: BatchRecord) -> Progress:
        completed = failed = texts = shards_done = attempts = 0
        for shard in range(record.shards or 0):
            done = self.done(record.id, shard)
            if done is not None:
                completed, failed, texts = completed + done.completed, failed + done.failed, texts + done.texts
                shards_done, attempts = shards_done + 1, attempts + done.attempts
        for name, claim in self.claims(record.id).items() if record.status not in FINISHED else ():
            if name.startswith("shard-") and self.alive(claim):
                texts, attempts = texts + claim.texts_done, attempts + claim.attempt
        return Progress(requests_completed=completed, requests_failed=failed, texts_done=texts,
                        shards_done=shards_done, attempts=attempts)

    def _claim(self, batch_id: str, shard: int | str) -> Claim | None:
        return self._read_claim(self.shard_path(batch_id, shard, "claim"))

    @staticmethod
    def _read_claim(path: Path) -> Claim | None:
        try:
            return Claim.model_validate_json(path.read_text())
        except (FileNotFoundError, ValueError):
            return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    partial.write_text(text)
    os.replace(partial, path)

