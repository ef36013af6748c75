"""End to end, several machines: batch workers sharing a Redis queue and MODEL_PATH take shards of one
batch between them, and the results hold every row once."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import pytest

from harness.fixtures import BASE_MODEL
from harness.live_server import LiveServer, wait_for_job

pytestmark = pytest.mark.e2e

SHARD_TEXTS = 100
ROWS = 20 * SHARD_TEXTS


@pytest.fixture(scope="module")
def server(live_server_factory, fresh_redis_database) -> LiveServer:
    return live_server_factory("batches-redis", REDIS_URL=fresh_redis_database(), BATCH_SHARD_TEXTS=str(SHARD_TEXTS),
                               BATCH_CHUNK_TEXTS="10")


def test_two_batch_workers_share_the_shards_of_one_batch(server: LiveServer, trainer_factory,
                                                         train_examples: list[dict]) -> None:
    http = server.client()
    job = http.post("/v1/train", json={"model_name": "intents", "base_model": BASE_MODEL, "examples": train_examples,
                                       "strategy": "head"}).json()
    assert wait_for_job(http, job["job_id"], {"completed", "failed"})["status"] == "completed"
    other = trainer_factory(server, "second-batch-worker", module="batches.consumer").wait_until_consuming()
    table = "id,text\n" + "".join(f"r{i},{train_examples[i % len(train_examples)]['text']}\n" for i in range(ROWS))
    uploaded = http.post("/v1/files", files={"file": ("rows.csv", table.encode())}, data={"purpose": "batch"})
    file_id = uploaded.json()["id"]
    batch = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/predict",
                                           "model_name": "intents"}).json()
    deadline = time.monotonic() + 600
    while batch["status"] not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = http.get(f"/v1/batches/{batch['id']}").json()
    assert batch["status"] == "completed", batch
    rows = list(csv.DictReader(io.StringIO(http.get(f"/v1/files/{batch['output_file_id']}/content").text)))
    assert sorted(row["id"] for row in rows) == sorted(f"r{i}" for i in range(ROWS))
    done = (server.model_path / "batches").glob("*/shard-*.done")
    workers = {json.loads(path.read_text())["worker"] for path in done}
    assert len(workers) == 2 and any(worker.endswith(f":{other.pid}") for worker in workers), workers


def test_results_are_downloadable_through_the_openai_shape(server: LiveServer) -> None:
    listed = httpx.get(f"{server.url}/v1/files", params={"purpose": "batch_output"}).json()
    assert listed["object"] == "list" and listed["data"][0]["filename"] == "rows_results.csv"
