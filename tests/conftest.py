from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import LiveServer

DATA = Path(__file__).parent / "data"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def read_examples(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as handle:
        return [{"text": row["text"], "label": row["label"]} for row in csv.DictReader(handle)]


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
