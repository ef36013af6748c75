"""The prediction log on both real backends (SQLite file, redis-server), and the gateway's sampler
that writes it off the request path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from fewshot.api.prediction_sampling import PredictionSampler
from trainers.prediction_log import PredictionLog, RedisPredictionLog, SqlitePredictionLog


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
