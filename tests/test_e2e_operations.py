"""End to end, embedded mode: what the README promises an operator, each checked over HTTP against
one real `bentoml serve` started as a user types it (no BENTOML_CONFIG, no BENTOML_HOME).

Its settings: finished job records expire after RETENTION_DAYS (JOB_RETENTION_DAYS), and a
request that waited MAX_LATENCY_MS for its batch is refused with 503. Tests run in file order; each
also passes run alone (the model they serve is a fixture).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import time
from collections import Counter
from datetime import timedelta

import httpx
import numpy as np
import psutil
import pytest
from setfit import SetFitModel

from bench.tiny_model import HIDDEN_SIZE, make_static_embedding_model
from fewshot.base_models import resolve_base_model
from fewshot.client import FewshotClient
from fewshot.records.jobs import SqliteJobStore, new_job
from fewshot.timestamps import utc_now
from harness.fixtures import BASE_MODEL, LONG_FINE_TUNING
from harness.live_server import (
    LiveServer,
    listed_versions,
    metric,
    version_directories,
    wait_for_fine_tuning,
    wait_for_job,
    wait_for_log,
)
from trainers.heads import SAFE_HEAD_FILES

pytestmark = pytest.mark.e2e

RETENTION_DAYS = 1
"""Not the default (30): a record is made old by its finished_at, written here, never by waiting."""
MAX_LATENCY_MS = 300
RARE = "top_up_failed"


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("operations", JOB_RETENTION_DAYS=str(RETENTION_DAYS),
                               MAX_LATENCY_MS=str(MAX_LATENCY_MS))


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client()


def train(client: httpx.Client, model: str, examples: list[dict], base_model: str = BASE_MODEL, **options) -> dict:
    response = client.post("/v1/train", json={"model_name": model, "base_model": base_model, "examples": examples,
                                              "strategy": "head", **options})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed", "cancelled"})
    assert job["status"] == "completed", job
    return job


def job_store(server: LiveServer) -> SqliteJobStore:
    return SqliteJobStore(server.model_path / "queue" / "jobs.db")


@pytest.fixture(scope="module")
def plain(client: httpx.Client, train_examples) -> dict:
    """Model "plain" (a head on MiniLM), trained once for the tests that serve it: its job record."""
    return train(client, "plain", train_examples)


def test_plain_bentoml_serve_runs_with_configuration_yaml(server: LiveServer, client: httpx.Client,
                                                          plain: dict) -> None:
    assert "BENTOML_CONFIG" not in server.env  # started as `bentoml serve --port N`
    assert client.post("/v1/predict", json={"model_name": "plain", "texts": ["hello"]}).status_code == 200
    # configuration.yaml's metrics namespace, and no access-log line for the internal inference hop.
    assert metric(client.get("/metrics").text, "fewshot_request_total", endpoint="/v1/predict") >= 1
    assert "Applying user config override from path" in server.log_tail(500)
    inference_calls = [line for line in server.log_path.read_text().splitlines()
                       if "fewshot-inference" in line and "path=/predict" in line]
    assert inference_calls == []


def test_a_body_declared_as_anything_but_json_is_415_and_an_undeclared_one_is_read_as_json(
        client: httpx.Client, plain: dict) -> None:
    body = b'{"model_name": "plain", "texts": ["hello"]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        refused = client.post("/v1/predict", content=body, headers={"content-type": content_type})
        assert refused.status_code == 415, (content_type, refused.text)
        assert refused.json()["error"] == f"Content-Type: must be application/json, got {content_type!r}"
    undeclared = client.build_request("POST", "/v1/predict", content=body)
    undeclared.headers.pop("content-type", None)  # httpx declares none for raw bytes; make sure
    assert "content-type" not in undeclared.headers
    accepted = client.send(undeclared)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["predictions"][0]["text"] == "hello"


def test_a_local_base_model_inside_local_model_dirs_trains_through_the_api(server: LiveServer, client: httpx.Client,
                                                                           train_examples) -> None:
    local = server.model_path / "base-models" / "minilm"  # LOCAL_MODEL_DIRS' default: $MODEL_PATH/base-models
    shutil.copytree(resolve_base_model(BASE_MODEL).location, local)
    response = client.post("/v1/train", json={"model_name": "local", "base_model": str(local),
                                              "examples": train_examples, "strategy": "head"})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    assert client.get("/v1/models/local").json()["base_model"] == str(local)
    predicted = client.post("/v1/predict", json={"model_name": "local", "texts": ["My card is lost!"]})
    assert predicted.json()["predictions"][0]["label"] == "lost_or_stolen_card"
    outside = client.post("/v1/train", json={"model_name": "local", "base_model": str(server.home),
                                             "examples": train_examples})
    assert outside.status_code == 400 and outside.json()["error"].startswith("base_model: local paths must be inside")


def test_a_static_embedding_base_without_config_json_trains_and_serves(server: LiveServer, client: httpx.Client,
                                                                      train_examples) -> None:
    """A sentence-transformer with no transformers config (a static-embedding model): its version used to
    be saved with a config.json SetFit cannot read back, and every prediction was a 500."""
    local = make_static_embedding_model(server.model_path / "base-models" / "static")
    assert not (local / "config.json").exists()
    response = client.post("/v1/train", json={"model_name": "static", "base_model": str(local),
                                              "examples": train_examples, "num_iterations": 1})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    predicted = client.post("/v1/predict", json={"model_name": "static", "texts": ["My card is lost!", "hello"]})
    assert predicted.status_code == 200, predicted.text
    labels = {example["label"] for example in train_examples}
    assert all(prediction["label"] in labels for prediction in predicted.json()["predictions"])
    embedded = client.post("/v1/embeddings", json={"model_name": "static", "texts": ["hello"]})
    assert embedded.status_code == 200 and len(embedded.json()["embeddings"][0]) == HIDDEN_SIZE, embedded.text
    # Imported as SetFit itself saves such a model (with that config.json) beside the download's safe head.
    with FewshotClient(server.url) as fewshot:
        copy = fewshot.download("static", server.model_path / "base-models", extract=True)
    own = server.model_path / "base-models" / "static-saved-by-setfit"
    SetFitModel.from_pretrained(str(copy)).save_pretrained(str(own))
    assert "model_card_data" in json.loads((own / "config.json").read_text())
    for head in SAFE_HEAD_FILES:
        if (copy / head).is_file():
            shutil.copy(copy / head, own / head)
    response = client.post("/v1/models/import", json={"source": str(own), "model_name": "static-copy"})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    again = client.post("/v1/predict", json={"model_name": "static-copy", "texts": ["My card is lost!", "hello"]})
    assert [p["label"] for p in again.json()["predictions"]] == [p["label"] for p in predicted.json()["predictions"]]


def test_balanced_class_weights_still_predict_a_label_with_one_example(client: httpx.Client, train_examples,
                                                                       test_examples) -> None:
    """24 examples of three labels and one of a fourth. Measured on this data: the head without
    class weights predicts the rare label for 0 of its 12 other texts, balanced for 9."""
    rare = [e for e in train_examples if e["label"] == RARE]
    examples = [e for e in train_examples if e["label"] != RARE] + rare[:1]
    train(client, "lopsided", examples)
    texts = [e["text"] for e in rare[1:] + [e for e in test_examples if e["label"] == RARE]]
    predictions = client.post("/v1/predict", json={"model_name": "lopsided", "texts": texts}).json()["predictions"]
    labels = Counter(p["label"] for p in predictions)
    assert labels[RARE] >= len(texts) // 2, labels


def test_texts_longer_than_the_model_maximum_are_truncated_and_served(client: httpx.Client, plain: dict) -> None:
    """all-MiniLM-L6-v2 reads 256 tokens: two texts that differ only after ~600 tokens are the same text
    to a version whose examples were all short (`auto` chose truncate), and the answers say so."""
    head = " ".join(["my card has not arrived and I am still waiting for it"] * 50)  # ~600 tokens, < MAX_TEXT_CHARS
    texts = [head + " one ending", head + " a completely different ending about exchange rates"]
    embedded = client.post("/v1/embeddings", json={"model_name": "plain", "texts": texts})
    assert embedded.status_code == 200, embedded.text
    first, second = embedded.json()["embeddings"]
    assert first == pytest.approx(second, abs=1e-6)  # the endings were cut off
    assert (embedded.json()["tokens"], embedded.json()["truncated"]) == ([256, 256], [True, True])
    predicted = client.post("/v1/predict", json={"model_name": "plain", "texts": [*texts, "where is my card?"]})
    assert predicted.status_code == 200, predicted.text
    predictions = predicted.json()["predictions"]
    assert len({p["label"] for p in predictions[:2]}) == 1
    assert [(p["tokens"], p["truncated"]) for p in predictions] == [(256, True), (256, True), (7, False)]
    view = client.get(f"/v1/models/plain:{plain['model_version']}").json()["long_texts"]
    assert (view["policy"], view["requested"], view["window_tokens"], view["long_examples"]) == \
        ("truncate", "auto", 256, 0)


FIVE_THOUSAND_WORDS = " ".join(f"my card number {n} has not arrived and I am still waiting for it." for n in
                               range(400))  # 5,200 words, ~31,000 characters, ~6,800 MiniLM tokens


def test_a_5000_word_text_is_refused_naming_the_limit_and_the_window(client: httpx.Client, plain: dict) -> None:
    """A version that reads one window takes up to 10,000 characters (8 per token of a 256-token window,
    never below 10,000): a text far past it is a 400 that says why, not a silent cut."""
    for route, body, field in [("/v1/predict", {"model_name": "plain", "texts": ["hi", FIVE_THOUSAND_WORDS]},
                                "texts[1]"),
                               ("/v1/embeddings", {"model": "plain", "input": ["hi", FIVE_THOUSAND_WORDS]},
                                "input[1]")]:
        refused = client.post(route, json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == (
            f"{field}: {len(FIVE_THOUSAND_WORDS):,} characters is more than this version takes: 10,000 (8 characters "
            "per token it reads of a text: its window of 256 tokens, long_texts=truncate; MAX_TEXT_CHARS sets another "
            "limit) (a version trained with long_texts=chunks reads more of a text)")


def test_a_version_trained_to_read_chunks_reads_a_5000_word_text_whole(client: httpx.Client,
                                                                        train_examples) -> None:
    """long_texts=chunks: the whole text in overlapping 256-token windows, its embedding their mean; the
    answer says how many tokens were read, and that none were left out."""
    job = train(client, "chunked", train_examples, long_texts="chunks")
    view = client.get(f"/v1/models/chunked:{job['model_version']}").json()["long_texts"]
    assert (view["policy"], view["requested"], view["reason"]) == ("chunks", "chunks", "as requested")
    predicted = client.post("/v1/predict", json={"model_name": "chunked", "texts": [FIVE_THOUSAND_WORDS, "hi"]})
    assert predicted.status_code == 200, predicted.text
    (long, short) = predicted.json()["predictions"]
    assert long["truncated"] is False and long["tokens"] > 6_000 and long["label"] is not None
    assert (short["tokens"], short["truncated"]) == (3, False)
    embedded = client.post("/v1/embeddings", json={"model_name": "chunked", "texts": [FIVE_THOUSAND_WORDS]}).json()
    assert embedded["tokens"] == [long["tokens"]] and embedded["truncated"] == [False]
    assert np.linalg.norm(embedded["embeddings"][0]) == pytest.approx(1, abs=1e-4)  # MiniLM normalises: the mean too


def test_requests_that_waited_max_latency_ms_are_answered_503(server: LiveServer, train_examples,
                                                              plain: dict) -> None:
    """A burst far beyond what this machine forwards in MAX_LATENCY_MS, sized from its measured speed:
    the first request is served, the late ones are shed."""
    texts = [e["text"] for e in train_examples] * 2  # 64 texts: one call per request at MAX_BATCH_SIZE 64
    body = {"model_name": "plain", "texts": texts}
    with server.client() as alone:
        for _ in range(2):  # the second one warm
            started = time.perf_counter()
            assert alone.post("/v1/embeddings", json=body).status_code == 200
            one_call = time.perf_counter() - started
    # Calls run one after another: the queue outlasts MAX_LATENCY_MS four times over, on any machine.
    requests = min(400, max(8, math.ceil(4 * MAX_LATENCY_MS / 1000 / one_call) + 4))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as concurrent:
            return await asyncio.gather(*(concurrent.post("/v1/embeddings", json=body) for _ in range(requests)))

    responses = asyncio.run(burst())
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, (statuses, one_call)  # some served, the rest shed; nothing else
    for shed in (r for r in responses if r.status_code == 503):
        assert shed.json() == {"error": shed.json()["error"], "detail": None}
        assert "retry shortly" in shed.json()["error"]
    with server.client() as after:  # the queue drained: a lone request is served again
        assert after.post("/v1/embeddings", json={"model_name": "plain", "texts": ["hi"]}).status_code == 200


def test_an_auto_job_cancelled_during_fine_tuning_leaves_the_head_served(client: httpx.Client,
                                                                          train_examples) -> None:
    response = client.post("/v1/train", json={"model_name": "halfway", "base_model": BASE_MODEL,
                                              "examples": train_examples, "strategy": "auto", **LONG_FINE_TUNING})
    job_id = response.json()["job_id"]
    job = wait_for_fine_tuning(client, job_id)  # the head serves; fine-tuning runs
    head_version = job["model_version"]
    assert head_version is not None
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    cancelled = wait_for_job(client, job_id, {"completed", "failed", "cancelled"}, timeout=60)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["model_version"] == head_version
    assert f"the head-only version {head_version} registered before fine-tuning stays and is served" in \
        cancelled["note"]
    served = client.get("/v1/models/halfway").json()
    assert (served["model_version"], served["strategy"]) == (head_version, "head")
    assert [v["model_version"] for v in listed_versions(client, "halfway")] == [head_version]  # nothing fine-tuned
    assert client.post("/v1/predict", json={"model_name": "halfway", "texts": ["hi"]}).status_code == 200


def test_finished_job_records_expire_after_the_next_job(server: LiveServer, client: httpx.Client,
                                                         train_examples, plain: dict) -> None:
    # Records made old by their finished_at (no waiting for RETENTION_DAYS to pass): the record of the job
    # that trained "plain", aged past the retention, and two planted ones, one past it and one just inside.
    store, now = job_store(server), utc_now()
    past, inside = now - timedelta(days=RETENTION_DAYS, hours=1), now - timedelta(days=RETENTION_DAYS, hours=-1)
    assert store.transition(plain["job_id"], {"completed"}, finished_at=past) is not None
    planted = {}
    for name, status, finished_at in (("old", "cancelled", past), ("recent", "failed", inside)):
        planted[name] = new_job("planted", {"model_name": "planted"})
        planted[name].status, planted[name].finished_at = status, finished_at
        store.create(planted[name])
    for job_id in (plain["job_id"], planted["old"].job_id, planted["recent"].job_id):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200, job_id  # nothing expires by itself
    fresh = train(client, "expiry", train_examples)
    deadline = time.monotonic() + 60  # the trainer expires records just after it marks its job completed
    for job_id in (plain["job_id"], planted["old"].job_id):
        while client.get(f"/v1/jobs/{job_id}").status_code != 404:
            assert time.monotonic() < deadline, f"{job_id} outlived the job after it"
            time.sleep(0.1)
    assert client.get(f"/v1/jobs/{planted['recent'].job_id}").status_code == 200  # inside the retention: kept
    assert client.get(f"/v1/jobs/{fresh['job_id']}").status_code == 200  # finished just now: kept
    assert client.get("/v1/models/plain").status_code == 200  # its job's record expired; the model stays
    assert len(version_directories(server, "plain")) == 1


def test_expired_records_are_deleted_when_the_trainer_starts(server: LiveServer, client: httpx.Client) -> None:
    planted = new_job("planted", {"model_name": "planted"})
    planted.status, planted.finished_at = "failed", utc_now() - timedelta(days=400)
    job_store(server).create(planted)
    assert client.get(f"/v1/jobs/{planted.job_id}").status_code == 200
    consumer = next(iter(server.consumer_processes()))
    consumer.send_signal(signal.SIGKILL)  # the server starts a new trainer, whose start-up expires it
    consumer.wait(timeout=30)
    deadline = time.monotonic() + 90
    while client.get(f"/v1/jobs/{planted.job_id}").status_code != 404:
        assert time.monotonic() < deadline, "the planted record outlived the trainer's start"
        time.sleep(0.1)


def test_a_second_sqlite_trainer_waits_for_the_lock_and_nothing_trains_twice(
        server: LiveServer, client: httpx.Client, trainer_factory, train_examples, tiny_base_model) -> None:
    tiny = tiny_base_model(server.model_path / "base-models")  # which model the jobs train does not matter here
    embedded = next(iter(server.consumer_processes()))
    second = trainer_factory(server, "second-trainer")  # same MODEL_PATH, no REDIS_URL: the SQLite queue
    wait_for_log(server, "another trainer holds")
    jobs = [train(client, f"once-{n}", train_examples, tiny) for n in range(2)]
    for job in jobs:
        record = job_store(server).get(job["job_id"])
        assert record.attempts == 1 and record.worker.endswith(f":{embedded.pid}"), record
    second_log = second.log_path.read_text()
    assert "training" not in second_log and "trainer consumer started" not in second_log

    stopped = server.stop()  # the embedded trainer exits and lets go of the lock
    assert stopped.clean, stopped
    second.wait_until_consuming(timeout=120)
    assert psutil.pid_exists(second.pid)
