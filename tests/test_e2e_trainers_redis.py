"""End to end, Redis mode: trainers run on their own (`python -m trainers.consumer`, as on trainer
machines), each started here with the settings a test needs, against one API server. What the
README promises about trainers: shutdown mid-job, a lost queue entry, imports and retrains on a
trainer of their own, version retention, and an `auto` job whose fine-tuning fails. Tests run in
file order; at most one trainer runs at a time (`trainers`), and each test also passes run alone.
"""

from __future__ import annotations

import signal

import httpx
import openai
import pytest

from fewshot.api.training_schemas import TrainRequest
from fewshot.client import FewshotClient
from fewshot.records.jobs import RedisJobStore, new_job
from harness.fixtures import BASE_MODEL, LONG_FINE_TUNING
from harness.live_server import (
    LiveServer,
    TrainerProcess,
    fine_tuning_lasting,
    listed_versions,
    version_directories,
    wait_for_fine_tuning,
    wait_for_job,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def queue_url(fresh_redis_database) -> str:
    return fresh_redis_database()


@pytest.fixture(scope="module")
def server(live_server_factory, queue_url: str) -> LiveServer:
    return live_server_factory("trainers-redis", REDIS_URL=queue_url, EMBEDDED_TRAINER="false")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client()


@pytest.fixture(scope="module")
def tiny(server: LiveServer, tiny_base_model) -> str:
    """For the tests where what the model is does not matter (shutdowns, retention): it trains in a second."""
    return tiny_base_model(server.model_path / "base-models")


class Trainers:
    """The one trainer running beside the server, started with the settings a test needs. A test that
    needs no setting of its own keeps the running trainer when that one has none either: each start
    costs seconds (torch, SetFit), and only the tests of a start itself need a fresh one."""

    def __init__(self, server: LiveServer, factory) -> None:
        self.server, self.factory = server, factory
        self.running: TrainerProcess | None = None
        self.settings: dict[str, str] = {}

    def fresh(self, name: str, **settings: str) -> TrainerProcess:
        """Stop whatever trainer runs; start one named `name` with `settings`, consuming once returned."""
        self.server.stop_trainers()
        self.running, self.settings = self.factory(self.server, name, **settings).wait_until_consuming(), settings
        return self.running

    def plain(self, name: str) -> TrainerProcess:
        """A trainer without settings of its own: the running one if it is such, else a fresh one."""
        if self.running is not None and not self.settings and self.running.process.poll() is None:
            return self.running
        return self.fresh(name)


@pytest.fixture(scope="module")
def trainers(server: LiveServer, trainer_factory) -> Trainers:
    return Trainers(server, trainer_factory)


def submit(client: httpx.Client, model: str, examples: list[dict], base_model: str = BASE_MODEL, **options) -> str:
    response = client.post("/v1/train", json={"model_name": model, "base_model": base_model, "examples": examples,
                                              **options})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def completed(client: httpx.Client, job_id: str) -> dict:
    job = wait_for_job(client, job_id, {"completed", "failed", "cancelled"})
    assert job["status"] == "completed", job
    return job


def test_sigterm_mid_job_queues_the_job_again_and_it_runs_again(client: httpx.Client, trainers: Trainers,
                                                                 train_examples, tiny: str) -> None:
    first = trainers.fresh("first")
    # ~10 s of fine-tuning on this machine: the SIGTERM below always finds it still fine-tuning.
    job_id = submit(client, "again", train_examples, tiny, **fine_tuning_lasting(client, tiny, train_examples, 10))
    wait_for_fine_tuning(client, job_id)

    first.stop(signal.SIGTERM)
    assert first.process.returncode == 0, first.log_path.read_text()[-3000:]
    requeued = client.get(f"/v1/jobs/{job_id}").json()
    assert requeued["status"] == "pending" and "shut down" in requeued["note"], requeued
    assert requeued["attempts"] == 1 and requeued["step"] is None

    trainers.fresh("second")
    job = completed(client, job_id)
    assert job["attempts"] == 2 and "shut down" in job["note"]
    assert client.get("/v1/models/again").json()["model_version"] == job["model_version"]


def test_a_pending_record_whose_task_is_not_queued_is_queued_when_a_trainer_starts(
        server: LiveServer, client: httpx.Client, trainers: Trainers, queue_url: str, train_examples) -> None:
    """As when the API died between writing a job's record and queueing its task."""
    server.stop_trainers()
    request = TrainRequest.model_validate({"model_name": "unqueued", "base_model": BASE_MODEL,
                                           "examples": train_examples, "strategy": "head"})
    record = new_job(request.model_name, request.model_dump(mode="json"))
    RedisJobStore(queue_url).create(record)  # the record only: no task in the queue

    trainer = trainers.fresh("third")  # a start of its own: the start is what queues the record
    assert completed(client, record.job_id)["attempts"] == 1
    assert f"job {record.job_id}: was pending but not queued; queued again" in trainer.log_path.read_text()
    assert client.post("/v1/predict", json={"model_name": "unqueued", "texts": ["hi"]}).status_code == 200


def train_versions(client: httpx.Client, model: str, count: int, examples: list[dict],
                   base_model: str = BASE_MODEL) -> list[str]:
    jobs = (completed(client, submit(client, model, examples, base_model, strategy="head")) for _ in range(count))
    return [f"{model}:{job['model_version']}" for job in jobs]


def test_a_download_comes_back_in_through_an_import_job_on_a_trainer_of_its_own(
        server: LiveServer, client: httpx.Client, trainers: Trainers, train_examples, test_examples) -> None:
    """The archive comes from the API server; the import job is queued in Redis and run by a trainer
    process on its own, which reads the directory from LOCAL_MODEL_DIRS (its default, in MODEL_PATH)."""
    trainers.plain("importer")
    tag = train_versions(client, "to-move", 1, train_examples)[0]
    with FewshotClient(server.url) as fewshot:
        directory = fewshot.download(tag, server.model_path / "base-models", extract=True)
        job = fewshot.wait(fewshot.import_model("moved", str(directory)).job_id)
    assert job.kind == "import" and job.status == "completed"
    moved = client.get("/v1/models/moved").json()
    assert (moved["strategy"], moved["source"], moved["model_version"]) == ("imported", str(directory),
                                                                            job.model_version)
    texts = [example["text"] for example in test_examples]
    original, copy = (client.post("/v1/predict", json={"model_name": name, "texts": texts}).json()["predictions"]
                      for name in (tag, "moved"))
    assert [p["label"] for p in copy] == [p["label"] for p in original]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(original, copy, strict=True)) < 1e-6
    # And its embeddings through the official openai client, as in the embedded mode's suite.
    embedded = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0).embeddings.create(
        model="moved", input=texts[:3], dimensions=32)
    assert [len(item.embedding) for item in embedded.data] == [32, 32, 32] and embedded.usage.prompt_tokens > 0


def test_the_example_set_lives_in_redis_and_a_retrain_runs_on_a_trainer_of_its_own(
        server: LiveServer, client: httpx.Client, trainers: Trainers, train_examples, queue_url: str) -> None:
    """The gateway keeps the set in Redis (not on its disk); a trainer process elsewhere runs the retrain."""
    import redis

    trainers.plain("retrainer")
    completed(client, submit(client, "grown", train_examples, strategy="head"))
    with FewshotClient(server.url) as fewshot:
        fewshot.add_examples("grown", [{"text": "hello there, good morning", "label": "greeting"},
                                       {"text": "hi! nice to meet you", "label": "greeting"}])
        assert redis.Redis.from_url(queue_url).exists("fewshot:examples:grown:records")
        job = fewshot.wait(fewshot.retrain("grown").job_id, poll_seconds=0.2, timeout=300)
        version = fewshot.model("grown")
        assert version.model_version == job.model_version and "greeting" in version.labels
        assert version.examples_digest == fewshot.examples("grown").digest
        assert version.num_examples == len(train_examples) + 2


def test_keep_model_versions_prunes_after_each_training_and_zero_keeps_every_version(
        server: LiveServer, client: httpx.Client, trainers: Trainers, train_examples, tiny: str) -> None:
    trainers.fresh("keep-two", KEEP_MODEL_VERSIONS="2")
    trained = train_versions(client, "kept", 3, train_examples, tiny)
    assert version_directories(server, "kept") == sorted(trained[-2:])  # the oldest was deleted
    assert client.get("/v1/models/kept").json()["model_version"] == trained[-1].split(":")[1]

    trainers.fresh("keep-all", KEEP_MODEL_VERSIONS="0")
    trained += train_versions(client, "kept", 9, train_examples, tiny)  # 11 in all: more than the default 10
    assert version_directories(server, "kept") == sorted(trained[1:])
    assert len(listed_versions(client, "kept")) == 11


def test_an_auto_job_failing_during_fine_tuning_leaves_the_head_served(
        server: LiveServer, client: httpx.Client, trainers: Trainers, train_examples) -> None:
    trainers.fresh("short-limit", MAX_TRAINING_SECONDS="1")
    job_id = submit(client, "cut-short", train_examples, strategy="auto", **LONG_FINE_TUNING)
    failed = wait_for_job(client, job_id, {"completed", "failed", "cancelled"})
    assert failed["status"] == "failed", failed
    assert "MAX_TRAINING_SECONDS=1" in failed["error"]
    head_version = failed["model_version"]
    assert head_version is not None  # registered before fine-tuning began
    served = client.get("/v1/models/cut-short").json()
    assert (served["model_version"], served["strategy"]) == (head_version, "head")
    assert version_directories(server, "cut-short") == [f"cut-short:{head_version}"]
    assert client.post("/v1/predict", json={"model_name": "cut-short", "texts": ["hi"]}).status_code == 200
