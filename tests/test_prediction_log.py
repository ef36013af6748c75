"""The prediction log on both real backends (SQLite file, redis-server), and the gateway's sampler
that writes it off the request path: a drop is for good (a sample taken before it and written after
is refused by the store), and the log expires whether or not anything samples."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from fewshot.api.prediction_sampling import PredictionSampler
from fewshot.records.prediction_log import PredictionLog, RedisPredictionLog, SqlitePredictionLog, open_prediction_log
from fewshot.settings import load_settings


@pytest.fixture(params=["sqlite", "redis"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], PredictionLog]:
    if request.param == "sqlite":
        return lambda: SqlitePredictionLog(tmp_path / "jobs.db")
    url = request.getfixturevalue("redis_url")
    prefix = f"test-{uuid.uuid4().hex}"
    return lambda: RedisPredictionLog(url, prefix=prefix)


def test_texts_are_kept_once_newest_first_and_bounded_per_model(open_log) -> None:
    log = open_log()
    log.add("intents", ["a", "b", "c"], max_texts=10, now=100.0)
    log.add("intents", ["a"], max_texts=10, now=200.0)  # seen again: the newest
    log.add("other", ["z"], max_texts=10, now=150.0)
    assert open_log().texts("intents", 10) == ["a", "c", "b"]
    assert open_log().texts("intents", 2) == ["a", "c"]
    assert (log.count("intents"), log.count("other"), log.count("nobody")) == (3, 1, 0)
    log.add("intents", ["d", "e"], max_texts=3, now=300.0)  # the oldest go first
    assert log.texts("intents", 10) == ["e", "d", "a"]
    assert log.texts("other", 10) == ["z"]


def test_old_texts_expire_and_a_model_is_forgotten_on_its_own(open_log) -> None:
    log = open_log()
    log.add("intents", ["old", "new"], max_texts=10, now=100.0)
    log.add("intents", ["new"], max_texts=10, now=500.0)
    log.add("other", ["older"], max_texts=10, now=50.0)
    assert log.expire(seen_before=200.0) == 2
    assert log.texts("intents", 10) == ["new"] and log.texts("other", 10) == []
    assert log.drop("intents") == 1 and log.count("intents") == 0 and log.drop("intents") == 0


def test_the_sampler_keeps_its_share_under_the_models_name_and_drops_when_full(tmp_path: Path) -> None:
    log = SqlitePredictionLog(tmp_path / "jobs.db")
    every = PredictionSampler(log, share=1.0, max_texts=100, retention_days=7)
    every.offer("intents:abc123", ["x", "y", "x"])
    every.stop()
    assert sorted(log.texts("intents", 10)) == ["x", "y"]
    none = PredictionSampler(log, share=0.0, max_texts=100, retention_days=7)
    none.offer("quiet", ["a"] * 50)
    none.stop()
    assert log.count("quiet") == 0
    half = PredictionSampler(log, share=0.5, max_texts=10_000, retention_days=7)
    half.offer("half", [f"t{n}" for n in range(2000)])
    half.stop()
    assert 800 < log.count("half") < 1200
    dropped: list[int] = []
    full = PredictionSampler(log, share=1.0, max_texts=100, retention_days=7, on_dropped=lambda: dropped.append(1))
    full.stop()  # no writer any more: the queue fills
    full.offer("busy", [f"t{n}" for n in range(10_010)])
    assert len(dropped) == 10


def test_a_text_keeps_its_latest_time_whatever_order_the_writes_come_in(open_log) -> None:
    log = open_log()
    log.add("intents", ["a"], max_texts=10, now=200.0)
    # another gateway worker's queue, written later, with samples it took earlier: "a" stays the newest
    assert log.add("intents", ["a", "b"], max_texts=10, now=[100.0, 150.0]) == 2
    assert log.texts("intents", 10) == ["a", "b"]
    with pytest.raises(ValueError, match="2 times for 1 texts"):
        log.add("intents", ["c"], max_texts=10, now=[1.0, 2.0])


def test_a_sample_taken_before_a_drop_is_refused_however_late_it_is_written(open_log) -> None:
    writer, deleter = open_log(), open_log()  # two processes: a gateway worker's queue, the delete route
    taken = time.time()
    writer.add("intents", ["kept before"], max_texts=10, now=taken - 5)
    writer.add("other", ["not dropped"], max_texts=10, now=taken)
    assert deleter.drop("intents") == 1
    # written after the drop, taken before it (a queue flushes about a second later): not logged. (Both
    # times at or before `taken`: the two adds and the drop above take under a millisecond on an idle
    # machine, so `taken + 0.001` could fall after the drop: it did, once, in CI with Redis.)
    assert writer.add("intents", ["in the queue", "also queued"], max_texts=10, now=[taken - 0.001, taken]) == 0
    assert writer.count("intents") == 0
    assert writer.add("intents", ["taken after"], max_texts=10) == 1  # the model is logged again from now on
    assert writer.add("other", ["still logged"], max_texts=10, now=taken) == 1  # another model is not affected
    assert writer.texts("intents", 10) == ["taken after"] and writer.count("other") == 2
    # a second drop moves the mark on; one from a clock behind never moves it back
    assert deleter.drop("intents") == 1 and writer.add("intents", ["late"], max_texts=10, now=time.time() - 1) == 0


def test_marks_are_kept_as_long_as_texts(open_log) -> None:
    log = open_log()
    taken = time.time()  # before the drop, however long the machine then takes (was `now - 1` after it)
    log.drop("intents")
    assert log.add("intents", ["taken before the drop"], max_texts=10, now=taken) == 0
    log.expire(seen_before=time.time() - 3600)  # the mark is younger than the retention: kept
    assert log.add("intents", ["taken before the drop"], max_texts=10, now=taken) == 0
    log.expire(seen_before=time.time() + 1)  # older than any text would be kept: gone with them
    assert log.add("intents", ["taken before the drop"], max_texts=10, now=taken) == 1


def test_the_samplers_queue_does_not_outlive_a_drop(open_log) -> None:
    log, deleter = open_log(), open_log()
    sampler = PredictionSampler(log, share=1.0, max_texts=100)
    sampler.stop()  # no writer thread: what is queued is written by the flush below, after the drop
    sampler.offer("intents:abc123", ["queued before the delete", "also before"])
    assert deleter.drop("intents") == 0
    sampler.offer("intents", ["sent after the delete", "also before"])  # sampled again after: logged
    sampler.flush()
    assert sorted(log.texts("intents", 10)) == ["also before", "sent after the delete"]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_log_expires_with_sampling_off(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    monkeypatch.setenv("PREDICTION_LOG_SAMPLE", "0")  # a log kept while sampling was on, then turned off
    monkeypatch.setenv("PREDICTION_LOG_DAYS", "1")
    if backend == "redis":
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("fresh_redis_database")())
    settings = load_settings()
    settings.queue_dir.mkdir(parents=True)
    kept_earlier = (RedisPredictionLog(settings.redis_url) if settings.redis_url
                    else SqlitePredictionLog(settings.jobs_file))
    kept_earlier.add("intents", ["two days old"], max_texts=10, now=time.time() - 2 * 86400)
    kept_earlier.add("intents", ["an hour old"], max_texts=10, now=time.time() - 3600)
    log = open_prediction_log(settings)  # what every process does at start (fewshot/records/stores.py)
    try:
        assert wait_for(lambda: log.texts("intents", 10) == ["an hour old"])  # at once: no sampler, no read needed
    finally:
        log.stop_expiring()
    log.keep_expiring(retention_seconds=86400, every=0.05)  # and from then on, not only at start
    try:
        kept_earlier.add("intents", ["aged while running"], max_texts=10, now=time.time() - 86400 - 1)
        assert wait_for(lambda: log.texts("intents", 10) == ["an hour old"])
    finally:
        log.stop_expiring()


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> bool:
    """Until `condition` holds (True) or `seconds` pass (False): a generous bound for a busy machine, met at
    once where the feature works."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
