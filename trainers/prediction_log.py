"""Texts that a model was asked to predict, sampled from real traffic, to choose what to label next.

Off by default (PREDICTION_LOG_SAMPLE=0). When on, the gateway keeps a sampled share of the texts
sent to /v1/predict, per model: the text and when it was last seen, nothing else (no answer, no
key, no client address). Kept beside the job records and example sets (a table of the same SQLite
file, or a sorted set per model in Redis), each text once, at most PREDICTION_LOG_MAX_TEXTS per model
(the oldest dropped first) and for PREDICTION_LOG_DAYS; deleted with the model, or on its own
with DELETE /v1/models/{name}/prediction-log. POST /v1/models/{name}/suggest with `logged: true`
chooses from them.

No HTTP here (an import contract).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from fewshot.settings import Settings
from trainers.sqlite_file import SqliteFile


class PredictionLog(Protocol):
    def add(self, model: str, texts: Sequence[str], max_texts: int, now: float | None = None) -> None:
        """Log `texts` as seen now (a text already logged moves to the newest); keep the newest `max_texts`."""
        ...

    def texts(self, model: str, limit: int) -> list[str]:
        """The model's logged texts, newest first."""
        ...

    def count(self, model: str) -> int: ...

    def drop(self, model: str) -> int:
        """Forget the model's texts; how many there were."""
        ...

    def expire(self, seen_before: float) -> int:
        """Forget every text last seen before this time (seconds since the epoch), of every model."""
        ...


class SqlitePredictionLog(SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "CREATE TABLE IF NOT EXISTS prediction_log (model TEXT NOT NULL, text TEXT NOT NULL, "
            "seen_at REAL NOT NULL, PRIMARY KEY (model, text))",
            "CREATE INDEX IF NOT EXISTS prediction_log_seen ON prediction_log (model, seen_at)")

    def add(self, model: str, texts: Sequence[str], max_texts: int, now: float | None = None) -> None:
        seen_at = time.time() if now is None else now
        with self._write() as db:
            db.executemany("INSERT INTO prediction_log (model, text, seen_at) VALUES (?, ?, ?) "
                           "ON CONFLICT (model, text) DO UPDATE SET seen_at = excluded.seen_at",
                           [(model, text, seen_at + n * 1e-6) for n, text in enumerate(texts)])
            db.execute("DELETE FROM prediction_log WHERE model = ? AND seen_at < (SELECT seen_at FROM prediction_log "
                       "WHERE model = ? ORDER BY seen_at DESC LIMIT 1 OFFSET ?)", (model, model, max_texts - 1))

    def texts(self, model: str, limit: int) -> list[str]:
        with self._connection() as db:
            rows = db.execute("SELECT text FROM prediction_log WHERE model = ? ORDER BY seen_at DESC LIMIT ?",
                              (model, limit)).fetchall()
        return [text for (text,) in rows]

    def count(self, model: str) -> int:
        with self._connection() as db:
            return db.execute("SELECT COUNT(*) FROM prediction_log WHERE model = ?", (model,)).fetchone()[0]

    def drop(self, model: str) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM prediction_log WHERE model = ?", (model,)).rowcount

    def expire(self, seen_before: float) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM prediction_log WHERE seen_at < ?", (seen_before,)).rowcount


class RedisPredictionLog:
    """A sorted set per model: texts scored by when they were last seen; a set of the models logged."""

    def __init__(self, url: str, prefix: str = "fewshot") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def _key(self, model: str) -> str:
        return f"{self._prefix}:prediction-log:{model}"

    def add(self, model: str, texts: Sequence[str], max_texts: int, now: float | None = None) -> None:
        if not texts:
            return
        seen_at = time.time() if now is None else now
        with self._redis.pipeline() as pipe:  # MULTI/EXEC: one change
            pipe.zadd(self._key(model), {text: seen_at + n * 1e-6 for n, text in enumerate(texts)})
            pipe.zremrangebyrank(self._key(model), 0, -max_texts - 1)
            pipe.sadd(f"{self._prefix}:prediction-log-models", model)
            pipe.execute()

    def texts(self, model: str, limit: int) -> list[str]:
        return [raw.decode() for raw in self._redis.zrevrange(self._key(model), 0, limit - 1)]

    def count(self, model: str) -> int:
        return int(self._redis.zcard(self._key(model)))

    def drop(self, model: str) -> int:
        with self._redis.pipeline() as pipe:
            pipe.zcard(self._key(model))
            pipe.delete(self._key(model))
            pipe.srem(f"{self._prefix}:prediction-log-models", model)
            held, _, _ = pipe.execute()
        return int(held)

    def expire(self, seen_before: float) -> int:
        models = [raw.decode() for raw in self._redis.smembers(f"{self._prefix}:prediction-log-models")]
        return sum(int(self._redis.zremrangebyscore(self._key(model), "-inf", f"({seen_before}"))
                   for model in models)


def open_prediction_log(settings: Settings) -> PredictionLog:
    """Redis when REDIS_URL is set, else the job records' SQLite file."""
    if settings.redis_url:
        return RedisPredictionLog(settings.redis_url)
    return SqlitePredictionLog(settings.jobs_file)
