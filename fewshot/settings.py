"""Every environment setting of the service, read in one place.

The README's settings table mirrors this module: add a setting here and there together.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_BASE_MODEL = "Alibaba-NLP/gte-modernbert-base"
DEFAULT_MODEL_PATH = "~/.local/share/fewshot"


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def _float(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _choice(name: str, default: str, allowed: set[str]) -> str:
    value = (os.environ.get(name) or default).strip().upper()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(sorted(allowed))}, got {value!r}")
    return value


def _text(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw if raw else None


@dataclass(frozen=True)
class Settings:
    model_path: Path
    """MODEL_PATH: the one directory holding everything that must persist."""
    bentoml_home: Path
    """BENTOML_HOME if set explicitly, else $MODEL_PATH/bentoml: the BentoML model store."""
    api_key: str | None
    """API_KEY: when set, every route but /health, the probes and the docs needs it."""
    default_base_model: str
    """DEFAULT_BASE_MODEL: base model of a training request that names none."""
    redis_url: str | None
    """REDIS_URL: Huey queue and job records in Redis instead of SQLite under MODEL_PATH."""
    embedded_trainer: bool
    """EMBEDDED_TRAINER: `bentoml serve` starts and supervises the Huey consumer itself."""
    model_refresh_seconds: float
    """MODEL_REFRESH_SECONDS: how often the inference side looks for newer model versions."""
    hf_token: str | None
    """HF_TOKEN: Hugging Face token for gated or private base models."""
    log_level: str
    """LOG_LEVEL: level of our own log lines (DEBUG, INFO, WARNING, ERROR)."""

    @property
    def queue_dir(self) -> Path:
        return self.model_path / "queue"

    @property
    def queue_file(self) -> Path:
        return self.queue_dir / "huey.db"

    @property
    def jobs_file(self) -> Path:
        return self.queue_dir / "jobs.db"

    @property
    def consumer_lock_file(self) -> Path:
        return self.queue_dir / "consumer.lock"


def load_settings() -> Settings:
    model_path = Path(os.environ.get("MODEL_PATH") or DEFAULT_MODEL_PATH).expanduser().resolve()
    explicit_home = os.environ.get("BENTOML_HOME")
    bentoml_home = Path(explicit_home).expanduser().resolve() if explicit_home else model_path / "bentoml"
    return Settings(
        model_path=model_path,
        bentoml_home=bentoml_home,
        api_key=_text("API_KEY"),
        default_base_model=os.environ.get("DEFAULT_BASE_MODEL") or DEFAULT_BASE_MODEL,
        redis_url=_text("REDIS_URL"),
        embedded_trainer=_flag("EMBEDDED_TRAINER", default=True),
        model_refresh_seconds=_float("MODEL_REFRESH_SECONDS", 1.0, minimum=0.1),
        hf_token=_text("HF_TOKEN"),
        log_level=_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"}),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def apply_process_environment(settings: Settings) -> None:
    """Point BentoML (and every process we start) at the state directory.

    BentoML resolves its home lazily, on first use of the store, from BENTOML_HOME; setting it
    here, before that first use, makes this process, its workers and our trainer share one store.
    """
    os.environ["BENTOML_HOME"] = str(settings.bentoml_home)
    os.environ["MODEL_PATH"] = str(settings.model_path)
    # Self-hosted and often air-gapped: never send BentoML usage analytics.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    settings.queue_dir.mkdir(parents=True, exist_ok=True)
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)


def reexec_serve_cli_with_store_home(settings: Settings) -> None:
    """Make the `bentoml serve` CLI process itself use the store under MODEL_PATH.

    The CLI resolves BentoML's home (and puts its metrics scratch files there) before it imports
    service.py, so setting the variable from here is too late for that one process. When it was
    not set, restart the same command once with it set; the workers and the trainer inherit it.
    """
    if os.environ.get("BENTOML_HOME") == str(settings.bentoml_home):
        return
    command = sys.orig_argv
    is_serve_cli = "serve" in command and any(
        part.endswith(("/bentoml", "bentoml/__main__.py")) or part in {"bentoml", "bentoml.__main__"}
        for part in command[:3]
    )
    if is_serve_cli:
        os.environ["BENTOML_HOME"] = str(settings.bentoml_home)
        os.execv(sys.executable, [sys.executable, *command[1:]])
