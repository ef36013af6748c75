"""The batch tasks' Huey queue (SQLite under MODEL_PATH, or Redis when REDIS_URL is set), apart from
the training queue: a long batch never holds up a training job, nor a training job a batch."""

from __future__ import annotations

from huey import Huey, RedisHuey, SqliteHuey

from fewshot.records.stores import batches, files, settings
from fewshot.settings import Settings

__all__ = ["QUEUE_NAME", "batches", "files", "huey", "make_huey", "settings"]

QUEUE_NAME = "fewshot-batches"


def make_huey(settings: Settings) -> Huey:
    # Task results are not kept: outcomes live in the batch records.
    if settings.redis_url:
        return RedisHuey(QUEUE_NAME, url=settings.redis_url, results=False)
    return SqliteHuey(QUEUE_NAME, filename=str(settings.batch_queue_file), results=False)


huey = make_huey(settings)
