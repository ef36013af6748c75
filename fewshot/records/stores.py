"""The shared stores, opened when this module is imported: the job records, the example sets and
the prediction log, as SQLite files under MODEL_PATH, or in Redis when REDIS_URL is set; uploaded
files and batch records, as files under MODEL_PATH in every mode (shared like the model store). The
gateway and the trainers import them from here; the trainers' Huey queue (trainers/queue.py)
opens beside them, in the same directory.
"""

from __future__ import annotations

from fewshot.records.batches import BatchStore
from fewshot.records.examples import open_example_store
from fewshot.records.files import FileStore
from fewshot.records.jobs import open_job_store
from fewshot.records.prediction_log import open_prediction_log
from fewshot.settings import get_settings

settings = get_settings()
if not settings.redis_url:  # the one place that creates it: the SQLite queue, job records, consumer lock
    settings.queue_dir.mkdir(parents=True, exist_ok=True)
jobs = open_job_store(settings)
example_sets = open_example_store(settings)
prediction_log = open_prediction_log(settings)
files = FileStore(settings.files_dir, settings.batch_file_days)
batches = BatchStore(settings.batches_dir, settings.batch_claim_seconds)
