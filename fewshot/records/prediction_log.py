"""Texts that a model was asked to predict, sampled from real traffic, to choose what to label next.

Off by default (PREDICTION_LOG_SAMPLE=0). When on, the gateway keeps a sampled share of the texts
sent to /v1/predict, per model: the text and when it was last seen, nothing else (no answer, no
key, no client address). Kept beside the job records and example sets (a table of the same SQLite
file, or a sorted set per model in Redis), each text once, at most PREDICTION_LOG_MAX_TEXTS per model
(the oldest dropped first) and for PREDICTION_LOG_DAYS; deleted with the model, or on its own
with DELETE /v1/models/{name}/prediction-log. POST /v1/models/{name}/suggest with `logged: true`
chooses from them.

Forgotten for good. The gateway writes its samples about a second after it takes them (a queue,
fewshot/api/prediction_sampling.py), in every gateway worker and on every host: a sample taken just
before a drop would land after it. So `drop` also records when the model was forgotten, in the store
itself, and `add` refuses every text seen at or before that mark (each sample carries the time it
was taken), whichever process writes it; a mark is kept as long as a text would be.

Expiry is the log's own: every process that opens it (open_prediction_log) forgets texts older than
PREDICTION_LOG_DAYS at once and then every EXPIRE_EVERY_SECONDS, whether or not it samples (a log
kept, then sampling turned off, still expires).

No HTTP here (an import contract).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from fewshot.records.sqlite_file import SqliteFile
from fewshot.settings import Settings

logger = logging.getLogger("fewshot.prediction_log")

EXPIRE_EVERY_SECONDS = 60.0
ORDER_STEP = 1e-6
"""Added per position to the times of one `add` (one `now` for all): the last text of a call is the newest."""


class PredictionLog(Protocol):
    def add(self, model: str, texts: Sequence[str], max_texts: int,
            now: float | Sequence[float] | None = None) -> int:
        """Log `texts` as seen at `now` (seconds since the epoch: one time for all, or one per text; default
        now); a text already logged keeps the later time; keep the newest `max_texts`. A text seen at or
        before the model was last dropped is not logged. How many were logged."""
        ...

    def texts(self, model: str, limit: int) -> list[str]:
        """The model's logged texts, newest first."""
        ...

    def count(self, model: str) -> int: ...

    def drop(self, model: str) -> int:
        """Forget the model's texts, and any seen until now that is written later; how many there were."""
        ...

    def expire(self, seen_before: float) -> int:
        """Forget every text last seen before this time (seconds since the epoch), of every model, and the
        drop marks older than it; how many texts."""
        ...

    def keep_expiring(self, retention_seconds: float, every: float = EXPIRE_EVERY_SECONDS) -> None:
        """In this process, expire texts older than `retention_seconds` now and then every `every` seconds."""
        ...

    def stop_expiring(self) -> None: ...


def seen_times(texts: Sequence[str], now: float | Sequence[float] | None) -> list[float]:
    if now is None or isinstance(now, int | float):
        at = time.time() if now is None else float(now)
        return [at] * len(texts)
    if len(now) != len(texts):
        raise ValueError(f"{len(now)} times for {len(texts)} texts")
    return [float(at) for at in now]


class ExpiresItself:
    """The thread that keeps a log's texts within their retention in one process."""

    _stop_expiring: threading.Event | None = None

    def expire(self, seen_before: float) -> int:
        raise NotImplementedError

    def keep_expiring(self, retention_seconds: float, every: float = EXPIRE_EVERY_SECONDS) -> None:
        self.stop_expiring()
        stop = self._stop_expiring = threading.Event()

        def run() -> None:
            while True:
                try:
                    if forgotten := self.expire(time.time() - retention_seconds):
                        logger.info("the prediction log forgot %d texts last seen more than %g days ago", forgotten,
                                    retention_seconds / 86400)
                except Exception as error:  # the store is down for a moment: the next pass expires them
                    logger.warning("the prediction log could not expire old texts now (%s); it tries again in %g s",
                                   error, every)
                if stop.wait(every):
                    return

        threading.Thread(target=run, name="prediction-log-expiry", daemon=True).start()

    def stop_expiring(self) -> None:
        if self._stop_expiring is not None:
            self._stop_expiring.set()


class SqlitePredictionLog(ExpiresItself, SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "CREATE TABLE IF NOT EXISTS prediction_log (model TEXT NOT NULL, text TEXT NOT NULL, "
            "seen_at REAL NOT NULL, PRIMARY KEY (model, text))",
            "CREATE INDEX IF NOT EXISTS prediction_log_seen ON prediction_log (model, seen_at)",
            # expire's DELETE names no model: without this index it scans every row, holding the write lock
            # (10 models × 10,000 texts: 10.8 ms, with it 0.01 ms), in every process every minute
            "CREATE INDEX IF NOT EXISTS prediction_log_seen_at ON prediction_log (seen_at)",
            "CREATE TABLE IF NOT EXISTS prediction_log_forgotten (model TEXT PRIMARY KEY, "
            "forgotten_at REAL NOT NULL)")

    def add(self, model: str, texts: Sequence[str], max_texts: int,
            now: float | Sequence[float] | None = None) -> int:
        seen = seen_times(texts, now)
        with self._write() as db:  # the mark and the rows in one transaction: a drop is wholly before or after
            mark = db.execute("SELECT forgotten_at FROM prediction_log_forgotten WHERE model = ?",
                              (model,)).fetchone()
            rows = [(model, text, at + n * ORDER_STEP) for n, (text, at) in enumerate(zip(texts, seen, strict=True))
                    if mark is None or at > mark[0]]
            if rows:
                db.executemany("INSERT INTO prediction_log (model, text, seen_at) VALUES (?, ?, ?) "
                               "ON CONFLICT (model, text) DO UPDATE SET seen_at = MAX(seen_at, excluded.seen_at)",
                               rows)
                db.execute("DELETE FROM prediction_log WHERE model = ? AND seen_at < (SELECT seen_at "
                           "FROM prediction_log WHERE model = ? ORDER BY seen_at DESC LIMIT 1 OFFSET ?)",
                           (model, model, max_texts - 1))
        return len(rows)

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
            db.execute("INSERT INTO prediction_log_forgotten (model, forgotten_at) VALUES (?, ?) ON CONFLICT (model) "
                       "DO UPDATE SET forgotten_at = MAX(forgotten_at, excluded.forgotten_at)", (model, time.time()))
            return db.execute("DELETE FROM prediction_log WHERE model = ?", (model,)).rowcount

    def expire(self, seen_before: float) -> int:
        with self._write() as db:
            db.execute("DELETE FROM prediction_log_forgotten WHERE forgotten_at < ?", (seen_before,))
            return db.execute("DELETE FROM prediction_log WHERE seen_at < ?", (seen_before,)).rowcount


# Lua, each run whole: no drop falls between reading a model's mark and adding its texts, and no mark set
# meanwhile is removed as old. KEYS: the model's sorted set, the set of logged models, the hash of drop marks.
# ARGV: the model, max_texts, then for each text: when it was seen, its score (that time plus its place, computed
# in Python: no Lua number formatting between), the text.
ADD_SCRIPT = """
local mark = redis.call('HGET', KEYS[3], ARGV[1])
mark = mark and tonumber(mark)
local logged = 0
for i = 3, #ARGV, 3 do
    if not mark or tonumber(ARGV[i]) > mark then
        redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i + 2])
        logged = logged + 1
    end
end
if logged > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
    redis.call('SADD', KEYS[2], ARGV[1])
end
return logged
"""

# ARGV: the model, now.
DROP_SCRIPT = """
local mark = redis.call('HGET', KEYS[3], ARGV[1])
if not mark or tonumber(mark) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
local held = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return held
"""

# KEYS: the set of logged models, the hash of drop marks, the prefix of the models' sorted sets; ARGV: seen_before.
EXPIRE_SCRIPT = """
local marks = redis.call('HGETALL', KEYS[2])
for i = 1, #marks, 2 do
    if tonumber(marks[i + 1]) < tonumber(ARGV[1]) then
        redis.call('HDEL', KEYS[2], marks[i])
    end
end
local forgotten = 0
for _, model in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    forgotten = forgotten + redis.call('ZREMRANGEBYSCORE', KEYS[3] .. model, '-inf', '(' .. ARGV[1])
end
return forgotten
"""


class RedisPredictionLog(ExpiresItself):
    """A sorted set per model: texts scored by when they were last seen; a set of the models logged; a hash
    of when each dropped model was forgotten."""

    def __init__(self, url: str, prefix: str = "fewshot") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix
        self._add = self._redis.register_script(ADD_SCRIPT)
        self._drop = self._redis.register_script(DROP_SCRIPT)
        self._expire = self._redis.register_script(EXPIRE_SCRIPT)

    def _keys(self, model: str) -> list[str]:
        return [self._key(model), f"{self._prefix}:prediction-log-models", f"{self._prefix}:prediction-log-forgotten"]

    def _key(self, model: str) -> str:
        return f"{self._prefix}:prediction-log:{model}"

    def add(self, model: str, texts: Sequence[str], max_texts: int,
            now: float | Sequence[float] | None = None) -> int:
        if not texts:
            return 0
        each = [value for n, (at, text) in enumerate(zip(seen_times(texts, now), texts, strict=True))
                for value in (repr(at), repr(at + n * ORDER_STEP), text)]
        return int(self._add(keys=self._keys(model), args=[model, max_texts, *each]))

    def texts(self, model: str, limit: int) -> list[str]:
        return [raw.decode() for raw in self._redis.zrevrange(self._key(model), 0, limit - 1)]

    def count(self, model: str) -> int:
        return int(self._redis.zcard(self._key(model)))

    def drop(self, model: str) -> int:
        return int(self._drop(keys=self._keys(model), args=[model, repr(time.time())]))

    def expire(self, seen_before: float) -> int:
        keys = [f"{self._prefix}:prediction-log-models", f"{self._prefix}:prediction-log-forgotten",
                self._key("")]
        return int(self._expire(keys=keys, args=[repr(seen_before)]))


def open_prediction_log(settings: Settings) -> PredictionLog:
    """Redis when REDIS_URL is set, else the job records' SQLite file; expiring in this process from now on."""
    log: PredictionLog = RedisPredictionLog(settings.redis_url) if settings.redis_url \
        else SqlitePredictionLog(settings.jobs_file)
    log.keep_expiring(settings.prediction_log_days * 86400)
    return log
