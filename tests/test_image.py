"""The CUDA image: `bentoml build` offline, then the Dockerfile and build context that
`bentoml containerize` would hand to Docker (BentoML produces them without an engine)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from fewshot.pages import description
from harness.docker_engine import COMPOSE_SETTINGS
from harness.live_server import PROJECT_ROOT


def load_renderer():
    """docker/render_dockerfile.py, which writes the repository's Dockerfile (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("render_dockerfile", PROJECT_ROOT / "docker" / "render_dockerfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


renderer = load_renderer()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution installing `requirements` brings in, as found in this environment."""
    seen: set[str] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        if canonical(requirement.name) in seen:
            continue
        seen.add(canonical(requirement.name))
        try:
            needs = metadata.distribution(requirement.name).requires or []
        except metadata.PackageNotFoundError:
            continue
        extras = requirement.extras or {""}
        for need in map(Requirement, needs):
            if need.marker is None or any(need.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(need)
    return seen


def modules_outside_the_build_stage() -> list[str]:
    """Top-level modules installed here that the Dockerfile's bento stage does not install: everything
    but the requirements minus the runtime-only ones, their dependencies, and pip's own tools."""
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    build_stage = dependency_closure([r for r in requirements
                                      if canonical(r.name) not in renderer.RUNTIME_ONLY_REQUIREMENTS])
    allowed = build_stage | {"pip", "setuptools", "wheel", "fewshot"}
    return sorted(module for module, distributions in metadata.packages_distributions().items()
                  if not any(canonical(d) in allowed for d in distributions))


# `bentoml build` as the Dockerfile's bento stage runs it: with only the build requirements importable.
BUILD_WITH_BUILD_REQUIREMENTS_ONLY = """
import sys
blocked = set(sys.argv[1].split(","))

class Blocked:  # raises what a missing module raises (anyio imports sniffio only if it is there)
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not installed in the Dockerfile's bento stage", name=name)

sys.meta_path.insert(0, Blocked)
try:
    import torch  # noqa: F401
    sys.exit("torch was importable: the blocker does not work")
except ImportError:
    pass
from bentoml_cli.cli import cli
cli(["build"])
"""

CONTAINERFILE = """
import json, os
import bentoml
from bentoml._internal.container import construct_containerfile

bento = bentoml.get("fewshot:latest")
with construct_containerfile(bento, enable_buildkit=True) as (context, dockerfile):
    files = sorted(os.path.relpath(os.path.join(d, f), context) for d, _, fs in os.walk(context) for f in fs)
    print(json.dumps({"dockerfile": open(os.path.join(context, dockerfile)).read(), "files": files, "doc": bento.doc,
                      "requirements": open(os.path.join(context, "env/python/requirements.txt")).read()}))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("bentoml-home")
    # Offline: any attempt to reach a package index (or anything else) fails through a dead proxy.
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_NO_INDEX": "1"}
    blocked = modules_outside_the_build_stage()
    assert {"torch", "setfit", "sentence_transformers", "transformers", "sklearn"} <= set(blocked)
    build = subprocess.run([sys.executable, "-c", BUILD_WITH_BUILD_REQUIREMENTS_ONLY, ",".join(blocked)],
                           cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # As `make image` runs containerize: BentoML 1.4.40 only resolves a Dockerfile template inside the
    # working directory (bentoml#5566), so its temporary build context must be made under it.
    (PROJECT_ROOT / "build").mkdir(exist_ok=True)
    made = subprocess.run([sys.executable, "-c", CONTAINERFILE], cwd=PROJECT_ROOT,
                          env={**env, "TMPDIR": str(PROJECT_ROOT / "build")},
                          capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    return json.loads(made.stdout.strip().splitlines()[-1])


def env_value(dockerfile: str, name: str) -> str | None:
    """The value `name` has at the end of the Dockerfile (the last ENV or ARG that sets it)."""
    values = re.findall(rf"\b{name}=([^\s\\]*)", dockerfile)
    return values[-1] if values else None


def test_the_base_is_a_build_argument_and_the_gpu_is_visible(image: dict) -> None:
    """A Debian Python base (torch's wheels carry CUDA; the host's toolkit brings the driver) that
    BASE_IMAGE replaces, and nothing BuildKit would pull besides it: no `# syntax` frontend image."""
    dockerfile = image["dockerfile"]
    assert re.findall(r"^FROM (.*)", dockerfile, flags=re.MULTILINE) == ["${BASE_IMAGE} AS base-container"]
    assert env_value(dockerfile, "BASE_IMAGE") == "python:3.11-slim"  # BentoML's for distro debian, Python 3.11
    assert dockerfile.index("ARG BASE_IMAGE=") < dockerfile.index("FROM ")
    assert "# syntax" not in dockerfile, dockerfile[:800]
    assert not re.search(r"^RUN .*apt-get", dockerfile, flags=re.MULTILINE)  # no compilers or curl: no need
    assert env_value(dockerfile, "NVIDIA_VISIBLE_DEVICES") == "all"
    assert env_value(dockerfile, "NVIDIA_DRIVER_CAPABILITIES") == "compute,utility"


def test_every_download_may_trust_a_ca_bundle_that_stays_out_of_the_image(image: dict) -> None:
    dockerfile = image["dockerfile"]
    runs = re.findall(r"^RUN ((?:.*\\\n)*.*)", dockerfile, flags=re.MULTILINE)
    downloads = [run for run in runs if re.search(r"pip install|uv pip install|install\.sh", run)]
    assert len(downloads) == 3, downloads  # uv itself, torch, the requirements
    for run in downloads:
        assert run.startswith("--mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle "), run
        assert "export PIP_CERT=/run/secrets/ca_bundle SSL_CERT_FILE=/run/secrets/ca_bundle" in run
    assert "ca_bundle" not in " ".join(run for run in runs if run not in downloads)
    assert not re.search(r"^(COPY|ADD|ENV|ARG).*(ca_bundle|ca-bundle|\.pem|\.crt)", dockerfile, flags=re.MULTILINE)


def test_torch_is_the_pinned_version_from_pypi_or_the_index_given(image: dict) -> None:
    dockerfile = image["dockerfile"]
    torch_step = dockerfile.index("grep -E '^torch==' ./env/python/requirements.txt")
    assert dockerfile.index("ARG TORCH_INDEX_URL=\n") < torch_step < dockerfile.index("install.sh")
    assert '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}' in dockerfile
    # the version the tests run (the Makefile installs the same line) is the one the image gets
    pins = [line for line in image["requirements"].splitlines() if line.startswith("torch")]
    assert pins == [f"torch=={metadata.version('torch').split('+')[0]}"], pins


def test_it_reports_its_health(image: dict) -> None:
    healthcheck = re.search(r"^HEALTHCHECK (.*)\n\s+CMD (.*)", image["dockerfile"], flags=re.MULTILINE)
    assert healthcheck is not None
    assert "/readyz" in healthcheck.group(2) and "BENTOML_PORT" in healthcheck.group(2)


def test_the_image_holds_the_code_and_its_dependencies(image: dict) -> None:
    files = set(image["files"])
    for path in ("src/service.py", "src/configuration.yaml", "src/fewshot/settings.py", "src/trainers/consumer.py",
                 "src/trainers/tasks.py", "env/docker/entrypoint.sh", "env/python/install.sh",
                 # the pages (fewshot/pages): HTML, the API description, the console's script and styles
                 "src/fewshot/pages/console.html", "src/fewshot/pages/docs.html", "src/fewshot/pages/description.md",
                 "src/fewshot/pages/assets/console.js", "src/fewshot/pages/assets/console.css"):
        assert path in files, path
    assert not any(path.startswith(("src/tests/", "src/bench/")) for path in files)
    requirements = image["requirements"]
    for package in ("bentoml==", "setfit==", "sentence-transformers==", "huey==", "redis", "torch"):
        assert package in requirements, package


def test_the_bentos_description_is_the_apis(image: dict) -> None:
    """One text: the bento's description (bentofile.yaml), the OpenAPI info and the docs page."""
    assert image["doc"].strip() == description()


def test_it_serves_on_port_8000_with_state_outside_the_code(image: dict) -> None:
    dockerfile = image["dockerfile"]
    assert re.findall(r"^EXPOSE (\d+)", dockerfile, flags=re.MULTILINE) == ["8000"]  # BentoML's says 3000
    assert env_value(dockerfile, "BENTOML_PORT") == "8000"
    assert env_value(dockerfile, "MODEL_PATH") == "/var/lib/fewshot"
    # The store on the state volume, not under the image's BentoML home, where the code is.
    assert env_value(dockerfile, "BENTOML_HOME") == "/var/lib/fewshot/bentoml"
    assert env_value(dockerfile, "BENTOML_CONFIG") == "/home/bentoml/bento/src/configuration.yaml"
    # owned by the runtime user and empty: anything under it is copied into a new volume once per container,
    # and compose's two containers raced the copies (issue 45); each process makes base-models/ at start
    assert "mkdir -p /var/lib/fewshot && chown -R bentoml:bentoml /var/lib/fewshot" in dockerfile
    assert not re.findall(r"/var/lib/fewshot/[^ \n]", dockerfile.split("ENV MODEL_PATH=/var/lib/fewshot")[-1]
                          .replace("/var/lib/fewshot/bentoml", "")), "the image ships files under the state mount"
    tail = dockerfile[dockerfile.rindex("mkdir -p /var/lib/fewshot"):]
    assert "USER bentoml" in tail  # the state directory belongs to the user the server runs as
    assert tail.strip().endswith('ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]')


def test_the_repository_dockerfile_is_bentomls_with_the_bento_built_in_a_first_stage(image: dict) -> None:
    # What `docker compose up --build` and Coolify build: must not drift from what containerize builds.
    expected = renderer.repository_dockerfile(image["dockerfile"])
    assert (PROJECT_ROOT / "Dockerfile").read_text() == expected, "Dockerfile is stale: run `make dockerfile`"
    instructions = [line for line in expected.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions[0] == "ARG BASE_IMAGE=python:3.11-slim"  # before every FROM, so that all may use it
    stages = re.findall(r"^FROM (.*)", expected, flags=re.MULTILINE)
    assert stages == ["scratch AS ca-bundle", "${BASE_IMAGE} AS bento", "${BASE_IMAGE} AS base-container"]
    # Compose passes no secrets: the bundle is a context file, mounted (never copied) where the secret was.
    assert "--mount=type=secret" not in expected
    ca_stage = expected[expected.index("FROM scratch AS ca-bundle"):expected.index("FROM ${BASE_IMAGE} AS bento")]
    assert f"ARG CA_BUNDLE={renderer.NO_CA_BUNDLE}" in ca_stage and "COPY ${CA_BUNDLE} /ca-bundle.pem" in ca_stage
    assert (PROJECT_ROOT / renderer.NO_CA_BUNDLE).read_bytes() == b""  # an empty bundle: the base's own CAs
    mounts = re.findall(r"^RUN (--mount=type=bind,from=ca-bundle,source=/ca-bundle.pem,target=/run/secrets/ca_bundle)",
                        expected, flags=re.MULTILINE)
    assert len(mounts) == 4  # the bento stage's pip, then uv, torch and the requirements
    # After the bento stage nothing is read from the build context: the bento comes from it.
    final_stage = expected[expected.index("AS base-container"):]
    assert all("--from=" in line for line in re.findall(r"^COPY .*", final_stage, flags=re.MULTILINE))


def test_the_docker_build_context_leaves_out_local_state() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".git", "build", "state"):
        assert path in ignored, path
    # ca-bundle.pem: where compose users put CA_BUNDLE (compose builds see only the context)
    for needed in ("docker", "requirements.txt", "service.py", "fewshot", "trainers", "bentofile.yaml",
                   "ca-bundle.pem"):
        assert needed not in ignored, needed


def compose_commands() -> list[list[str]]:
    """Debian's docker-compose 1.29 (`make test` installs it) and compose v2 where installed: the file must
    suit both."""
    commands = [["docker-compose"]]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        commands.append([docker, "compose"])
    return commands


def compose_config(*arguments: str, **env: str) -> list[dict]:
    """`config` by each compose command: validated, resolved."""
    base = {key: value for key, value in os.environ.items() if key not in COMPOSE_SETTINGS}
    configs = []
    for command in compose_commands():
        rendered = subprocess.run([*command, *arguments, "config"], cwd=PROJECT_ROOT, env={**base, **env},
                                  capture_output=True, text=True, timeout=60, check=False)
        assert rendered.returncode == 0, f"{command}: {rendered.stderr}"
        configs.append(yaml.safe_load(rendered.stdout))
    return configs


def test_the_compose_file_is_valid_and_wires_what_the_readme_says() -> None:
    for config in compose_config(API_KEY="k", HF_TOKEN="t"):
        # started only with its profile (compose v2 leaves it out; 1.29 lists it with its profile)
        assert config["services"].get("redis", {"profiles": ["redis"]})["profiles"] == ["redis"]
        api, trainer = config["services"]["api"], config["services"]["trainer"]
        assert [(str(p["published"]), int(p["target"])) for p in api["ports"]] == [("8000", 8000)]
        for service in (api, trainer):
            # Built from this repository (docker compose up --build, Coolify), tagged as the image named.
            build = service["build"]
            assert Path(build["context"]) == PROJECT_ROOT and build["dockerfile"] == "Dockerfile"
            # the Dockerfile's own defaults (ARG lines), so that an unset variable changes nothing
            dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
            for name, value in build["args"].items():
                assert f"ARG {name}={value}\n" in dockerfile, (name, value)
            assert service["image"] == "fewshot:latest"
            environment = service["environment"]
            assert environment["MODEL_PATH"] == "/var/lib/fewshot"
            assert environment["BENTOML_HOME"] == "/var/lib/fewshot/bentoml"  # on the volume, not over the code
            assert environment["API_KEY"] == "k" and environment["HF_TOKEN"] == "t"
            assert environment["NVIDIA_VISIBLE_DEVICES"] == "all"
            assert [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]] == \
                ["/var/lib/fewshot"]
            assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
            assert service["restart"] == "unless-stopped"
        assert api["environment"]["EMBEDDED_TRAINER"] == "false"
        assert "healthcheck" not in api  # the image's HEALTHCHECK (/readyz)
        assert trainer["working_dir"] == "/home/bentoml/bento/src"
        assert trainer["command"] == ["python", "-m", "trainers.consumer"] and "entrypoint" not in trainer
        assert trainer["healthcheck"]["test"] == ["CMD", "python", "-m", "trainers.health"]
        assert trainer["environment"]["TRAINER_METRICS_PORT"] == "9100" and trainer["expose"] == ["9100"]


def test_build_settings_and_the_device_come_from_the_environment() -> None:
    env = {"BASE_IMAGE": "debian-python:3.11", "CA_BUNDLE": "ca-bundle.pem", "TORCH_INDEX_URL": "https://example.org/whl",
           "FEWSHOT_DEVICE": "cpu", "FEWSHOT_IMAGE": "registry.example.org/fewshot:1"}
    for config in compose_config(**env):
        for service in (config["services"]["api"], config["services"]["trainer"]):
            assert service["build"]["args"] == {key: env[key] for key in ("BASE_IMAGE", "CA_BUNDLE", "TORCH_INDEX_URL")}
            assert service["image"] == "registry.example.org/fewshot:1"
            assert "deploy" not in service  # no GPU reserved: runs where the engine has no NVIDIA runtime


def test_the_redis_profile_adds_a_persistent_redis() -> None:
    for config in compose_config("--profile", "redis", REDIS_URL="redis://redis:6379/0"):
        redis = config["services"]["redis"]
        assert redis["profiles"] == ["redis"]
        assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
        assert [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in redis["volumes"]] == ["/data"]
        assert config["services"]["trainer"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_dockerfile_template_is_the_one_bentofile_names() -> None:
    assert Path(PROJECT_ROOT / "docker" / "Dockerfile.template").is_file()
    assert "dockerfile_template: \"./docker/Dockerfile.template\"" in (PROJECT_ROOT / "bentofile.yaml").read_text()
