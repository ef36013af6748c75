"""End to end: batch jobs over files against a live server — the official `openai` client's files and
batches, plain tables (CSV, JSONL, Parquet), and nothing lost or doubled when the batch worker is
killed mid-shard, the batch cancelled, or the whole server restarted.

Every answer in a results file is compared with what the online route answers for the same body.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.fixtures import BASE_MODEL
from harness.live_server import LiveServer, wait_for_job

pytestmark = pytest.mark.e2e

KEY = "batch-key"
MODEL = "intents"
MAX_FILE_BYTES = 400_000
SHARD_TEXTS = 150
CHUNK_TEXTS = 10
TEXTS = ["My card has not arrived yet", "How do I top up by bank transfer?", "what's the euro exchange rate",
         "I was charged twice for one purchase", "can I get a virtual card"]


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("batches", API_KEY=KEY, MAX_FILE_BYTES=str(MAX_FILE_BYTES),
                               BATCH_SHARD_TEXTS=str(SHARD_TEXTS), BATCH_CHUNK_TEXTS=str(CHUNK_TEXTS),
                               BATCH_SWEEP_SECONDS="0.5")


@pytest.fixture(scope="module")
def http(server: LiveServer) -> httpx.Client:
    return server.client(**{"X-API-Key": KEY})


@pytest.fixture(scope="module")
def version(http: httpx.Client, train_examples: list[dict]) -> str:
    response = http.post("/v1/train", json={"model_name": MODEL, "base_model": BASE_MODEL,
                                            "examples": train_examples, "strategy": "head"})
    job = wait_for_job(http, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    return job["model_version"]


@pytest.fixture(scope="module")
def client(server: LiveServer, version: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def wait_for_batch(http: httpx.Client, batch_id: str, statuses: set[str], timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = http.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} not {statuses} in {timeout}s: {batch}")


def upload(http: httpx.Client, name: str, content: bytes) -> str:
    response = http.post("/v1/files", files={"file": (name, content)}, data={"purpose": "batch"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def lines_of(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]


def batch_worker(server: LiveServer) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "batches.consumer" in " ".join(process.info["cmdline"] or []) and \
                    process.environ().get("MODEL_PATH") == str(server.model_path):
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError("no batch worker runs")


def table_csv(rows: int, offset: int = 0) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "text"])
    for row in range(rows):
        writer.writerow([f"row-{offset + row}", f"{TEXTS[row % len(TEXTS)]} (#{row})"])
    return out.getvalue().encode()


def test_the_openai_client_runs_a_batch_and_each_answer_is_the_routes(client: openai.OpenAI, http: httpx.Client,
                                                                      version: str) -> None:
    requests = [{"custom_id": f"ok-{i}", "method": "POST", "url": "/v1/predict",
                 "body": {"model_name": MODEL, "texts": TEXTS[i:i + 2], "top_k": 2}} for i in range(4)]
    bad = [
        {"custom_id": "unknown-model", "method": "POST", "url": "/v1/predict",
         "body": {"model_name": "nope", "texts": ["hello"]}},
        {"custom_id": "too-long", "method": "POST", "url": "/v1/predict",
         "body": {"model_name": MODEL, "texts": ["word " * 5000]}},
        {"custom_id": "empty-text", "method": "POST", "url": "/v1/predict",
         "body": {"model_name": MODEL, "texts": [" "]}},
        {"custom_id": "wrong-url", "method": "POST", "url": "/v1/embeddings",
         "body": {"model_name": MODEL, "texts": ["x"]}},
    ]
    content = "\n".join(json.dumps(line) for line in [*requests, *bad]) + "\n{not json\n"
    uploaded = client.files.create(file=("requests.jsonl", content.encode()), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(content.encode())
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/predict", completion_window="24h",
                                  metadata={"team": "support"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"team": "support"}
    wait_for_batch(http, batch.id, {"completed", "failed"})
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (9, 4, 5)
    output = lines_of(client.files.content(batch.output_file_id).content)
    assert sorted(line["custom_id"] for line in output) == [f"ok-{i}" for i in range(4)]
    for line in output:
        body = requests[int(line["custom_id"].split("-")[1])]["body"]
        online = http.post("/v1/predict", json=body).json()
        assert line["response"]["status_code"] == 200 and line["error"] is None
        answered = line["response"]["body"]["predictions"]
        assert [p["label"] for p in answered] == [p["label"] for p in online["predictions"]]
        np.testing.assert_allclose([p["score"] for p in answered], [p["score"] for p in online["predictions"]],
                                   atol=1e-5)
    errors = {line["custom_id"]: line for line in lines_of(client.files.content(batch.error_file_id).content)}
    assert set(errors) == {"unknown-model", "too-long", "empty-text", "wrong-url", None}
    assert errors["unknown-model"]["response"]["status_code"] == 404
    assert "nope" in errors["unknown-model"]["response"]["body"]["error"]
    assert errors["too-long"]["response"]["status_code"] == 400
    assert errors["too-long"]["response"]["body"]["error"].startswith("texts[0]:")
    assert errors["empty-text"]["response"]["body"]["error"].startswith("texts[0]:")
    wrong_url = errors["wrong-url"]["error"]
    assert wrong_url["code"] == "invalid_request" and "url: must be the batch's endpoint" in wrong_url["message"]
    assert errors[None]["error"]["code"] == "invalid_json"
    assert batch.id in [listed.id for listed in client.batches.list(limit=5).data]


def test_an_embeddings_batch_answers_openais_shape(client: openai.OpenAI, http: httpx.Client, version: str) -> None:
    lines = [{"custom_id": "openai", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": MODEL, "input": TEXTS, "encoding_format": "float"}},
             {"custom_id": "ours", "method": "POST", "url": "/v1/embeddings",
              "body": {"model_name": MODEL, "texts": TEXTS[:2]}}]
    uploaded = client.files.create(file=("embed.jsonl", "\n".join(map(json.dumps, lines)).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert wait_for_batch(http, batch.id, {"completed", "failed"})["status"] == "completed"
    output = {line["custom_id"]: line["response"]["body"]
              for line in lines_of(client.files.content(client.batches.retrieve(batch.id).output_file_id).content)}
    online = http.post("/v1/embeddings", json=lines[0]["body"]).json()
    assert output["openai"]["model"] == MODEL and output["openai"]["usage"] == online["usage"]
    np.testing.assert_allclose([item["embedding"] for item in output["openai"]["data"]],
                               [item["embedding"] for item in online["data"]], atol=1e-5)
    assert set(output["ours"]) == {"embeddings", "tokens", "truncated"}


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_a_table_becomes_a_results_table_in_its_format(http: httpx.Client, version: str, suffix: str) -> None:
    rows = [{"id": f"t{i}", "text": f"{TEXTS[i % len(TEXTS)]} please"} for i in range(12)]
    rows.append({"id": "blank", "text": "   "})
    if suffix == "csv":
        content = table_csv(0).decode() + "".join(f"{row['id']},{row['text']}\n" for row in rows)
        data = content.encode()
    elif suffix == "jsonl":
        data = "\n".join(json.dumps(row) for row in rows).encode()
    else:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        data = sink.getvalue()
    file_id = upload(http, f"tickets.{suffix}", data)
    created = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/predict", "model_name": MODEL})
    assert created.status_code == 200, created.text
    batch = wait_for_batch(http, created.json()["id"], {"completed", "failed"})
    assert batch["status"] == "completed" and batch["request_counts"] == {"total": 13, "completed": 12, "failed": 1}
    assert batch["model_versions"] == {MODEL: version} and batch["input_format"] == suffix
    assert http.get(f"/v1/files/{batch['output_file_id']}").json()["filename"] == f"tickets_results.{suffix}"
    content = http.get(f"/v1/files/{batch['output_file_id']}/content").content
    if suffix == "csv":
        results = list(csv.DictReader(io.StringIO(content.decode())))
    elif suffix == "jsonl":
        results = lines_of(content)
    else:
        results = pq.read_table(io.BytesIO(content)).to_pylist()
    online = http.post("/v1/predict", json={"model_name": MODEL, "texts": [row["text"] for row in rows[:12]]}).json()
    assert {row["id"]: row["label"] for row in results} == {
        row["id"]: prediction["label"] for row, prediction in zip(rows, online["predictions"], strict=False)}
    errors = http.get(f"/v1/files/{batch['error_file_id']}/content").content
    assert b"blank" in errors and b"text: must not be empty" in errors


def test_refusals_name_the_field(http: httpx.Client, version: str) -> None:
    too_big = http.post("/v1/files", files={"file": ("big.jsonl", b"x" * (MAX_FILE_BYTES + 1))},
                        data={"purpose": "batch"})
    assert too_big.status_code == 413 and "MAX_FILE_BYTES" in too_big.json()["error"]
    assert http.post("/v1/files", files={"file": ("a.jsonl", b"{}")}, data={"purpose": "fine-tune"}).status_code == 400
    table = upload(http, "texts.csv", table_csv(3))
    cases = [
        ({"input_file_id": "file-" + "0" * 32, "endpoint": "/v1/predict"}, 404, "input_file_id"),
        ({"input_file_id": table, "endpoint": "/v1/chat/completions"}, 400, "endpoint"),
        ({"input_file_id": table, "endpoint": "/v1/predict"}, 400, "model_name"),
        ({"input_file_id": table, "endpoint": "/v1/predict", "model_name": "nope"}, 404, "model_name"),
        ({"input_file_id": table, "endpoint": "/v1/predict", "model_name": MODEL, "completion_window": "1h"}, 400,
         "completion_window"),
    ]
    for body, status, field in cases:
        response = http.post("/v1/batches", json=body)
        assert response.status_code == status and response.json()["error"].startswith(field), (body, response.text)
    no_text = upload(http, "no-text.csv", b"id,body\n1,hello\n")
    created = http.post("/v1/batches", json={"input_file_id": no_text, "endpoint": "/v1/predict", "model_name": MODEL})
    failed = wait_for_batch(http, created.json()["id"], {"failed", "completed"})
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == "missing_column"
    assert http.get("/v1/batches/batch_nope").status_code == 404
    assert http.get("/v1/files/../../etc/passwd").status_code == 404
    deleted = http.delete(f"/v1/files/{table}")
    assert deleted.json() == {"id": table, "object": "file", "deleted": True}
    assert http.get(f"/v1/files/{table}/content").status_code == 404


def run_interrupted(http: httpx.Client, rows: int, interrupt) -> tuple[dict, list[dict]]:
    """A table batch of `rows` rows, `interrupt(batch)` called once some of it is computed and most is not."""
    file_id = upload(http, "many.csv", table_csv(rows))
    created = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/predict", "model_name": MODEL})
    batch_id = created.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        batch = http.get(f"/v1/batches/{batch_id}").json()
        if batch["progress"]["texts_done"] > 0 and batch["status"] == "in_progress":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no progress: {batch}")
    progress = batch["progress"]
    assert progress["shards_done"] < progress["shards_total"] - 1, f"ran too fast to interrupt: {batch}"
    interrupted = interrupt(batch)
    final = wait_for_batch(http, batch_id, {"completed", "cancelled", "failed"})
    results = list(csv.DictReader(io.StringIO(http.get(f"/v1/files/{final['output_file_id']}/content").text)))
    return {**final, "interrupted": interrupted}, results


def test_a_batch_worker_killed_mid_shard_loses_and_doubles_nothing(server: LiveServer, http: httpx.Client,
                                                                  version: str) -> None:
    rows = 20 * SHARD_TEXTS
    shards_dir = server.model_path / "batches"

    def kill(batch: dict) -> list[str]:
        worker = batch_worker(server)
        running = [path.stem for path in (shards_dir / batch["id"]).glob("shard-*.claim")]
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        # the shards it held and had not finished: each must be computed once more, and only those
        return [name for name in running if not (shards_dir / batch["id"] / f"{name}.done").exists()]

    final, results = run_interrupted(http, rows, kill)
    assert final["status"] == "completed"
    ids = [row["id"] for row in results]
    assert len(ids) == rows and set(ids) == {f"row-{i}" for i in range(rows)}  # none lost, none twice
    progress = final["progress"]
    recomputed = progress["shard_attempts"] - progress["shards_total"]
    assert recomputed == len(final["interrupted"]) <= 1, final
    assert final["request_counts"] == {"total": rows, "completed": rows, "failed": 0}


def test_cancel_stops_within_seconds_and_keeps_what_is_done(http: httpx.Client, version: str) -> None:
    rows = 20 * SHARD_TEXTS

    def cancel(batch: dict) -> float:
        response = http.post(f"/v1/batches/{batch['id']}/cancel")
        assert response.status_code == 200 and response.json()["status"] in ("cancelling", "cancelled")
        return time.monotonic()

    final, results = run_interrupted(http, rows, cancel)
    assert final["status"] == "cancelled" and final["cancelled_at"] - final["cancelling_at"] <= 10
    ids = [row["id"] for row in results]
    assert 0 < len(ids) < rows and len(set(ids)) == len(ids)
    assert final["request_counts"]["completed"] == len(ids)
    assert http.post(f"/v1/batches/{final['id']}/cancel").status_code == 409


def test_batches_resume_after_a_restart_of_the_server(server: LiveServer, http: httpx.Client, version: str) -> None:
    rows = 20 * SHARD_TEXTS
    final, results = run_interrupted(http, rows, lambda batch: server.restart())
    assert final["status"] == "completed"
    ids = [row["id"] for row in results]
    assert len(ids) == rows and set(ids) == {f"row-{i}" for i in range(rows)}
    assert final["progress"]["shard_attempts"] - final["progress"]["shards_total"] <= 1


def test_the_batch_worker_yields_the_cpu_to_online_requests(server: LiveServer) -> None:
    worker = batch_worker(server)
    assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE
    assert all(os.sched_getscheduler(thread.id) == os.SCHED_IDLE for thread in worker.threads())


def test_model_path_holds_no_partial_files_after_the_batches(server: LiveServer) -> None:
    assert not list(Path(server.model_path / "files").glob(".*partial"))
