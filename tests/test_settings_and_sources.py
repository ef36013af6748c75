"""Settings parsing and base-model resolution."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot.base_models import base_model_problem, load_failure_message, resolve_base_model
from fewshot.settings import DEFAULT_BASE_MODEL, bentoml_environment, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODEL_PATH", "BENTOML_HOME", "API_KEY", "DEFAULT_BASE_MODEL", "REDIS_URL", "EMBEDDED_TRAINER",
                 "MODEL_REFRESH_SECONDS", "HF_TOKEN", "LOG_LEVEL", "PREDICTION_LOG_SAMPLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings()
    assert settings.model_path == tmp_path / ".local/share/fewshot"
    assert settings.bentoml_home == settings.model_path / "bentoml"
    assert settings.default_base_model == DEFAULT_BASE_MODEL == "Alibaba-NLP/gte-modernbert-base"
    assert settings.embedded_trainer is True
    assert settings.api_key is None and settings.redis_url is None
    assert settings.prediction_log_sample == 0  # no traffic is kept unless the operator turns it on


def test_model_path_holds_the_store_unless_bentoml_home_is_explicit(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "state"))
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    assert load_settings().bentoml_home == tmp_path / "state" / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "elsewhere"))
    assert load_settings().bentoml_home == tmp_path / "elsewhere"


def test_bentoml_runs_with_the_bundled_configuration_unless_another_is_named(monkeypatch, tmp_path: Path) -> None:
    """A plain `bentoml serve` gets configuration.yaml (metrics prefix, access logs); BENTOML_CONFIG wins."""
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "state"))
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.delenv("BENTOML_CONFIG", raising=False)
    assert load_settings().bentoml_config == PROJECT_ROOT / "configuration.yaml"
    assert bentoml_environment(load_settings()) == {
        "BENTOML_HOME": str(tmp_path / "state" / "bentoml"),
        "BENTOML_CONFIG": str(PROJECT_ROOT / "configuration.yaml")}
    monkeypatch.setenv("BENTOML_CONFIG", str(tmp_path / "mine.yaml"))
    assert bentoml_environment(load_settings())["BENTOML_CONFIG"] == str(tmp_path / "mine.yaml")


@pytest.mark.parametrize(("name", "value"), [("EMBEDDED_TRAINER", "maybe"), ("MODEL_REFRESH_SECONDS", "0"),
                                              ("MODEL_REFRESH_SECONDS", "soon"), ("LOG_LEVEL", "LOUD"),
                                              ("TRAINER_POLL_SECONDS", "0"), ("MAX_LATENCY_MS", "0"),
                                              ("INFERENCE_BACKEND", "tensorrt"), ("INFERENCE_QUANTIZE", "int4")])
def test_bad_settings_fail_loudly_naming_the_variable(monkeypatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        load_settings()


def test_bundled_minilm_resolves_offline_and_absolute_paths_are_local(tmp_path: Path) -> None:
    bundled = resolve_base_model("sentence-transformers/all-MiniLM-L6-v2")
    assert bundled.is_local and (Path(bundled.location) / "config.json").is_file()
    local = resolve_base_model(str(tmp_path))
    assert local.is_local and local.location == str(tmp_path)
    hub = resolve_base_model("org/some-model")
    assert not hub.is_local and hub.location == "org/some-model"


def test_relative_names_are_hub_ids_never_directories(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not resolve_base_model("org/model").is_local  # a directory of the same name is not read


@pytest.mark.parametrize("requested", [
    "/etc", "/etc/../etc", "~/.ssh", "../x", "..", "org/../../etc", "org/%2e%2e", "org\\name", "a/b/c", "",
    "{allowed}/../outside", "{allowed}-sibling/model",
    "~no-such-user-fewshot/models", "/models/\ud9a8", "~\ud8ba\udfb0E",
])
def test_base_models_outside_the_allowed_places_are_refused(tmp_path: Path, requested: str) -> None:
    allowed = tmp_path / "models"
    allowed.mkdir()
    assert base_model_problem(requested.format(allowed=allowed), [allowed]) is not None


def test_allowed_base_models(tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    (allowed / "mine").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (allowed / "sneaky").symlink_to(tmp_path / "outside")
    assert base_model_problem(str(allowed / "mine"), [allowed]) is None
    assert base_model_problem("sentence-transformers/all-MiniLM-L6-v2", [allowed]) is None
    assert base_model_problem("gpt2", [allowed]) is None
    assert base_model_problem(str(allowed / "sneaky"), [allowed]) is not None  # symlink out is refused


def test_load_failure_says_what_to_do() -> None:
    message = load_failure_message(resolve_base_model("org/missing"), OSError("404"))
    assert "org/missing" in message and "HF_TOKEN" in message and "local" in message


def test_models_with_their_own_code_are_refused_unless_trusted(tmp_path: Path) -> None:
    """A real model directory whose config asks for custom code (transformers' auto_map)."""
    import json
    import shutil

    from trainers.errors import TrainingFailed
    from trainers.training import load_base_model

    bundled = Path(resolve_base_model("sentence-transformers/all-MiniLM-L6-v2").location)
    custom = tmp_path / "custom"
    shutil.copytree(bundled, custom, ignore=shutil.ignore_patterns("onnx", "openvino", "pytorch_model.bin"))
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="custom-bert", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                      "AutoModel": "modeling_custom.CustomModel"})
    (custom / "config.json").write_text(json.dumps(config))
    assert load_settings().trust_remote_code is False  # the default
    with pytest.raises(TrainingFailed, match="TRUST_REMOTE_CODE=true"):
        load_base_model(resolve_base_model(str(custom)), ["a", "b"], hf_token=None, trust_remote_code=False)


def test_training_stops_with_a_clear_error_past_its_time_limit(train_examples) -> None:
    """Real SetFit training on the bundled MiniLM with a limit no step can meet."""
    from trainers.errors import TrainingFailed
    from trainers.training import TrainingOptions, fine_tune, split_examples

    options = TrainingOptions(base_model=resolve_base_model("sentence-transformers/all-MiniLM-L6-v2"),
                              num_iterations=1, max_seconds=1e-6)
    examples = train_examples
    with pytest.raises(TrainingFailed, match=r"MAX_TRAINING_SECONDS=1e-06 \(stopped after step 1 of"):
        fine_tune(split_examples([(e["text"], e["label"]) for e in examples], options.holdout_fraction, options.seed),
                  options)


def test_the_settings_page_documents_every_setting_and_only_those() -> None:
    """docs/settings.md mirrors fewshot/settings.py, where every setting is read; HF_HUB_OFFLINE is
    read by huggingface_hub itself and documented there too."""
    root = Path(__file__).resolve().parents[1]
    source = (root / "fewshot" / "settings.py").read_text()
    read = set(re.findall(r'(?:environ\.get|\b_\w+)\("([A-Z][A-Z0-9_]+)"', source))
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (root / "docs" / "settings.md").read_text(),
                                flags=re.MULTILINE))
    assert read, "no setting found: the pattern no longer fits fewshot/settings.py"
    assert documented - {"HF_HUB_OFFLINE"} == read, (read - documented, documented - read)


def test_each_process_makes_the_state_directories_it_needs_at_start(tmp_path: Path) -> None:
    """The image ships its state mount point empty (issue 45: Docker's copy of anything under it into a new
    volume raced between compose's two containers): `base-models/` (LOCAL_MODEL_DIRS' default, where users
    copy local models) and the model store are made by the process, at start."""
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items() if key not in ("LOCAL_MODEL_DIRS", "BENTOML_HOME")}
    subprocess.run([sys.executable, "-c", "from fewshot.settings import apply_process_environment, get_settings\n"
                    "apply_process_environment(get_settings())"], cwd=PROJECT_ROOT, check=True, timeout=120,
                   env={**env, "MODEL_PATH": str(state)})
    assert (state / "base-models").is_dir() and (state / "bentoml").is_dir()
