"""End to end, distributed mode: queue and job records in a real redis-server, trainers as separate
processes sharing one model store (as trainer machines sharing a volume). Faults of several trainers."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest

from fewshot.records.jobs import RedisJobStore
from harness.fixtures import BASE_MODEL, LONG_FINE_TUNING
from harness.live_server import (
    POLL_SECONDS,
    PROJECT_ROOT,
    LiveServer,
    TrainerProcess,
    fine_tuning_lasting,
    free_port,
    metric,
    version_directories,
    wait_for_job,
)
from trainers.tasks import DIED_WHILE_RUNNING

pytestmark = pytest.mark.e2e

HEARTBEAT_SECONDS = 0.5
MISSED_BEATS = 16
HEARTBEAT_TTL_SECONDS = HEARTBEAT_SECONDS * MISSED_BEATS
"""A trainer silent for 8 s is dead: a busy machine (a core held by something else, a trainer loading
torch beside one that trains) may starve a heartbeat thread for a few seconds, never for that long."""


@pytest.fixture(scope="module")
def queue_url(fresh_redis_database) -> str:
    return fresh_redis_database()


@pytest.fixture(scope="module")
def server(live_server_factory, queue_url: str) -> LiveServer:
    return live_server_factory("distributed", REDIS_URL=queue_url, EMBEDDED_TRAINER="false",
                               TRAINER_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
                               TRAINER_HEARTBEAT_MISSED_BEATS=str(MISSED_BEATS))


@pytest.fixture(scope="module")
def metrics_ports() -> list[int]:
    return [free_port(), free_port()]


@pytest.fixture(scope="module")
def trainers(server: LiveServer, trainer_factory, metrics_ports: list[int]) -> dict[int, TrainerProcess]:
    started = [trainer_factory(server, f"trainer-{n}", TRAINER_METRICS_PORT=str(port))
               for n, port in zip((1, 2), metrics_ports, strict=True)]
    return {trainer.wait_until_consuming().pid: trainer for trainer in started}


@pytest.fixture(scope="module")
def tiny(server: LiveServer, tiny_base_model) -> str:
    """For jobs whose model does not matter (they must overlap, or just complete): trains in a second.
    In the shared store's base-models, which every trainer here reads (LOCAL_MODEL_DIRS' default)."""
    return tiny_base_model(server.model_path / "base-models")


def train(client: httpx.Client, model_name: str, examples: list[dict], iterations: int = 1,
          base_model: str = BASE_MODEL, **options) -> str:
    response = client.post("/v1/train", json={"model_name": model_name, "base_model": base_model,
                                              "examples": examples, "num_iterations": iterations, **options})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def store_versions(server: LiveServer, name: str) -> list[str]:
    """Tags of `name` in the shared store, newest first, read by a process of its own."""
    script = f"import json; from fewshot import store; print(json.dumps([v.tag for v in store.versions({name!r})]))"
    env = {**server.env, "BENTOML_HOME": str(server.model_path / "bentoml")}
    output = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def wait_for_beats(redis_url: str, trainer: TrainerProcess, beats: int, timeout: float = 60) -> None:
    """Until `trainer` has beaten `beats` times more (each beat renews its heartbeat key's expiry, so its
    PTTL rises): the event itself, on a machine of any speed; `timeout` only stops a silent trainer."""
    import redis

    key = f"fewshot:worker:{socket.gethostname()}:{trainer.pid}"
    connection = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    seen, last = 0, None
    while seen < beats:
        assert time.monotonic() < deadline, f"{key}: {seen} of {beats} beats within {timeout}s"
        left = connection.pttl(key)  # -2: no key (yet)
        if last is not None and left > last:
            seen += 1
        last = left if left >= 0 else None
        time.sleep(POLL_SECONDS / 4)


@pytest.fixture(scope="module")
def twins(server: LiveServer, trainers, train_examples, tiny: str) -> list[dict]:
    """Two jobs for model "twin" sent at once: the finished job records. Each fine-tunes the tiny model
    for ~3 s, so that the one trainer cannot finish the first before the other trainer takes the second."""
    with server.client() as client:
        options = fine_tuning_lasting(client, tiny, train_examples, 3)
        job_ids = [train(client, "twin", train_examples, base_model=tiny, **options) for _ in range(2)]
        return [wait_for_job(client, job_id, {"completed", "failed"}) for job_id in job_ids]


def test_two_jobs_for_one_model_train_at_once_as_two_versions(server: LiveServer, twins: list[dict]) -> None:
    finished = twins
    with server.client() as client:
        assert [job["status"] for job in finished] == ["completed", "completed"], finished
        start = [datetime.fromisoformat(job["started_at"]) for job in finished]
        end = [datetime.fromisoformat(job["finished_at"]) for job in finished]
        assert start[0] < end[1] and start[1] < end[0], "the two jobs did not run at the same time"

        versions = store_versions(server, "twin")
        assert sorted(versions) == sorted(f"twin:{job['model_version']}" for job in finished)
        served = client.get("/v1/models/twin").json()
        assert f"twin:{served['model_version']}" == versions[0]  # the one registered last
        response = client.post("/v1/predict", json={"model_name": "twin", "texts": ["where is my card?"]})
        assert response.status_code == 200, response.text


def test_trainers_run_on_their_own_serve_their_metrics(trainers, twins: list[dict], metrics_ports: list[int]) -> None:
    # One job of the twins ran on each trainer.
    scraped = [httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text for port in metrics_ports]
    assert sum(metric(text, "fewshot_training_jobs_finished_total", outcome="completed") for text in scraped) == 2
    assert sum(metric(text, "fewshot_training_duration_seconds_count") for text in scraped) == 2


def test_a_job_is_failed_when_its_trainer_dies_never_because_another_trainer_starts(
        server: LiveServer, trainers, trainer_factory, queue_url: str, train_examples, tiny: str) -> None:
    records = RedisJobStore(queue_url)
    with server.client() as client:
        job_id = train(client, "orphaned", train_examples, **LONG_FINE_TUNING)  # minutes on any hardware
        wait_for_job(client, job_id, {"running"}, timeout=120)
        worker = records.get(job_id).worker
        victim = trainers[int(worker.rsplit(":", 1)[1])]

        # A new trainer starts (its start-up reconciles the queue), then beats 4 more times: each beat
        # after the first has looked for running jobs of dead trainers (3 looks at least).
        newcomer = trainer_factory(server, "trainer-3").wait_until_consuming()
        wait_for_beats(queue_url, newcomer, beats=4)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        job = wait_for_job(client, job_id, {"failed", "completed"}, timeout=HEARTBEAT_TTL_SECONDS + 90)
        assert job["status"] == "failed" and job["error"] == DIED_WHILE_RUNNING
        # Declared dead after its heartbeat expired, by a surviving trainer's next beat: within the ttl
        # and a generous bound for a busy machine.
        assert time.monotonic() - killed_at < HEARTBEAT_TTL_SECONDS + 60
        assert client.get("/v1/models/orphaned").status_code == 404
        assert store_versions(server, "orphaned") == []

        after = train(client, "after-death", train_examples[:16], iterations=1, base_model=tiny)
        assert wait_for_job(client, after, {"completed", "failed"})["status"] == "completed"


def test_a_disk_error_while_saving_fails_the_job_and_the_previous_version_keeps_serving(
        server: LiveServer, trainers, twins: list[dict], trainer_factory, train_examples) -> None:
    with server.client() as client:
        served = client.get("/v1/models/twin").json()
        versions_before = store_versions(server, "twin")
        server.stop_trainers()  # from here on, only a trainer whose disk is "full"
        trainer_factory(server, "small-disk", max_file_bytes=20_000_000).wait_until_consuming()  # weights: 90 MB

        # Head only: no fine-tuning, yet the version's body is written in full (MiniLM's weights: 90 MB).
        job = wait_for_job(client, train(client, "twin", train_examples, strategy="head"), {"completed", "failed"})
        assert job["status"] == "failed", job
        assert "File too large" in job["error"], job["error"]
        assert client.get("/v1/models/twin").json() == served
        assert store_versions(server, "twin") == versions_before
        assert version_directories(server, "twin") == sorted(versions_before)  # nothing half-written on disk
        response = client.post("/v1/predict", json={"model_name": "twin", "texts": ["where is my card?"]})
        assert response.status_code == 200, response.text


def test_trainer_health_check_follows_this_hosts_heartbeats(server: LiveServer, trainers, fresh_redis_database) -> None:
    def health(redis_url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "trainers.health"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=60, env={**server.env, "REDIS_URL": redis_url}, check=False)

    alive = health(server.env["REDIS_URL"])
    assert alive.returncode == 0 and alive.stdout.startswith("healthy: "), alive.stdout + alive.stderr
    assert f"{socket.gethostname()}:" in alive.stdout  # names this host's trainers

    silent = fresh_redis_database()  # a queue that only another machine's trainer beats into
    RedisJobStore(silent).beat("another-host:4242", ttl_seconds=60)
    others_only = health(silent)
    assert others_only.returncode == 1, others_only.stdout + others_only.stderr
    assert f"no live trainer heartbeat from {socket.gethostname()}" in others_only.stdout

    unreachable = health(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert unreachable.returncode == 1, unreachable.stdout + unreachable.stderr
    assert unreachable.stdout.startswith("unhealthy: cannot read heartbeats: ConnectionError"), unreachable.stdout
