"""End to end over HTTP against one real `bentoml serve`, in both deployment modes:

- embedded: the server runs its own Huey consumer; queue and job records in SQLite under MODEL_PATH;
- redis: queue and job records in a real redis-server; two trainers run as separate processes
  (`python -m trainers.consumer`, as on trainer machines) sharing the model store.

Tests in this module share one server per mode and run in file order: train → inspect → predict → restart.
Each passes run alone except three that check what the scenario before them did: the metrics (jobs
completed and failed, a model evicted), the restart (every version and job record kept) and the store
(both versions of the retrained model under MODEL_PATH).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta

import bentoml
import httpx
import pytest

from fewshot.records.jobs import RedisJobStore, SqliteJobStore
from harness.fixtures import BASE_MODEL, CLEAR_TEXTS
from harness.live_server import BENTOML, PROJECT_ROOT, LiveServer, metric, wait_for_job, wait_for_log

pytestmark = pytest.mark.e2e

MODEL = "bank"
HF_TOKEN = "hf_test_token_that_must_never_leak"  # unused offline; must still never be echoed


@pytest.fixture(scope="module", params=["embedded", "redis"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(mode: str, live_server_factory, trainer_factory, request: pytest.FixtureRequest) -> LiveServer:
    # One loaded model at a time: tests that use two models make the cache unload and reload.
    settings = {"MAX_LOADED_MODELS": "1", "HF_TOKEN": HF_TOKEN}
    if mode == "embedded":
        return live_server_factory("embedded", **settings)
    redis_url = request.getfixturevalue("fresh_redis_database")()
    server = live_server_factory("redis", REDIS_URL=redis_url, EMBEDDED_TRAINER="false", **settings)
    for trainer in [trainer_factory(server, name) for name in ("trainer-1", "trainer-2")]:  # both start at once
        trainer.wait_until_consuming()
    return server


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client()


@pytest.fixture(scope="module")
def trained(client: httpx.Client, train_examples) -> dict:
    """One small real training job, shared by the tests that need a model."""
    response = client.post("/v1/train", json={
        "model_name": MODEL, "base_model": BASE_MODEL, "examples": train_examples, "num_iterations": 2,
    })
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = wait_for_job(client, accepted["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    return {"accepted": accepted, "job": job}


def parse_utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    assert value.endswith("+00:00"), value
    return parsed


def predict(client: httpx.Client, texts: list[str], model: str = MODEL) -> httpx.Response:
    return client.post("/v1/predict", json={"model_name": model, "texts": texts})


def test_health_needs_no_key_and_says_ok(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_train_is_accepted_at_once_with_a_pending_job(trained: dict) -> None:
    accepted = trained["accepted"]
    assert set(accepted) == {"job_id", "kind", "status", "model_name", "created_at", "warnings"}
    assert accepted["kind"] == "train" and trained["job"]["kind"] == "train"
    assert accepted["warnings"] == []  # 8 examples of each of 4 labels
    assert uuid.UUID(accepted["job_id"]).version == 4
    assert accepted["status"] == "pending"
    assert accepted["model_name"] == MODEL
    parse_utc(accepted["created_at"])


def test_completed_job_reports_its_model_version(trained: dict) -> None:
    job = trained["job"]
    assert job["job_id"] == trained["accepted"]["job_id"]
    assert job["error"] is None
    assert job["model_version"]
    assert job["attempts"] == 1
    assert parse_utc(job["created_at"]) <= parse_utc(job["started_at"]) <= parse_utc(job["finished_at"])
    assert job["progress"] == 1.0 and job["step"] == job["total_steps"] > 0


# A line written by one of BentoML's processes (the API, inference and supervisor workers log
# through BentoML's handlers): "2026-12-01T11:59:03+0000 [INFO] [entry_service:fewshot:1] …".
BENTOML_LINE = re.compile(r"^\S+ \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] \[")
PID = re.compile(r"\[pid \d+\]")


def job_lines(server: LiveServer, job_id: str) -> list[str]:
    """What the trainer wrote from the job's first line to its last, in the log that holds the job
    (the server's in embedded mode, where the trainer shares its output; a trainer's own otherwise),
    less the lines of BentoML's processes interleaved with them."""
    windows = []
    for path in server.state_dir.glob("*.log"):
        lines = path.read_text(errors="replace").splitlines()
        first = next((n for n, line in enumerate(lines) if f"job {job_id}: training " in line), None)
        last = next((n for n, line in enumerate(lines) if f"job {job_id}: completed as " in line), None)
        if first is not None and last is not None:
            # The trainer's lines, not those of the other processes writing to the same log: BentoML's, and
            # the batch worker's (a process of our format with a pid of its own, started beside the trainer).
            trainer = PID.search(lines[first]).group(0)
            windows.append([line for line in lines[first:last + 1] if not BENTOML_LINE.match(line)
                            and (PID.search(line) is None or PID.search(line).group(0) == trainer)])
    assert len(windows) == 1, f"the job's start and end lines were found in {len(windows)} logs"
    return windows[0]


def test_every_log_line_of_a_training_job_carries_its_job_id(server: LiveServer, trained: dict) -> None:
    job_id = trained["job"]["job_id"]
    lines = job_lines(server, job_id)
    untagged = [line for line in lines if f"job_id={job_id}" not in line]
    assert untagged == [], untagged  # printed output, library loggers and warnings included
    assert any("fine-tuning step" in line for line in lines), lines  # progress lines
    assert any(" fewshot.training " in line for line in lines), lines  # the training module's own lines
    # SetFit's and transformers' own output, which they print or log with handlers of their own:
    assert any(" setfit.trainer " in line and "Running training" in line for line in lines), lines
    assert any(" stdout " in line and "'train_runtime'" in line for line in lines), lines  # a printed dict


def test_model_metadata_is_complete_and_honest(client: httpx.Client, trained: dict, train_examples) -> None:
    model = client.get(f"/v1/models/{MODEL}").json()
    assert model["model_name"] == MODEL
    assert model["model_version"] == trained["job"]["model_version"]
    assert model["base_model"] == BASE_MODEL
    parse_utc(model["created_at"])
    assert model["num_examples"] == len(train_examples) == 32
    # 8 examples per label → a stratified 20% hold-out of 2 per label, never trained on.
    assert model["eval_num_examples"] == 8
    assert 0.0 <= model["accuracy"] <= 1.0
    assert model["training_duration_seconds"] > 0
    assert model["labels"] == ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]
    assert model["job_id"] == trained["job"]["job_id"]


def test_predict_labels_clear_examples_in_input_order(client: httpx.Client, trained: dict) -> None:
    texts = list(CLEAR_TEXTS)
    for ordered in (texts, texts[::-1]):
        response = predict(client, ordered)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["text"] for p in predictions] == ordered
        assert [p["label"] for p in predictions] == [CLEAR_TEXTS[t] for t in ordered]
        assert all(0.25 < p["score"] <= 1.0 for p in predictions)  # above chance for 4 labels


def test_concurrent_requests_all_succeed(server: LiveServer, trained: dict) -> None:
    """Hundreds of concurrent requests through the gateway → inference hop: no 5xx, none lost.

    (BentoML's dependency client used to drop requests in flight every 100 calls: 500s.)
    """
    texts = list(CLEAR_TEXTS)

    async def hammer() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            async def one(i: int) -> int:
                path = "/v1/predict" if i % 2 else "/v1/embeddings"
                response = await client.post(path, json={"model_name": MODEL, "texts": [texts[i % 4]]})
                return response.status_code

            statuses = []
            for _ in range(6):  # waves of 50 concurrent requests: 300 in all
                statuses += await asyncio.gather(*(one(i) for i in range(50)))
            return statuses

    statuses = asyncio.run(hammer())
    assert len(statuses) == 300
    assert set(statuses) == {200}, Counter(statuses)


def test_concurrent_mixed_requests_get_exactly_their_own_answers(
        server: LiveServer, client: httpx.Client, trained: dict, train_examples) -> None:
    """Requests of two models and of 1-5 texts of mixed length, sent at once, are merged into shared
    calls, batches and length-sorted passes; each must get back what it gets when sent alone."""
    other = client.post("/v1/train", json={
        "model_name": "other", "base_model": BASE_MODEL, "examples": train_examples[:16], "num_iterations": 1}).json()
    assert wait_for_job(client, other["job_id"], {"completed", "failed"})["status"] == "completed"
    pool = [e["text"] for e in train_examples]
    requests = [("/v1/predict" if i % 3 else "/v1/embeddings", MODEL if i % 2 else "other",
                 [pool[(i * 7 + k * 13) % len(pool)] for k in range(1 + i % 5)]) for i in range(40)]

    def alone(path: str, model: str, texts: list[str]) -> dict:
        response = client.post(path, json={"model_name": model, "texts": texts})
        assert response.status_code == 200, response.text
        return response.json()

    expected = [alone(*request) for request in requests]

    async def together() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as concurrent:
            responses = await asyncio.gather(*(concurrent.post(path, json={"model_name": model, "texts": texts})
                                               for path, model, texts in requests))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        return [r.json() for r in responses]

    for (path, _, texts), want, got in zip(requests, expected, asyncio.run(together()), strict=True):
        if path == "/v1/predict":
            assert [p["text"] for p in got["predictions"]] == texts
            assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
            assert [p["score"] for p in got["predictions"]] == pytest.approx(
                [p["score"] for p in want["predictions"]], abs=1e-4)
        else:
            assert len(got["embeddings"]) == len(texts)
            for vector, reference in zip(got["embeddings"], want["embeddings"], strict=True):
                assert vector == pytest.approx(reference, abs=1e-4)
    assert "unloaded" in server.log_path.read_text()  # two models through a one-model cache


def test_hf_token_never_appears_in_job_records_model_metadata_or_logs(
        client: httpx.Client, server: LiveServer, trained: dict) -> None:
    job = client.get(f"/v1/jobs/{trained['accepted']['job_id']}").text
    model = client.get(f"/v1/models/{MODEL}").text
    failed = client.post("/v1/train", json={"model_name": "x", "base_model": "no-such-org/leak-check",
                                            "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]})
    failed_job = wait_for_job(client, failed.json()["job_id"], {"failed", "completed"})
    assert failed_job["status"] == "failed"
    stored_metadata = list((server.model_path / "bentoml" / "models").rglob("model.yaml"))
    assert stored_metadata  # the store's own metadata files are read too
    for text in (job, model, json.dumps(failed_job), server.all_logs(),
                 *(path.read_text() for path in stored_metadata)):
        assert HF_TOKEN not in text
    assert f"job {trained['job']['job_id']}: completed" in server.all_logs()  # trainer logs were read


def test_metrics_report_jobs_batches_and_model_cache(client: httpx.Client, mode: str, trained: dict) -> None:
    text = client.get("/metrics").text
    assert metric(text, "fewshot_training_jobs", status="completed") >= 2  # from the job store, in both modes
    assert metric(text, "fewshot_training_jobs", status="failed") >= 1
    assert metric(text, "fewshot_inference_batch_texts_count", route="predict") >= 1
    assert metric(text, "fewshot_inference_batch_texts_count", route="embeddings") >= 1
    assert metric(text, "fewshot_model_loads_total") >= 2
    assert metric(text, "fewshot_model_evictions_total") >= 1  # two models through a one-model cache
    if mode == "embedded":  # the trainer is the server's child; separate trainers report elsewhere
        assert metric(text, "fewshot_training_jobs_finished_total", outcome="completed") >= 2
        assert metric(text, "fewshot_training_jobs_finished_total", outcome="failed") >= 1
        assert metric(text, "fewshot_training_duration_seconds_count") >= 2


def test_embeddings_come_from_the_model_body_in_input_order(client: httpx.Client, trained: dict) -> None:
    texts = ["where is my new card", "euro exchange rate", "where is my new card"]
    response = client.post("/v1/embeddings", json={"model_name": MODEL, "texts": texts})
    assert response.status_code == 200, response.text
    vectors = response.json()["embeddings"]
    assert len(vectors) == 3
    assert all(len(vector) == 384 for vector in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    reversed_vectors = client.post("/v1/embeddings", json={"model_name": MODEL, "texts": texts[::-1]}).json()
    assert reversed_vectors["embeddings"][0] == pytest.approx(vectors[2], abs=1e-5)
    assert reversed_vectors["embeddings"][1] == pytest.approx(vectors[1], abs=1e-5)


def test_bentoml_python_client_calls_the_api(server: LiveServer, trained: dict) -> None:
    with bentoml.SyncHTTPClient(server.url) as python_client:
        result = python_client.predict({"model_name": MODEL, "texts": ["My card is lost! What can I do?"]})
    assert result["predictions"][0]["label"] == "lost_or_stolen_card"


def test_readme_python_quickstart_runs_against_the_server(server: LiveServer) -> None:
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "examples" / "quickstart.py"), server.url],
                            check=False, capture_output=True, text=True, timeout=300, env=server.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "job completed step" in result.stdout  # progress was shown
    assert "predict: card_arrival" in result.stdout
    assert "top 2: card_arrival " in result.stdout and "versions of intents: " in result.stdout
    assert "embedding dimensions: 384" in result.stdout
    assert "why: '" in result.stdout and ", nearest '" in result.stdout  # the word, the training example


def test_python_client_reports_errors_and_failed_jobs(server: LiveServer, trained: dict) -> None:
    from fewshot.client import FewshotClient, FewshotError, JobFailed

    with FewshotClient(server.url) as client:
        assert client.job(trained["job"]["job_id"]).status == "completed"
        assert client.model(MODEL).labels == ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]
        for call in (lambda: client.model("no-such-model"), lambda: client.job("no-such-job"),
                     lambda: client.predict("no-such-model", ["hi"])):
            with pytest.raises(FewshotError) as caught:
                call()
            assert caught.value.status == 404 and "no " in caught.value.message
        with pytest.raises(FewshotError) as caught:
            client.predict(MODEL, ["   "])
        assert caught.value.status == 400
        assert caught.value.message == "texts[0]: must not be empty or only whitespace", caught.value.message
        job = client.train("never", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}],
                           base_model="no-such-org/no-such-model")
        with pytest.raises(JobFailed) as failed:
            client.wait(job.job_id, poll_seconds=0.3, timeout=120)
        assert failed.value.job.status == "failed" and "no-such-org/no-such-model" in failed.value.job.error


def test_unknown_model_and_job_are_404_with_the_error_shape(client: httpx.Client) -> None:
    for response in (
        predict(client, ["hello"], model="no-such-model"),
        client.post("/v1/embeddings", json={"model_name": "no-such-model", "texts": ["hello"]}),
        client.get("/v1/models/no-such-model"),
        client.get(f"/v1/jobs/{uuid.uuid4()}"),
    ):
        assert response.status_code == 404, response.text
        body = response.json()
        assert set(body) == {"error", "detail"}
        assert "no-such-model" in body["error"] or "job_id" in body["error"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/predict", {"model_name": "Bank", "texts": ["x"]}, "model_name"),
    ("/v1/predict", {"model_name": "bank", "texts": []}, "texts"),
    ("/v1/predict", {"model_name": "bank", "texts": ["ok", "  "]}, "texts[1]"),
    ("/v1/embeddings", {"model_name": "bank"}, "texts"),
    ("/v1/predict", {"model_name": "bank", "texts": ["x"] * 257}, "texts"),
    ("/v1/embeddings", {"model_name": "bank", "texts": ["x" * 10_001]}, "texts[0]"),
    ("/v1/train", {"model_name": "m", "base_model": "/etc",
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "base_model"),
    ("/v1/train", {"model_name": "m", "base_model": "../../etc/passwd",
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "base_model"),
    ("/v1/train", {"model_name": "m", "num_iterations": 10_000,
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "num_iterations"),
    ("/v1/train", {"model_name": "m", "examples": []}, "examples"),
    ("/v1/train", {"model_name": "m", "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}]},
     "examples"),
    ("/v1/train", {"model_name": "m", "examples": [{"text": "", "label": "x"}, {"text": "b", "label": "y"}]},
     "examples[0].text"),
    ("/v1/train", {"model_name": "m", "num_iterations": 0,
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "num_iterations"),
    ("/v1/train", {"model_name": "m", "learning_rate": -1,
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "learning_rate"),
    ("/v1/train", {"model_name": "m", "batch_size": 0,
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "batch_size"),
    ("/v1/train", {"model_name": "m", "holdout_fraction": 0.5,
                   "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]}, "holdout_fraction"),
    ("/v1/train", {"model_name": "-bad-", "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]},
     "model_name"),
])
def test_bad_input_is_400_naming_the_field(client: httpx.Client, path: str, body: dict, field: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith(f"{field}:") or f"; {field}:" in error, error


def test_malformed_json_and_unknown_routes_get_the_error_shape(client: httpx.Client) -> None:
    malformed = client.post("/v1/train", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert "JSON" in malformed.json()["error"]
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert set(missing.json()) == {"error", "detail"}
    invalid_name = client.get("/v1/models/Not_Valid")
    assert invalid_name.status_code == 400
    assert invalid_name.json()["error"].startswith("model_name:")


def test_failing_base_model_fails_the_job_with_its_reason(client: httpx.Client, train_examples) -> None:
    response = client.post("/v1/train", json={
        "model_name": "broken", "base_model": "no-such-org/no-such-model", "examples": train_examples[:10],
    })
    assert response.status_code == 202
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"}, timeout=120)
    assert job["status"] == "failed"
    assert "no-such-org/no-such-model" in job["error"]
    assert "HF_TOKEN" in job["error"]  # says what to do
    assert client.get("/v1/models/broken").status_code == 404  # nothing half-registered


def test_openapi_document_describes_the_real_api(client: httpx.Client) -> None:
    spec = client.get("/docs.json").json()
    paths = spec["paths"]
    for route in ("/v1/train", "/v1/predict", "/v1/embeddings", "/health"):
        assert route in paths, route
    assert "get" in paths["/v1/jobs/{job_id}"] and "get" in paths["/v1/models/{model_name}"]
    train = paths["/v1/train"]["post"]
    assert "202" in train["responses"] and "200" not in train["responses"]
    assert "401" in train["responses"] and train["security"]
    assert train["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "401" not in paths["/health"]["get"]["responses"]
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    error_schema = spec["components"]["schemas"]["ErrorResponse"]
    assert set(error_schema["properties"]) == {"error", "detail"}
    assert client.get("/").status_code == 200


def test_retraining_switches_predictions_within_seconds_without_failures(
        client: httpx.Client, server: LiveServer, trained: dict, train_examples) -> None:
    two_labels = [e for e in train_examples if e["label"] in {"card_arrival", "exchange_rate"}]
    stolen = "My card is lost! What can I do?"
    assert predict(client, [stolen]).json()["predictions"][0]["label"] == "lost_or_stolen_card"
    served = client.get(f"/v1/models/{MODEL}").json()["model_version"]

    failures: list[str] = []
    stop = threading.Event()

    def keep_predicting() -> None:  # requests in flight while the new version is swapped in
        with server.client() as background:
            while not stop.is_set():
                response = predict(background, list(CLEAR_TEXTS))
                if response.status_code != 200:
                    failures.append(response.text)

    hammer = threading.Thread(target=keep_predicting)
    hammer.start()
    try:
        response = client.post("/v1/train", json={
            "model_name": MODEL, "base_model": BASE_MODEL, "examples": two_labels, "num_iterations": 1,
        })
        job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
        assert job["status"] == "completed", job
        # The inference service's refresh (every MODEL_REFRESH_SECONDS) loads the new version beside the
        # one serving and swaps it in: once it says so, the very next request gets the new version.
        wait_for_log(server, f"switched {MODEL} from version {served} to {job['model_version']}", timeout=120)
        assert predict(client, [stolen]).json()["predictions"][0]["label"] in {"card_arrival", "exchange_rate"}
    finally:
        stop.set()
        hammer.join()
    assert failures == []
    model = client.get(f"/v1/models/{MODEL}").json()
    assert model["model_version"] == job["model_version"] != trained["job"]["model_version"]
    assert model["labels"] == ["card_arrival", "exchange_rate"]


def stored_state(server: LiveServer) -> tuple[list[str], list[str]]:
    """Every model version in the store and every job record, as the files and Redis hold them."""
    listing = subprocess.run(
        [*BENTOML, "models", "list", "-o", "json"], capture_output=True, text=True, check=True,
        env={**os.environ, "BENTOML_HOME": str(server.model_path / "bentoml"), "HOME": str(server.home)},
    )
    redis_url = server.env.get("REDIS_URL")
    records = RedisJobStore(redis_url) if redis_url else SqliteJobStore(server.model_path / "queue" / "jobs.db")
    return (sorted(model["tag"] for model in json.loads(listing.stdout)),
            sorted(r.model_dump_json() for status in ("pending", "running", "completed", "failed")
                   for r in records.with_status(status)))


def test_restart_keeps_every_model_version_every_job_and_identical_predictions(
        server: LiveServer, client: httpx.Client, trained: dict, test_examples) -> None:
    texts = [e["text"] for e in test_examples]
    before = predict(client, texts).json()
    job_before = client.get(f"/v1/jobs/{trained['job']['job_id']}").json()
    model_before = client.get(f"/v1/models/{MODEL}").json()
    versions_before, records_before = stored_state(server)
    assert len(versions_before) >= 3 and len(records_before) >= 4  # bank ×2, other; and their jobs

    server.restart()
    assert stored_state(server) == (versions_before, records_before)
    with server.client() as after_client:
        assert after_client.get(f"/v1/jobs/{trained['job']['job_id']}").json() == job_before
        assert after_client.get(f"/v1/models/{MODEL}").json() == model_before
        after = predict(after_client, texts).json()
    assert [p["label"] for p in after["predictions"]] == [p["label"] for p in before["predictions"]]
    assert [p["score"] for p in after["predictions"]] == pytest.approx(
        [p["score"] for p in before["predictions"]], abs=1e-6)


def test_store_lives_under_model_path_only(server: LiveServer) -> None:
    default_home = server.home / "bentoml"
    written = [p for p in default_home.rglob("*") if p.is_file()] if default_home.exists() else []
    assert written == [], f"files written to the default BentoML home: {written}"
    listing = subprocess.run(
        [*BENTOML, "models", "list", "-o", "json"], capture_output=True, text=True, check=True,
        env={**os.environ, "BENTOML_HOME": str(server.model_path / "bentoml"), "HOME": str(server.home)},
    )
    tags = [model["tag"] for model in json.loads(listing.stdout)]
    assert sum(tag.startswith(f"{MODEL}:") for tag in tags) == 2, tags
    # Training scratch (checkpoints, logs) went to temporary directories, not the working tree.
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout
    assert not [line for line in untracked.splitlines() if "checkpoints" in line or "runs/" in line]


def test_stopping_the_server_leaves_no_trainer_behind(server: LiveServer, mode: str) -> None:
    if mode == "redis":
        pytest.skip("in Redis mode the trainers are separate processes that outlive the API server")
    assert len(server.consumer_processes()) == 1
    stopped = server.stop()
    assert stopped.survivors == [], stopped  # the trainer and every worker exited by themselves
    assert stopped.code == 0, stopped
