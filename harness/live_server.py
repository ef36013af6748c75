"""A real `bentoml serve` of this project as a subprocess, for end-to-end tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from harness.fixtures import LONG_FINE_TUNING

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENTOML = [sys.executable, "-m", "bentoml"]  # the CLI of this interpreter, wherever its scripts live
START_TIMEOUT_SECONDS = 180
POLL_SECONDS = 0.1
"""How often the harness asks whether a server is ready or a job is done: each answer is a cheap read (a
health route, a job record), and the suite waits for hundreds of them (0.5 s cost ~0.25 s per wait)."""


@dataclass(frozen=True)
class Stopped:
    """How a stopped server went: the exit code of `bentoml serve` (None: still running after the
    timeout) and the processes of its tree still alive after the grace period."""

    code: int | None
    survivors: list[str]

    @property
    def clean(self) -> bool:
        return self.code == 0 and not self.survivors


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {process.pid}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`bentoml serve --port N` with its own MODEL_PATH and HOME; start, stop and restart it.

    As a user types it: no BENTOML_HOME, no BENTOML_CONFIG (the service applies configuration.yaml).
    """

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None, target: str | None = None) -> None:
        self.state_dir = state_dir
        self.model_path = state_dir / "model-path"
        self.home = state_dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir / "server.log"
        self._extra_env = env or {}
        self._target = [target] if target else []  # default: the service named in bentofile.yaml
        self.process: subprocess.Popen[bytes] | None = None
        self.max_file_bytes: int | None = None
        """Set by `restart`: writes past this size fail with EFBIG in every process of the server, as
        on a full disk."""
        self._tree: list[psutil.Process] = []
        self._log_sizes: dict[Path, int] = {}
        self.companions: set[int] = set()
        """Pids of trainers started beside it on their own (TrainerProcess), not part of it."""
        self.start_seconds: float | None = None
        """Seconds from `bentoml serve` to its first 200 from /readyz, at its latest start."""

    @property
    def env(self) -> dict[str, str]:
        unset = {"BENTOML_HOME", "BENTOML_CONFIG", "API_KEY", "REDIS_URL"}
        env = {k: v for k, v in os.environ.items() if k not in unset}
        env.update({
            "HOME": str(self.home),  # so that a write to the default ~/bentoml would show up here
            "MODEL_PATH": str(self.model_path),
            "HF_HUB_OFFLINE": "1",
            "BENTOML_DO_NOT_TRACK": "true",
            "MODEL_REFRESH_SECONDS": "0.5",
            # Torch unless a test or benchmark asks for another backend: the default on CPU exports every
            # newly loaded version first (MiniLM, 2 cores: 5-14 s), which dozens of versions across the
            # suite would pay for nothing. tests/test_e2e_backends.py runs every backend and AUTO.
            "INFERENCE_BACKEND": "TORCH",
        })
        env.update(self._extra_env)
        return env

    def start(self) -> LiveServer:
        # Logs are appended across restarts: what this start writes begins at these sizes.
        self._log_sizes = {path: path.stat().st_size for path in self.state_dir.glob("*.log")}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [*BENTOML, "serve", *self._target, "--port", str(self.port)], cwd=PROJECT_ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # setrlimit alone runs between fork and exec: safe with threads (PLW1509 warns of anything else)
            preexec_fn=_file_size_limit(self.max_file_bytes) if self.max_file_bytes else None,  # noqa: PLW1509
        )
        began = time.monotonic()
        deadline = began + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.start_seconds = time.monotonic() - began
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(POLL_SECONDS)
        self.stop()
        raise RuntimeError(f"server not ready in {START_TIMEOUT_SECONDS}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60, grace: float = 15) -> Stopped:
        """Signal the server, wait up to `timeout` for it to exit and `grace` more for its process tree
        (workers, the embedded trainer) to follow; report what exited how and what is still alive.

        Nothing is killed here, so a test can see a leftover process: `kill_leftovers` (called when
        the test module ends) cleans up after a server that did not stop cleanly.
        """
        if self.process is None:
            return Stopped(code=None, survivors=[])
        if self.process.poll() is not None:
            return Stopped(code=self.process.returncode, survivors=[])
        self._tree = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(sig)
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        _, alive = psutil.wait_procs(self._own_processes(), timeout=grace)
        if code is None:
            alive.append(psutil.Process(self.process.pid))
        return Stopped(code=code, survivors=[describe(process) for process in alive])

    def kill_leftovers(self) -> None:
        """SIGKILL whatever of this server's processes is still alive (test clean-up, never a check)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for process in self._own_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def _own_processes(self) -> list[psutil.Process]:
        """Its process tree as it was when stopped, and any other trainer of its MODEL_PATH (an orphan,
        a detached one); not the trainers a test started beside it (TrainerProcess: `companions`)."""
        if self.process is None:
            return []
        others = [p for p in self.consumer_processes() if p not in self._tree and p.pid not in self.companions]
        return [*self._tree, *others]

    def close(self) -> Stopped:
        """Stop, and clean up whatever did not stop (benchmarks, fixtures' teardown): never a check."""
        stopped = self.stop()
        self.kill_leftovers()
        return stopped

    def restart(self, max_file_bytes: int | None = None, **env: str) -> LiveServer:
        """Stop (cleanly: asserted) and start again, with `env` added to its environment and, when
        given, its file writes limited to `max_file_bytes` each."""
        stopped = self.stop()
        assert stopped.clean, f"the server did not stop cleanly before its restart: {stopped}"
        self._extra_env = {**self._extra_env, **env}
        self.max_file_bytes = max_file_bytes
        return self.start()

    def running_with(self, **env: str) -> LiveServer:
        """Restart with `env` unless the server already runs with exactly that (and no file size limit):
        for tests that need a setting, not a fresh process (a restart costs ~9 s here)."""
        if self.process is not None and self.process.poll() is None and self.max_file_bytes is None \
                and all(self._extra_env.get(key) == value for key, value in env.items()):
            return self
        return self.restart(**env)

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def logs_since_start(self) -> str:
        """What the server and the trainers beside it logged since its latest start (not a line of a
        run before a restart)."""
        parts = []
        for path in sorted(self.state_dir.glob("*.log")):
            with open(path, "rb") as log:
                log.seek(self._log_sizes.get(path, 0))
                parts.append(log.read().decode(errors="replace"))
        return "\n".join(parts)

    def all_logs(self) -> str:
        """The server's log and those of trainers started beside it (TrainerProcess)."""
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.state_dir.glob("*.log")))

    def stop_trainers(self, timeout: float = 60) -> None:
        """SIGTERM every trainer of this MODEL_PATH (embedded or beside it) and wait for each to exit."""
        for consumer in self.consumer_processes():
            consumer.terminate()
            consumer.wait(timeout)

    def workers(self, service_name: str) -> list[psutil.Process]:
        """The worker processes of one of its BentoML services (`fewshot`: the gateway, `fewshot-inference`)."""
        assert self.process is not None
        found = []
        for process in psutil.Process(self.process.pid).children(recursive=True):
            command = process.cmdline()
            if "--service-name" in command and command[command.index("--service-name") + 1] == service_name:
                found.append(process)
        return found

    def consumer_processes(self) -> list[psutil.Process]:
        """Trainer consumers (ours or orphans) serving this server's MODEL_PATH."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if "trainers.consumer" in " ".join(process.info["cmdline"] or []) and \
                        process.environ().get("MODEL_PATH") == str(self.model_path):
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found


class TrainerProcess:
    """`python -m trainers.consumer` (or `batches.consumer`, a batch worker) on its own, as on a separate
    trainer machine (REDIS_URL mode).

    It shares the server's environment (REDIS_URL, MODEL_PATH: the shared model store volume).
    """

    def __init__(self, server: LiveServer, name: str, env: dict[str, str] | None = None,
                 max_file_bytes: int | None = None, module: str = "trainers.consumer") -> None:
        self.server = server
        self.module = module
        self.env = {**server.env, **(env or {})}
        self.log_path = server.state_dir / f"{name}.log"
        self.max_file_bytes = max_file_bytes
        self.process: psutil.Popen | None = None


    def start(self) -> TrainerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = psutil.Popen([sys.executable, "-m", self.module], cwd=PROJECT_ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_file_size_limit(self.max_file_bytes) if self.max_file_bytes else None)
        self.server.companions.add(self.process.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_until_consuming(self, timeout: float = 120) -> TrainerProcess:
        deadline = time.monotonic() + timeout
        started = "trainer consumer started" if self.module == "trainers.consumer" else "batch worker started"
        while started not in self.log_path.read_text(errors="replace"):
            assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"trainer not consuming in {timeout}s"
            time.sleep(POLL_SECONDS)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except psutil.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _file_size_limit(max_bytes: int) -> Callable[[], None]:
    def limit() -> None:
        """In the child: writes past max_bytes fail with EFBIG (Python ignores SIGXFSZ), as on a full disk."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]  # in any order
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if (head == name or head.startswith(f"{name}{{")) and all(
                pair in head.removeprefix(name).strip("{}").split(",") for pair in wanted):
            return float(value)
    return 0.0


def wait_for_job(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"job {job_id} not {statuses} within {timeout}s: {job}")


def wait_for_fine_tuning(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    """Until the job has counted a fine-tuning step (it is inside its training loop), never past it: it must
    be pending or running at every read, this one included. The job as read then."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("pending", "running") and time.monotonic() < deadline, job
        if job["step"]:
            return job
        time.sleep(POLL_SECONDS)


def fine_tuning_lasting(client: httpx.Client, base_model: str, examples: list[dict], seconds: float) -> dict:
    """Training options whose fine-tuning lasts about `seconds` on this machine, whatever its speed: for
    a job a test must catch mid-training (a shutdown, a kill) and that must still finish soon after.

    The rate is measured here: a probe job of LONG_FINE_TUNING (one pair per step, thousands of steps) is
    timed over its first second of steps, then cancelled. A fixed count of steps was either too short to
    catch on a fast machine or minutes long on a slow one."""
    response = client.post("/v1/train", json={"model_name": "pace-probe", "base_model": base_model,
                                              "examples": examples, **LONG_FINE_TUNING})
    assert response.status_code == 202, response.text
    probe = response.json()["job_id"]

    def step() -> tuple[float, int]:
        job = client.get(f"/v1/jobs/{probe}").json()
        assert job["status"] in ("pending", "running"), job
        return time.monotonic(), job["step"] or 0

    first = (time.monotonic(), wait_for_fine_tuning(client, probe)["step"])
    deadline = time.monotonic() + 120
    while (last := step())[1] - first[1] < 20 or last[0] - first[0] < 1:
        assert time.monotonic() < deadline, "the probe job stopped stepping"
        time.sleep(POLL_SECONDS)
    assert client.post(f"/v1/jobs/{probe}/cancel").status_code == 200
    wait_for_job(client, probe, {"cancelled", "failed", "completed"})
    steps_per_second = (last[1] - first[1]) / (last[0] - first[0])
    pairs_per_iteration = 2 * len(examples)  # SetFit: two pairs per example per iteration; one pair per step
    iterations = max(1, round(steps_per_second * seconds / pairs_per_iteration))
    return {"num_iterations": iterations, "batch_size": 1}


def wait_for_log(server: LiveServer, text: str, timeout: float = 60) -> None:
    """Until `text` appears in the server's log or a trainer's beside it, since the server's latest start."""
    deadline = time.monotonic() + timeout
    while text not in server.logs_since_start():
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
        time.sleep(0.2)


def listed_versions(client: httpx.Client, name: str) -> list[dict]:
    """The versions GET /v1/models lists for model `name`, newest first."""
    response = client.get("/v1/models")
    assert response.status_code == 200, response.text
    return next(m["versions"] for m in response.json()["models"] if m["model_name"] == name)


def version_directories(server: LiveServer, name: str) -> list[str]:
    """Tags of every directory of model `name` on disk in the store, complete or not (the store's
    own listing skips a directory without model.yaml: a half-written copy)."""
    model_dir = server.model_path / "bentoml" / "models" / name
    return sorted(f"{name}:{path.name}" for path in model_dir.iterdir() if path.is_dir()) if model_dir.exists() else []
