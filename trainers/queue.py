"""The Huey queue: a SQLite file under MODEL_PATH, or Redis when REDIS_URL is set.

Opened when this module is imported (Huey registers tasks on its instance at import), after the
shared stores (fewshot/records/stores.py), whose import creates the directory the SQLite queue is in.
`jobs`, `example_sets` and `prediction_log` are those stores, for the trainers' code.
"""

from __future__ import annotations

from huey import Huey, RedisHuey, SqliteHuey

from fewshot.records.stores import example_sets, jobs, prediction_log, settings
from fewshot.settings import Settings

__all__ = ["QUEUE_NAME", "example_sets", "huey", "jobs", "make_huey", "prediction_log", "settings"]

QUEUE_NAME = "fewshot-training"


def make_huey(settings: Settings) -> Huey:
    # Task results are not kept: outcomes live in the job records.
    if settings.redis_url:
        return RedisHuey(QUEUE_NAME, url=settings.redis_url, results=False)
    return SqliteHuey(QUEUE_NAME, filename=str(settings.queue_file), results=False)


huey = make_huey(settings)
