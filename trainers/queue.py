"""The Huey instance and the job store: SQLite files under MODEL_PATH, or Redis when REDIS_URL is set."""

from __future__ import annotations

from huey import Huey, RedisHuey, SqliteHuey

from fewshot.settings import Settings, get_settings
from trainers.jobs import JobStore, open_job_store

QUEUE_NAME = "fewshot-training"


def make_huey(settings: Settings) -> Huey:
    # Task results are not kept: outcomes live in the job records.
    if settings.redis_url:
        return RedisHuey(QUEUE_NAME, url=settings.redis_url, results=False)
    settings.queue_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(settings.queue_file), results=False)


def make_job_store(settings: Settings) -> JobStore:
    if not settings.redis_url:
        settings.queue_dir.mkdir(parents=True, exist_ok=True)
    return open_job_store(settings.jobs_file, settings.redis_url)


huey = make_huey(get_settings())
jobs = make_job_store(get_settings())
