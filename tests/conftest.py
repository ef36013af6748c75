from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.modernbert_standin import make_modernbert_standin
from bench.tiny_model import make_tiny_model
from fewshot.records.examples import ExampleStore, RedisExampleStore, SqliteExampleStore
from fewshot.settings import get_settings
from harness.docker_engine import DockerEngine, DockerUnavailable, without_docker
from harness.fixtures import read_examples
from harness.live_server import LiveServer, TrainerProcess
from harness.redis_server import RedisServer


@pytest.fixture(scope="session")
def train_examples() -> list[dict[str, str]]:
    return read_examples("banking77_train_4labels.csv")


@pytest.fixture(scope="session")
def test_examples() -> list[dict[str, str]]:
    return read_examples("banking77_test_4labels.csv")


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], str]:
    """A base model for tests where the label is not the point (load, shapes, lifecycles): the bench's tiny
    random-weight model (2 layers, hidden size 32), made once and copied into a server's local model
    directory on request; it trains and serves in a fraction of MiniLM's time and its labels are noise."""
    source = make_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")

    def place(model_dir: Path) -> str:
        """Copy it into `model_dir` (a server's LOCAL_MODEL_DIRS, by default its MODEL_PATH/base-models);
        the path to send as `base_model`."""
        target = model_dir / "tiny"
        if not target.exists():
            shutil.copytree(source, target)
        return str(target)

    return place


STANDIN_LAYERS = 2
"""The default model's stand-in in tests: global attention in its first layer, local (128 tokens) in its second."""


@pytest.fixture(scope="session")
def modernbert_standin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], str]:
    """A base model of the default's architecture (Alibaba-NLP/gte-modernbert-base, ModernBERT) for tests of
    what that architecture does to our code: bench/modernbert_standin.py's random-weight stand-in, 2 layers
    deep (~49 M parameters, ~200 MB: the 50k-token embedding table is most of it), made once and copied
    into a model directory on request, as `tiny_base_model` is. Its labels are noise."""
    source = make_modernbert_standin(tmp_path_factory.mktemp("modernbert-standin") / "gte-modernbert-standin",
                                     layers=STANDIN_LAYERS)

    def place(model_dir: Path) -> str:
        """Copy it into `model_dir` (a server's LOCAL_MODEL_DIRS, or any directory); its path there."""
        target = model_dir / source.name
        if not target.exists():
            shutil.copytree(source, target)
        return str(target)

    return place


@pytest.fixture(scope="module")
def module_model_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MODEL_PATH for in-process tests of one module (exports go to MODEL_PATH/backends): a directory of
    the module's own, the settings read again on entry and on exit."""
    path = tmp_path_factory.mktemp("model-path")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_PATH", str(path))
        get_settings.cache_clear()
        yield path
    get_settings.cache_clear()


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
              module: str = "trainers.consumer", **env: str) -> TrainerProcess:
        trainer = TrainerProcess(server, name, env, max_file_bytes=max_file_bytes, module=module).start()
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


MEASURED: list[str] = []
"""Lines the tests measured (build times, image sizes, times to ready), in the process that ran them."""
REPORTED: list[str] = []
"""Those lines as they reach the process that prints the run's end: each travels in the report of the
test during which it was measured (a `user_properties` entry), as pytest-xdist's workers send theirs."""


@pytest.fixture(scope="session")
def measured() -> Callable[[str], None]:
    """Report a measurement in the run's output (pytest hides a passing test's own prints)."""
    return MEASURED.append


IMAGE_TESTS = ("tests/test_e2e_image.py", "tests/test_e2e_compose.py")
"""Build and run the image (Docker): reported apart, as their time is the image build's, not the service's."""
DOCKER_GROUP = (*IMAGE_TESTS, "tests/test_image.py")
"""Modules that run in one xdist worker, one after another: they share the session's Docker engine (started here
when none runs) and build the image in the working tree's build/."""


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`make test` runs the modules in two processes (pytest-xdist, `--dist loadfile`): a module's tests stay
    in one process, as its module-scoped servers do, and the Docker modules are one unit. Not with
    `--dist loadgroup` and marks: on pytest 9 that groups nothing, silently (pytest-xdist#1386, open)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class DockerModulesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return "docker" if module in DOCKER_GROUP else module

    return DockerModulesTogether(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    report.user_properties.extend(("measured", line) for line in MEASURED)
    MEASURED.clear()
    return report


SPANS_BY_PART: dict[str, list[float]] = {}
"""Per part: [first start, last stop, seconds of its tests' setup, call and teardown summed]."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    REPORTED.extend(line for key, line in report.user_properties if key == "measured")
    part = "image and compose" if report.nodeid.startswith(IMAGE_TESTS) else "the rest"
    span = SPANS_BY_PART.setdefault(part, [report.start, report.stop, 0.0])
    span[0], span[1], span[2] = min(span[0], report.start), max(span[1], report.stop), span[2] + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORTED:
        terminalreporter.section("measured")
        for line in REPORTED:
            terminalreporter.write_line(line)
    if SPANS_BY_PART:
        terminalreporter.section("time by part (its first test's start to its last test's end; the time of "
                                 "its tests summed)")
        for part, (first, last, summed) in sorted(SPANS_BY_PART.items()):
            terminalreporter.write_line(f"{part}: {(last - first) / 60:.1f} min from first to last; "
                                        f"{summed / 60:.1f} min of tests")


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory, measured) -> Iterator[DockerEngine]:
    """A Docker engine (started here when none runs) with the base images present; the image tests
    skip, saying why, where there is none (fail, where REQUIRE_DOCKER=1: `.ci/run`)."""
    engine, unavailable = None, None
    try:
        engine = DockerEngine.start(tmp_path_factory.mktemp("docker"))
        engine.ensure_base_images()
    except DockerUnavailable as reason:
        if engine is not None:
            engine.close()
        unavailable = str(reason)
    if unavailable is not None or engine is None:  # skipped or failed outside the except: no chained traceback
        without_docker(f"no Docker engine: {unavailable}")
    measured(f"docker engine: {'; '.join(engine.log)}")
    yield engine
    engine.close()


@pytest.fixture(params=["sqlite", "redis"])
def open_example_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ExampleStore]:
    """Opens the same example store again on each call, as another process would: SQLite, then Redis."""
    if request.param == "sqlite":
        return lambda: SqliteExampleStore(tmp_path / "jobs.db")
    url = request.getfixturevalue("redis_url")
    prefix = f"test-{uuid.uuid4().hex}"
    return lambda: RedisExampleStore(url, prefix=prefix)
