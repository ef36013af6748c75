"""The Huey queue, the job store, the example sets and the prediction log: SQLite files under
MODEL_PATH, or Redis when REDIS_URL is set.

Both are opened when this module is imported (Huey registers tasks on its instance at import).
"""

from __future__ import annotations

from huey import Huey, RedisHuey, SqliteHuey

from fewshot.settings import Settings, get_settings
from trainers.examples import open_example_store
from trainers.jobs import open_job_store
from trainers.prediction_log import open_prediction_log

QUEUE_NAME = "fewshot-training"


def make_huey(settings: Settings) -> Huey:
    # Task results are not kept: outcomes live in the job records.
    if settings.redis_url:
        return RedisHuey(QUEUE_NAME, url=settings.redis_url, results=False)
    return SqliteHuey(QUEUE_NAME, filename=str(settings.queue_file), results=False)


settings = get_settings()
if not settings.redis_url:  # the one place that creates it: the SQLite queue, job records, consumer lock
    settings.queue_dir.mkdir(parents=True, exist_ok=True)
huey = make_huey(settings)
jobs = open_job_store(settings)
example_sets = open_example_store(settings)
prediction_log = open_prediction_log(settings)
