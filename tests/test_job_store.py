"""Job records on the real SQLite backend: compare-and-set transitions, persistence across opens."""

from __future__ import annotations

from pathlib import Path

from fewshot.schemas import utc_now
from trainers.jobs import SqliteJobStore, new_job


def test_records_survive_reopening_and_transitions_are_compare_and_set(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    record = new_job("m", {"model_name": "m"})
    store.create(record)
    running = store.transition(record.job_id, {"pending"}, status="running", started_at=utc_now(), attempts=1)
    assert running is not None and running.status == "running"
    assert store.transition(record.job_id, {"pending"}, status="running") is None  # already running
    store.transition(record.job_id, {"running"}, status="completed", model_version="v1")
    # A late "interrupted" must not overwrite the completed state.
    assert store.transition(record.job_id, {"running"}, status="pending") is None

    reopened = SqliteJobStore(tmp_path / "jobs.db")
    final = reopened.get(record.job_id)
    assert final is not None
    assert (final.status, final.model_version, final.attempts) == ("completed", "v1", 1)
    assert final.request == {"model_name": "m"}
    assert set(final.view().model_dump()) == {"job_id", "status", "model_name", "created_at", "started_at",
                                              "finished_at", "error", "model_version", "attempts", "note"}


def test_with_status_lists_oldest_first(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    first, second = new_job("a", {}), new_job("b", {})
    store.create(first)
    store.create(second)
    store.transition(second.job_id, {"pending"}, status="running")
    assert [r.job_id for r in store.with_status("pending")] == [first.job_id]
    assert [r.job_id for r in store.with_status("running")] == [second.job_id]
    assert store.get("missing") is None
    assert store.transition("missing", {"pending"}, status="running") is None


def test_finished_records_expire_after_their_retention_others_stay(tmp_path: Path) -> None:
    from datetime import timedelta

    from trainers.jobs import expire_finished

    store = SqliteJobStore(tmp_path / "jobs.db")
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
