from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from harness.fixtures import read_examples
from harness.live_server import LiveServer, TrainerProcess
from harness.redis_server import RedisServer


@pytest.fixture(scope="session")
def train_examples() -> list[dict[str, str]]:
    return read_examples("banking77_train_4labels.csv")


@pytest.fixture(scope="session")
def test_examples() -> list[dict[str, str]]:
    return read_examples("banking77_test_4labels.csv")


@pytest.fixture(scope="module")
def live_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start servers for one test module; all are stopped when the module ends."""
    started: list[LiveServer] = []

    def start(name: str = "server", **env: str) -> LiveServer:
        server = LiveServer(tmp_path_factory.mktemp(name), env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def trainer_factory() -> Iterator:
    """Start separate trainer processes for one test module; all are stopped when it ends."""
    started: list[TrainerProcess] = []

    def start(server: LiveServer, name: str = "trainer", max_file_bytes: int | None = None,
              **env: str) -> TrainerProcess:
        trainer = TrainerProcess(server, name, env, max_file_bytes=max_file_bytes).start()
        started.append(trainer)
        return trainer

    yield start
    for trainer in started:
        trainer.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for the whole run; tests keep apart by key prefix or database."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def fresh_redis_database(redis_url: str) -> Callable[[], str]:
    """A URL to a Redis database of its own (1, 2, ...; database 0 is shared by key prefix), emptied."""
    import redis

    numbers = itertools.count(1)

    def fresh() -> str:
        url = redis_url.rsplit("/", 1)[0] + f"/{next(numbers)}"
        redis.Redis.from_url(url).flushdb()
        return url

    return fresh
