"""The CUDA image: `bentoml build` offline, then the Dockerfile and build context that
`bentoml containerize` would hand to Docker (BentoML produces them without an engine)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from fewshot.pages import description
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


def test_the_image_is_cuda_based_and_sees_the_gpu(image: dict) -> None:
    dockerfile = image["dockerfile"]
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-ubuntu\S* ", dockerfile, flags=re.MULTILINE), dockerfile[:500]
    assert env_value(dockerfile, "NVIDIA_VISIBLE_DEVICES") == "all"  # BentoML's own sets it empty


def test_python_can_install_packages(image: dict) -> None:
    dockerfile = image["dockerfile"]
    uv_copied = dockerfile.index("COPY --from=ghcr.io/astral-sh/uv:")
    # BentoML's step that would need pip is skipped when uv is present, so uv must come first.
    assert uv_copied < dockerfile.index("command -v uv")
    assert uv_copied < dockerfile.index("uv venv")
    assert "install.sh" in dockerfile


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
    assert "mkdir -p /var/lib/fewshot && chown -R bentoml:bentoml /var/lib/fewshot" in dockerfile
    tail = dockerfile[dockerfile.rindex("mkdir -p /var/lib/fewshot"):]
    assert "USER bentoml" in tail  # the state directory belongs to the user the server runs as
    assert tail.strip().endswith('ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]')


def test_the_repository_dockerfile_is_bentomls_with_the_bento_built_in_a_first_stage(image: dict) -> None:
    # What `docker compose up --build` and Coolify build: must not drift from what containerize builds.
    expected = renderer.repository_dockerfile(image["dockerfile"])
    assert (PROJECT_ROOT / "Dockerfile").read_text() == expected, "Dockerfile is stale: run `make dockerfile`"
    stages = re.findall(r"^FROM (\S+)", expected, flags=re.MULTILINE)
    assert stages[0] == "python:3.11-slim" and stages[1].startswith("nvidia/cuda:")
    assert expected.startswith("# 1.2.1") and "# syntax = docker/dockerfile:" in expected.split("\n\n")[0]
    # After the first stage nothing is read from the build context: the bento comes from stage 1.
    final_stage = expected[expected.index("FROM nvidia/cuda:"):]
    assert all("--from=" in line for line in re.findall(r"^COPY .*", final_stage, flags=re.MULTILINE))


def test_the_docker_build_context_leaves_out_local_state() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".git", "build", "state"):
        assert path in ignored, path
    for needed in ("docker", "requirements.txt", "service.py", "fewshot", "trainers", "bentofile.yaml"):
        assert needed not in ignored, needed


def compose_config(*arguments: str, **env: str) -> dict:
    """`docker-compose config` (Debian's docker-compose; `make test` installs it): validated, resolved."""
    rendered = subprocess.run(["docker-compose", *arguments, "config"], cwd=PROJECT_ROOT, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    return yaml.safe_load(rendered.stdout)


def test_the_compose_file_is_valid_and_wires_what_the_readme_says() -> None:
    config = compose_config(API_KEY="k", HF_TOKEN="t")
    assert config["services"]["redis"]["profiles"] == ["redis"]  # started only with its profile
    api, trainer = config["services"]["api"], config["services"]["trainer"]
    assert [(str(p["published"]), int(p["target"])) for p in api["ports"]] == [("8000", 8000)]
    for service in (api, trainer):
        # Built from this repository (docker compose up --build, Coolify), tagged as the image named.
        assert Path(service["build"]["context"]) == PROJECT_ROOT and service["build"]["dockerfile"] == "Dockerfile"
        assert service["image"] == "fewshot:latest"
        environment = service["environment"]
        assert environment["MODEL_PATH"] == "/var/lib/fewshot"
        assert environment["BENTOML_HOME"] == "/var/lib/fewshot/bentoml"  # on the volume, not over the code
        assert environment["API_KEY"] == "k" and environment["HF_TOKEN"] == "t"
        assert environment["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert [v.split(":")[1] for v in service["volumes"]] == ["/var/lib/fewshot"]
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        assert service["restart"] == "unless-stopped"
    assert api["environment"]["EMBEDDED_TRAINER"] == "false"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert trainer["working_dir"] == "/home/bentoml/bento/src"
    assert trainer["command"] == ["python", "-m", "trainers.consumer"] and "entrypoint" not in trainer
    assert trainer["healthcheck"]["test"] == ["CMD", "python", "-m", "trainers.health"]
    assert trainer["environment"]["TRAINER_METRICS_PORT"] == "9100" and trainer["expose"] == ["9100"]


def test_the_redis_profile_adds_a_persistent_redis() -> None:
    config = compose_config("--profile", "redis", REDIS_URL="redis://redis:6379/0")
    redis = config["services"]["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert [v.split(":")[1] for v in redis["volumes"]] == ["/data"]
    assert config["services"]["trainer"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_dockerfile_template_is_the_one_bentofile_names() -> None:
    assert Path(PROJECT_ROOT / "docker" / "Dockerfile.template").is_file()
    assert "dockerfile_template: \"./docker/Dockerfile.template\"" in (PROJECT_ROOT / "bentofile.yaml").read_text()
