"""End to end: the embedded trainer across shutdowns and crashes. Nothing is lost, nothing doubles."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import psutil
import pytest

from fewshot.records.jobs import SqliteJobStore
from harness.fixtures import LONG_FINE_TUNING
from harness.live_server import LiveServer, fine_tuning_lasting, wait_for_fine_tuning, wait_for_job
from trainers.tasks import DIED_WHILE_RUNNING

pytestmark = pytest.mark.e2e

RESTART_DELAY_SECONDS = 10
"""The supervisor's pause before it restarts a trainer that exited (TRAINER_RESTART_DELAY_SECONDS; 2 by
default): the not-ready window the readiness test must see, wider than one /readyz poll on a busy machine."""


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("lifecycle", TRAINER_RESTART_DELAY_SECONDS=str(RESTART_DELAY_SECONDS))


@pytest.fixture(scope="module")
def base_model(server: LiveServer, tiny_base_model) -> str:
    """What the model is does not matter here: whether jobs and workers survive shutdowns and kills does."""
    return tiny_base_model(server.model_path / "base-models")


def start_slow_job(client: httpx.Client, examples: list[dict], model_name: str, base_model: str,
                   options: dict) -> str:
    """Start a job and return once it is inside its fine-tuning loop."""
    response = client.post("/v1/train", json={
        "model_name": model_name, "base_model": base_model, "examples": examples, **options,
    })
    assert response.status_code == 202, response.text
    job = wait_for_fine_tuning(client, response.json()["job_id"])
    job_id = job["job_id"]
    assert 0 < job["progress"] < 1 and 0 < job["step"] < job["total_steps"], job
    return job_id


def only_consumer(server: LiveServer, timeout: float = 60) -> psutil.Process:
    """The one trainer consumer of this state directory, once exactly one is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumers = server.consumer_processes()
        if len(consumers) == 1:
            return consumers[0]
        time.sleep(0.1)
    raise AssertionError(f"expected one consumer, found {server.consumer_processes()}")


def test_job_running_at_shutdown_is_requeued_and_completes_after_restart(server: LiveServer, train_examples,
                                                                        base_model: str):
    with server.client() as client:
        # The stop lands within a second of the job's first step: 10 s of fine-tuning still catches it there
        # if the probe's pace was measured at a busier moment than the job's, and several times too slow.
        options = fine_tuning_lasting(client, base_model, train_examples, seconds=10)
        job_id = start_slow_job(client, train_examples, "requeued", base_model, options)
    stopped = server.stop()
    assert stopped.survivors == [] and stopped.code == 0, stopped  # the trainer exited by itself

    record = SqliteJobStore(server.model_path / "queue" / "jobs.db").get(job_id)
    assert record is not None
    assert record.status == "pending"
    assert "shut down" in record.note
    assert (record.progress, record.step, record.total_steps) == (None, None, None)  # starts again from 0

    server.start()
    with server.client() as client:
        job = wait_for_job(client, job_id, {"completed", "failed"})
        assert job["status"] == "completed", job
        assert job["attempts"] == 2
        assert "shut down" in job["note"]
        assert client.get("/v1/models/requeued").json()["model_version"] == job["model_version"]


def test_killed_trainer_fails_its_job_comes_back_and_trains_the_next(server: LiveServer, train_examples,
                                                                    base_model: str):
    with server.client() as client:
        job_id = start_slow_job(client, train_examples, "killed", base_model, LONG_FINE_TUNING)
        victim = only_consumer(server)
        victim.send_signal(signal.SIGKILL)

        job = wait_for_job(client, job_id, {"completed", "failed"}, timeout=120)
        assert job["status"] == "failed"
        assert job["error"] == DIED_WHILE_RUNNING
        assert client.get("/v1/models/killed").status_code == 404  # no partial model
        assert only_consumer(server).pid != victim.pid  # supervised: a new trainer took over

        response = client.post("/v1/train", json={
            "model_name": "after-kill", "base_model": base_model, "examples": train_examples, "num_iterations": 1,
        })
        assert wait_for_job(client, response.json()["job_id"], {"completed", "failed"})["status"] == "completed"


def test_killed_server_worker_never_leaves_two_trainers(server: LiveServer) -> None:
    consumer = only_consumer(server)
    starter = consumer.parent()
    assert starter is not None and "fewshot-trainer" in " ".join(starter.cmdline())
    starter.send_signal(signal.SIGKILL)  # BentoML restarts the worker, which starts a new consumer

    consumer.wait(timeout=60)  # the orphan follows its parent (parent-death signal)
    replacement = only_consumer(server)
    assert replacement.pid != consumer.pid
    assert replacement.parent().pid != starter.pid
    with server.client() as client:
        assert client.get("/health").status_code == 200


def wait_for_readiness(server: LiveServer, ready: bool, timeout: float) -> float:
    """Poll /readyz until it says `ready`; the seconds that took. A poll that gets no answer (a busy
    machine: it timed out) says neither, and the next is sent."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if (httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200) == ready:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/readyz not {'ready' if ready else 'not-ready'} within {timeout}s")


def test_readyz_is_not_ready_while_the_trainer_is_down(server: LiveServer) -> None:
    wait_for_readiness(server, ready=True, timeout=60)
    victim = only_consumer(server)
    victim.send_signal(signal.SIGKILL)
    # Not ready from the kill until the supervisor restarts it, RESTART_DELAY_SECONDS later: seen well within.
    wait_for_readiness(server, ready=False, timeout=RESTART_DELAY_SECONDS)
    wait_for_readiness(server, ready=True, timeout=120)
    assert only_consumer(server).pid != victim.pid


def inference_worker(server: LiveServer) -> psutil.Process:
    (worker,) = server.workers("fewshot-inference")
    return worker


def test_a_killed_inference_worker_is_restarted_and_serves_again(server: LiveServer, train_examples,
                                                                base_model: str) -> None:
    with server.client() as client:
        job_id = client.post("/v1/train", json={"model_name": "revived", "base_model": base_model,
                                                "examples": train_examples[:16], "num_iterations": 1}).json()["job_id"]
        assert wait_for_job(client, job_id, {"completed", "failed"})["status"] == "completed"
        request = {"model_name": "revived", "texts": ["I still have not received my new card"]}
        before = client.post("/v1/predict", json=request).json()

        victim = inference_worker(server)
        # Clients sending without pause from before the kill until it serves again: at the kill, each
        # has a request in flight (64 texts each).
        busy = {"model_name": "revived", "texts": [e["text"] for e in train_examples] * 2}
        sent: list[tuple[float, float, httpx.Response]] = []  # (sent at, answered at, response)
        stop = threading.Event()

        def keep_sending() -> None:
            with server.client() as sender:
                while not stop.is_set():
                    started = time.monotonic()
                    response = sender.post("/v1/predict", json=busy)
                    sent.append((started, time.monotonic(), response))

        senders = [threading.Thread(target=keep_sending) for _ in range(4)]
        for sender in senders:
            sender.start()
        try:
            while len(sent) < 8:  # every sender is in its loop
                time.sleep(0.05)
            # Frozen first: to the gateway, a worker that answers nothing, as a killed one is until its
            # replacement is up. That took ~2 s here, the readiness check's own deadline, so a /readyz poll
            # after the kill alone could miss it; frozen, it is not ready for as long as the test needs.
            victim.send_signal(signal.SIGSTOP)
            try:
                wait_for_readiness(server, ready=False, timeout=60)
            finally:
                killed_at = time.monotonic()
                victim.send_signal(signal.SIGKILL)
            wait_for_readiness(server, ready=True, timeout=120)
        finally:
            stop.set()
            for sender in senders:
                sender.join()
        in_flight = [response for started, answered, response in sent if started < killed_at < answered]
        assert in_flight, "no request was in flight when the inference worker was killed"
        # Each one answered, or refused with a clear "try again": none failed with a 500 or hung.
        assert all(r.status_code in {200, 503} for _, _, r in sent), \
            [(r.status_code, r.text) for _, _, r in sent if r.status_code not in {200, 503}]
        assert all(set(r.json()) == {"error", "detail"} for _, _, r in sent if r.status_code == 503)
        assert inference_worker(server).pid != victim.pid  # BentoML started a new one
        after = client.post("/v1/predict", json=request)
        assert after.status_code == 200, after.text
        assert after.json() == before
