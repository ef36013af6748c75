"""Job records on both real backends (SQLite file, redis-server): compare-and-set transitions,
persistence across opens, expiry, and trainer heartbeats."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from fewshot.api.training_schemas import TrainRequest
from fewshot.api.views import job_view
from fewshot.records.jobs import (
    EXAMPLES_REF,
    JobRecord,
    JobStore,
    MissingExamples,
    RedisJobStore,
    SqliteJobStore,
    UnknownCursor,
    expire_finished,
    new_job,
    request_with_examples,
)
from fewshot.timestamps import utc_now


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], JobStore]:
    """Opens the same store again on each call, as another process would."""
    if request.param == "sqlite":
        return lambda: SqliteJobStore(tmp_path / "jobs.db")
    url = request.getfixturevalue("redis_url")
    prefix = f"test-{uuid.uuid4().hex}"  # each test its own keys on the shared server
    return lambda: RedisJobStore(url, prefix=prefix)


def test_records_survive_reopening_and_transitions_are_compare_and_set(open_store) -> None:
    store = open_store()
    record = new_job("m", {"model_name": "m"})
    store.create(record)
    running = store.transition(record.job_id, {"pending"}, status="running", started_at=utc_now(), attempts=1)
    assert running is not None and running.status == "running"
    assert store.transition(record.job_id, {"pending"}, status="running") is None  # already running
    store.transition(record.job_id, {"running"}, status="completed", model_version="v1")
    # A late "interrupted" must not overwrite the completed state.
    assert store.transition(record.job_id, {"running"}, status="pending") is None

    reopened = open_store()
    final = reopened.get(record.job_id)
    assert final is not None
    assert (final.status, final.model_version, final.attempts) == ("completed", "v1", 1)
    assert final.request == {"model_name": "m"}
    assert [r.job_id for r in reopened.with_status("completed")] == [record.job_id]
    assert reopened.with_status("running") == [] and reopened.with_status("pending") == []
    assert final.kind == "train"
    # A record written before job kinds existed (no `kind` in its JSON) reads as a training job.
    assert JobRecord.model_validate_json(final.model_dump_json(exclude={"kind"})).kind == "train"
    assert set(job_view(final).model_dump()) == {"job_id", "kind", "status", "model_name", "created_at", "started_at",
                                              "finished_at", "error", "model_version", "attempts", "note",
                                              "progress", "step", "total_steps", "cancel_requested", "warnings",
                                              "comparison", "promotion"}


def test_with_status_lists_oldest_first(open_store) -> None:
    store = open_store()
    first, second, third = new_job("a", {}), new_job("b", {}), new_job("c", {})
    for record in (third, first, second):  # created_at order is first, second, third
        store.create(record)
    store.transition(second.job_id, {"pending"}, status="running")
    assert [r.job_id for r in store.with_status("pending")] == [first.job_id, third.job_id]
    assert [r.job_id for r in store.with_status("running")] == [second.job_id]
    assert (store.count("pending"), store.count("running"), store.count("failed")) == (2, 1, 0)
    assert store.get("missing") is None
    assert store.transition("missing", {"pending"}, status="running") is None


def test_finished_records_expire_after_their_retention_others_stay(open_store) -> None:
    store = open_store()
    now = utc_now()
    records = {name: new_job("m", {}) for name in ("old_done", "old_failed", "new_done", "pending", "running")}
    for record in records.values():
        store.create(record)
    store.transition(records["old_done"].job_id, {"pending"}, status="completed", finished_at=now - timedelta(days=40))
    store.transition(records["old_failed"].job_id, {"pending"}, status="failed", finished_at=now - timedelta(days=31))
    store.transition(records["new_done"].job_id, {"pending"}, status="completed", finished_at=now - timedelta(days=1))
    store.transition(records["running"].job_id, {"pending"}, status="running", started_at=now - timedelta(days=90))
    assert expire_finished(store, finished_before=now - timedelta(days=30)) == 2
    left = {name for name, record in records.items() if store.get(record.job_id) is not None}
    assert left == {"new_done", "pending", "running"}
    assert [r.job_id for r in store.with_status("completed")] == [records["new_done"].job_id]
    assert store.with_status("failed") == []


def test_a_trainer_is_live_until_its_heartbeat_expires(open_store) -> None:
    store, other_process = open_store(), open_store()
    assert store.live_workers() == set()
    store.beat("host-a:1", ttl_seconds=300)  # read back long before it expires, however busy the machine
    store.beat("host-b:2", ttl_seconds=300)
    assert other_process.live_workers() == {"host-a:1", "host-b:2"}
    store.beat("host-a:1", ttl_seconds=0.2)  # its next beat says: alive for 0.2 s only
    deadline = time.monotonic() + 60  # expiry is the event waited for; the bound only stops a broken store
    while (live := other_process.live_workers()) != {"host-b:2"}:
        assert live == {"host-a:1", "host-b:2"} and time.monotonic() < deadline, live
        time.sleep(0.05)
    store.beat("host-a:1", ttl_seconds=30)  # a late beat brings it back
    assert other_process.live_workers() == {"host-a:1", "host-b:2"}


def test_pages_list_newest_first_filtered_with_a_cursor(open_store) -> None:
    store = open_store()
    start = utc_now()
    created = []
    for index in range(7):  # a, b alternate; created a second apart, oldest first
        record = new_job("a" if index % 2 == 0 else "b", {}).model_copy(
            update={"created_at": start + timedelta(seconds=index)})
        store.create(record)
        created.append(record)
    store.transition(created[0].job_id, {"pending"}, status="cancelled")
    newest_first = [record.job_id for record in reversed(created)]

    first = store.page(3)
    assert [r.job_id for r in first] == newest_first[:3]
    second = store.page(3, after=first[-1].job_id)
    assert [r.job_id for r in second] == newest_first[3:6]
    assert [r.job_id for r in store.page(3, after=second[-1].job_id)] == newest_first[6:]
    assert [r.job_id for r in store.page(10, model_name="b")] == [created[5].job_id, created[3].job_id,
                                                                  created[1].job_id]
    assert [r.job_id for r in store.page(10, status="cancelled")] == [created[0].job_id]
    assert [r.job_id for r in store.page(1, status="pending", model_name="a", after=created[4].job_id)] == [
        created[2].job_id]
    assert store.page(5, model_name="nobody") == []
    with pytest.raises(UnknownCursor):
        store.page(5, after=str(uuid.uuid4()))


def test_redis_lists_records_written_before_its_listing_index(redis_url: str) -> None:
    import redis

    prefix = f"test-{uuid.uuid4().hex}"
    old = RedisJobStore(redis_url, prefix=prefix)
    records = [new_job("m", {}) for _ in range(3)]
    for record in records:
        old.create(record)
    redis.Redis.from_url(redis_url).delete(f"{prefix}:jobs:by_created")  # as a store from before the index
    reopened = RedisJobStore(redis_url, prefix=prefix)
    assert {r.job_id for r in reopened.page(10)} == {r.job_id for r in records}


def _train_request(count: int, eval_count: int = 0) -> dict:
    """A /v1/train request as submit_training stores it (TrainRequest.model_dump(mode="json"))."""
    examples = [{"text": f"text {index}", "label": f"l{index % 3}"} for index in range(count)]
    evaluation = [{"text": f"held {index}", "label": f"l{index % 3}"} for index in range(eval_count)]
    return TrainRequest.model_validate({"model_name": "m", "examples": examples,
                                        "eval_examples": evaluation or None}).model_dump(mode="json")


def test_a_jobs_examples_are_kept_apart_from_its_record_and_go_with_it(open_store) -> None:
    store = open_store()
    submitted = _train_request(50, eval_count=6)
    retrain = new_job("m", {**submitted, "retrain": {"strategy": "head", "digest": "d", "set_size": 50}},
                      kind="retrain")
    store.create(retrain)
    store.transition(retrain.job_id, {"pending"}, status="running", attempts=1)

    reopened = open_store()  # as the trainer's process would
    record = reopened.get(retrain.job_id)
    assert record is not None and "examples" not in record.request and "eval_examples" not in record.request
    assert record.request[EXAMPLES_REF] == {"job_id": retrain.job_id, "examples": 50, "eval_examples": 6}
    assert record.request["retrain"]["set_size"] == 50  # the rest of the request stays in the record
    # the trainer gets the request back as submitted, and it validates as one
    assert request_with_examples(reopened, record) == retrain.request
    assert TrainRequest.model_validate(request_with_examples(reopened, record)).model_dump(mode="json") == submitted
    # a listing, and the status changes, carry no examples
    listed = reopened.page(10)
    assert [r.job_id for r in listed] == [retrain.job_id] and "examples" not in listed[0].request
    assert "examples" not in reopened.with_status("running")[0].request
    assert job_view(record) == job_view(retrain.model_copy(update={"status": "running", "attempts": 1}))

    reopened.delete(retrain.job_id)
    assert store.get(retrain.job_id) is None and store.examples(retrain.job_id) is None
    with pytest.raises(MissingExamples):
        request_with_examples(store, record)


def test_expired_records_take_their_examples_along(open_store) -> None:
    store = open_store()
    old, kept = new_job("m", _train_request(5)), new_job("m", _train_request(7))
    for record in (old, kept):
        store.create(record)
        store.transition(record.job_id, {"pending"}, status="completed", finished_at=utc_now())
    store.transition(old.job_id, {"completed"}, finished_at=utc_now() - timedelta(days=40))
    assert expire_finished(store, finished_before=utc_now() - timedelta(days=30)) == 1
    assert store.examples(old.job_id) is None
    assert len((store.examples(kept.job_id) or {})["examples"]) == 7


def test_records_without_examples_are_stored_as_they_are(open_store) -> None:
    store = open_store()
    imported = new_job("m", {"model_name": "m", "source": "hub", "examples": [{"text": "t", "label": "a"}]},
                       kind="import")  # an import's request is no training set: never split
    bare = new_job("m", {"model_name": "m"})
    for record in (imported, bare):
        store.create(record)
        got = store.get(record.job_id)
        assert got is not None and got.request == record.request and store.examples(record.job_id) is None
        assert request_with_examples(store, got) == record.request


def test_records_written_with_their_examples_inline_still_train(open_store, tmp_path: Path) -> None:
    """A record from before the examples were kept apart: read, listed, trained on as it is."""
    store = open_store()
    old = new_job("m", _train_request(20))
    if isinstance(store, SqliteJobStore):
        with sqlite3.connect(tmp_path / "jobs.db") as db:
            db.execute("INSERT INTO jobs (job_id, status, created_at, record) VALUES (?, ?, ?, ?)",
                       (old.job_id, old.status, old.created_at.isoformat(), old.model_dump_json()))
    else:
        assert isinstance(store, RedisJobStore)
        raw = store._redis  # written as a store from before would: the record alone, examples inline
        raw.set(store._key(old.job_id), old.model_dump_json())
        raw.sadd(store._status_key(old.status), old.job_id)
        raw.zadd(store._by_created, {old.job_id: old.created_at.timestamp()})
    reopened = open_store()
    record = reopened.get(old.job_id)
    assert record is not None and len(record.request["examples"]) == 20
    assert request_with_examples(reopened, record) == old.request
    assert [r.job_id for r in reopened.page(10)] == [old.job_id]
    reopened.transition(old.job_id, {"pending"}, status="running")
    assert (reopened.get(old.job_id) or record).request == old.request  # a status change keeps them
    reopened.delete(old.job_id)
    assert reopened.get(old.job_id) is None
