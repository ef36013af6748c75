"""A Docker engine for the image tests: found, or started (`dockerd`, as root) when none answers; the
public base images present (pulled, or stand-ins made from Debian's packages where no registry answers);
containers and compose projects driven through the real `docker` and compose command lines.

Nothing here fakes the engine: when it cannot be had, `DockerUnavailable` says why and the tests skip
(`without_docker`), or fail where REQUIRE_DOCKER=1 (`.ci/run` sets it: CI must build and run the image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from harness.live_server import PROJECT_ROOT

ENGINE_START_SECONDS = 60
# The public images the Dockerfile and the compose file start from, and the stand-in kind of each.
BASE_IMAGES = {"python:3.11-slim": "python", "redis:7": "redis"}
# What the compose file reads from the environment that a developer's shell may hold: tests give their
# own values or none.
COMPOSE_SETTINGS = ("API_KEY", "HF_TOKEN", "HF_HUB_OFFLINE", "REDIS_URL", "DEFAULT_BASE_MODEL", "PORT", "BASE_IMAGE",
                    "CA_BUNDLE", "TORCH_INDEX_URL", "FEWSHOT_IMAGE", "FEWSHOT_DEVICE", "COMPOSE_FILE",
                    "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME")
# The machine's trust store: the CA bundle given to builds (behind a TLS-inspecting proxy the build's
# downloads need it, elsewhere it is what they trust anyway).
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class DockerUnavailable(Exception):
    """No Docker engine could be found or started here; the message says why."""


def docker_required() -> bool:
    """REQUIRE_DOCKER=1 (set by `.ci/run`): the image and compose tests must run; without Docker they fail."""
    return os.environ.get("REQUIRE_DOCKER", "").strip() not in ("", "0")


def without_docker(reason: str) -> NoReturn:
    """What a test does where Docker (the engine, a compose command) cannot be had: skip saying why, or
    fail saying why where REQUIRE_DOCKER=1 (a skip there would leave CI green with the image never built)."""
    if docker_required():
        pytest.fail(f"REQUIRE_DOCKER=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def docker_cli() -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise DockerUnavailable("no `docker` command (make test installs Debian's docker.io)")
    return binary


@dataclass
class DockerEngine:
    cli: str
    daemon: subprocess.Popen[bytes] | None = None
    """The `dockerd` these tests started (stopped again by `close`), or None: one was already running."""
    log: list[str] = field(default_factory=list)
    """What was done to have the engine and its base images, for the tests' output."""

    @classmethod
    def start(cls, state_dir: Path) -> DockerEngine:
        engine = cls(docker_cli())
        if engine.answers():
            engine.log.append(f"engine {engine.server_version()} was running")
            return engine
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailable("no engine answers and there is no `dockerd` to start (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise DockerUnavailable("no engine answers, and starting `dockerd` needs root")
        log = open(state_dir / "dockerd.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        engine.daemon = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ENGINE_START_SECONDS
        while not engine.answers():
            if engine.daemon.poll() is not None or time.monotonic() > deadline:
                engine.close()
                tail = (state_dir / "dockerd.log").read_text(errors="replace")[-1500:]
                raise DockerUnavailable(f"dockerd did not start within {ENGINE_START_SECONDS}s:\n{tail}")
            time.sleep(0.5)
        engine.log.append(f"started dockerd {engine.server_version()}")
        return engine

    def answers(self) -> bool:
        return subprocess.run([self.cli, "info"], capture_output=True, timeout=30, check=False).returncode == 0

    def server_version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()

    def docker(self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.cli, *args], capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **(env or {})}, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}"
                                 f"\n{done.stderr[-3000:]}")
        return done

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def ensure_base_images(self) -> None:
        """Each public base image, present, pulled or (no registry) a stand-in from Debian's packages."""
        for name, kind in BASE_IMAGES.items():
            if self.has_image(name):
                self.log.append(f"{name}: present")
                continue
            pulled = self.docker("pull", name, check=False, timeout=600)
            if pulled.returncode == 0:
                self.log.append(f"{name}: pulled")
                continue
            if os.geteuid() != 0 or shutil.which("debootstrap") is None:
                raise DockerUnavailable(f"{name} cannot be pulled ({pulled.stderr.strip()[-300:]}) and a stand-in "
                                        "needs root and debootstrap (make standin-images)")
            started = time.monotonic()
            made = subprocess.run([str(PROJECT_ROOT / "docker" / "standin-image.sh"), kind, name],
                                  capture_output=True, text=True, timeout=900, check=False,
                                  env={**os.environ, "DOCKER": self.cli})
            assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
            self.log.append(f"{name}: no registry ({pulled.stderr.strip().splitlines()[-1][-160:]}); stand-in made "
                            f"from Debian packages in {time.monotonic() - started:.0f}s")

    def image_size(self, name: str) -> int:
        return int(self.docker("image", "inspect", "--format", "{{.Size}}", name).stdout)

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        return state.get("Health", {}).get("Status", "none") if state["Running"] else f"exited {state['ExitCode']}"

    def wait_healthy(self, container: str, timeout: float = 300) -> float:
        """Seconds until the image's HEALTHCHECK says healthy; fails at once if the container exits."""
        started = time.monotonic()
        while (status := self.health(container)) != "healthy":
            assert not status.startswith("exited"), f"{container} {status}:\n{self.logs(container)[-4000:]}"
            assert time.monotonic() - started < timeout, f"{container} {status} after {timeout}s:\n" \
                                                         f"{self.logs(container)[-4000:]}"
            time.sleep(1)
        return time.monotonic() - started

    def logs(self, container: str) -> str:
        done = self.docker("logs", container, check=False)
        return done.stdout + done.stderr

    def processes(self, container: str) -> list[tuple[int, str]]:
        """(uid, command line) of every process in the container, as the host sees them."""
        rows = self.docker("top", container, "-eo", "pid,uid,args").stdout.splitlines()[1:]
        return [(int(row.split(None, 2)[1]), row.split(None, 2)[2]) for row in rows]

    def copy_into(self, source: Path, container: str, destination: str) -> None:
        self.docker("cp", str(source), f"{container}:{destination}")


def build_steps(output: str) -> str:
    """How many of a build's Dockerfile steps BuildKit took from its cache (its plain progress output)."""
    steps = set(re.findall(r"^#(\d+) \[[^\]]* \d+/\d+\]", output, flags=re.MULTILINE))
    cached = steps & set(re.findall(r"^#(\d+) CACHED$", output, flags=re.MULTILINE))
    kind = "warm" if cached == steps else "cold" if not cached else "partly cached"
    return f"{kind}: {len(cached)} of {len(steps)} steps cached"


def wait_ready(url: str, timeout: float = 300) -> float:
    """Seconds until `url`/readyz answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/readyz not 200 within {timeout}s")


@dataclass
class Compose:
    """One compose project of this repository's docker-compose.yml, run by `docker compose` (v2) or
    Debian's `docker-compose` 1.29 (which builds through the docker CLI only when told to)."""

    command: list[str]
    project: str
    env: dict[str, str]

    @classmethod
    def available(cls, project: str, env: dict[str, str]) -> list[Compose]:
        """Every compose command that works here, v2 first."""
        found = []
        docker = shutil.which("docker")
        if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
            found.append(cls([docker, "compose"], project, env))
        legacy = shutil.which("docker-compose")
        if legacy:
            found.append(cls([legacy], project, {**env, "DOCKER_BUILDKIT": "1", "COMPOSE_DOCKER_CLI_BUILD": "1"}))
        return found

    @property
    def name(self) -> str:
        """What runs it, as a reader of the test output wants to know: `docker compose 2.26.1`."""
        version = subprocess.run([*self.command, "version", "--short"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        return f"{' '.join([Path(self.command[0]).name, *self.command[1:]])} {version}"

    def __call__(self, *args: str, timeout: float = 1800, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.command, "--project-name", self.project, *args], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **self.env, **env})
        if done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        return done

    def container(self, engine: DockerEngine, service: str) -> str:
        """The id of the service's (one) container, found by compose's labels, as both versions set them."""
        ids = engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}",
                            "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]


def ca_bundle_in_context() -> Path | None:
    """The machine's trust store, copied to ./ca-bundle.pem (git-ignored): compose builds see only their
    context. A fixed name, so that the build's cache keys stay the same from run to run."""
    if not SYSTEM_CA_BUNDLE.is_file():
        return None
    copy = PROJECT_ROOT / "ca-bundle.pem"
    shutil.copyfile(SYSTEM_CA_BUNDLE, copy)
    return copy


@dataclass
class FreshUps:
    """What `first_ups_on_fresh_volumes` saw: how many first `up`s succeeded, and why the others failed."""

    tries: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> str:
        return f"{self.tries - len(self.failures)} of {self.tries}"


def first_ups_on_fresh_volumes(compose: Compose, engine: DockerEngine, tries: int, **env: str) -> FreshUps:
    """`up -d` of a new compose project (so a new, empty state volume) `tries` times, each taken `down -v`
    again: the first `up` a new user runs. One succeeds when compose exits 0 with the api and the trainer
    running, and the state directory owned by the image's user (1034), which each process writes."""
    seen = FreshUps()
    for attempt in range(tries):
        fresh = Compose(compose.command, f"{compose.project}-fresh{attempt}", {**compose.env, **env})
        seen.tries += 1
        try:
            fresh("up", "--detach", timeout=600)
            for service in ("api", "trainer"):
                container = fresh.container(engine, service)
                assert engine.inspect(container)["State"]["Running"], f"{service}: {engine.logs(container)[-2000:]}"
                owner = engine.docker("exec", container, "stat", "-c", "%u", "/var/lib/fewshot").stdout.strip()
                assert owner == "1034", f"{service}: /var/lib/fewshot is owned by uid {owner}"
        except AssertionError as failed:
            seen.failures.append(str(failed)[-600:])
        finally:
            fresh("down", "--volumes", "--timeout", "1", timeout=600)
    return seen

