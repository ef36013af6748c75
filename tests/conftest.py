from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures import read_examples
from tests.live_server import LiveServer


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
        server.stop()
