"""Every environment setting of the service, read in one place.

docs/settings.md's table mirrors this module: add a setting here and there together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

DEFAULT_BASE_MODEL = "Alibaba-NLP/gte-modernbert-base"
# The runtime configuration beside service.py (in the repository and in the bento's src/).
BUNDLED_BENTOML_CONFIG = Path(__file__).resolve().parents[1] / "configuration.yaml"
DEFAULT_MODEL_PATH = "~/.local/share/fewshot"

Number = TypeVar("Number", int, float)


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


def _number(name: str, default: Number, minimum: Number, kind: type[Number], described: str) -> Number:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {described}, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, default: float, minimum: float) -> float:
    return _number(name, default, minimum, float, "a number")


def _int(name: str, default: int, minimum: int) -> int:
    return _number(name, default, minimum, int, "a whole number")


def _directories(name: str, default: tuple[Path, ...]) -> tuple[Path, ...]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    paths = tuple(Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip())
    relative = [str(p) for p in paths if not p.is_absolute()]
    if relative:
        raise ValueError(f"{name} must list absolute directories, got {', '.join(relative)}")
    return tuple(p.resolve() for p in paths)


def _choice(name: str, default: str, allowed: set[str]) -> str:
    value = (os.environ.get(name) or default).strip().upper()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(sorted(allowed))}, got {value!r}")
    return value


def _text(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw if raw else None


TEXT_CHARS_CEILING = 1_000_000
"""Characters of one text in any request when MAX_TEXT_CHARS is not set: what the request schemas
enforce before a version is known (each version then takes what its window allows)."""

@dataclass(frozen=True)
class Settings:
    model_path: Path
    """MODEL_PATH: the one directory holding everything that must persist."""
    bentoml_home: Path
    """BENTOML_HOME if set explicitly, else $MODEL_PATH/bentoml: the BentoML model store."""
    bentoml_config: Path | None
    """BENTOML_CONFIG if set explicitly, else configuration.yaml beside service.py (None: neither)."""
    api_key: str | None
    """API_KEY: when set, every route but /health, the probes and the docs needs it."""
    default_base_model: str
    """DEFAULT_BASE_MODEL: base model of a training request that names none."""
    redis_url: str | None
    """REDIS_URL: Huey queue and job records in Redis instead of SQLite under MODEL_PATH."""
    embedded_trainer: bool
    """EMBEDDED_TRAINER: `bentoml serve` starts and supervises the Huey consumer itself."""
    trainer_restart_delay_seconds: float
    """TRAINER_RESTART_DELAY_SECONDS: how long the embedded trainer's supervisor waits before restarting a
    trainer that exited (not ready meanwhile; an exit followed by a shutdown within it is not restarted)."""
    model_refresh_seconds: float
    """MODEL_REFRESH_SECONDS: how often the inference side looks for newer model versions."""
    hf_token: str | None
    """HF_TOKEN: Hugging Face token for gated or private base models."""
    log_level: str
    """LOG_LEVEL: level of our own log lines (DEBUG, INFO, WARNING, ERROR)."""
    max_batch_size: int
    """MAX_BATCH_SIZE: most texts (from any number of requests) in one inference batch."""
    max_batch_tokens: int | None
    """MAX_BATCH_TOKENS: padded tokens per forward pass; None = by device (CPU 768, GPU 16384)."""
    max_latency_ms: int
    """MAX_LATENCY_MS: a predict/embeddings request that has waited this long for its batch is answered 503."""
    max_loaded_models: int
    """MAX_LOADED_MODELS: models kept loaded at once; the least recently used one is unloaded."""
    inference_dtype: str
    """INFERENCE_DTYPE: AUTO (float16 on CUDA, float32 on CPU), FLOAT32, FLOAT16 or BFLOAT16."""
    inference_threads: int | None
    """INFERENCE_THREADS: threads of a forward pass in the inference worker (torch's, ONNX Runtime's or
    OpenVINO's); None = one per physical core (fewshot/serving/runtime.py: default_threads)."""
    inference_backend: str
    """INFERENCE_BACKEND: AUTO, TORCH, ONNX (ONNX Runtime) or OPENVINO: what runs a model's body (see
    fewshot/serving/backends.py; AUTO: torch on a GPU; on CPU, with INFERENCE_QUANTIZE AUTO, every backend timed on
    this machine and the fastest kept, fewshot/serving/auto_backend.py)."""
    inference_quantize: str
    """INFERENCE_QUANTIZE: AUTO, NONE or INT8: int8 weights and activations for ONNX/OPENVINO bodies."""
    inference_pipeline: str
    """INFERENCE_PIPELINE: AUTO (exported bodies run tokenizer, runtime, pooling and head in numpy where
    that reproduces sentence-transformers; fewshot/serving/numpy_pipeline.py) or SENTENCE_TRANSFORMERS."""
    max_texts_per_request: int
    """MAX_TEXTS_PER_REQUEST: texts in one predict or embeddings request."""
    max_text_chars: int | None
    """MAX_TEXT_CHARS: characters in one text (predict, embeddings, training examples); None = each
    version's own, which follows its window (fewshot/serving/long_texts.py `text_limit`), and
    TEXT_CHARS_CEILING for training examples."""
    max_train_examples: int
    """MAX_TRAIN_EXAMPLES: examples in one training request."""
    max_pool_texts: int
    """MAX_POOL_TEXTS: unlabelled texts in one suggest request (POST /v1/models/{name}/suggest)."""
    max_explain_spans: int
    """MAX_EXPLAIN_SPANS: spans an explanation leaves out of one text (POST /v1/explain): its words, or
    its sentences where it has more words than this; more sentences than this are a 400."""
    max_request_bytes: int
    """MAX_REQUEST_BYTES: bytes of one request body; more is answered 413 before it is parsed."""
    prediction_log_sample: float
    """PREDICTION_LOG_SAMPLE: share of the texts sent to /v1/predict kept per model as a pool to suggest from
    (0: off; fewshot/records/prediction_log.py)."""
    prediction_log_days: float
    """PREDICTION_LOG_DAYS: how long a logged text is kept after it was last seen."""
    prediction_log_max_texts: int
    """PREDICTION_LOG_MAX_TEXTS: logged texts kept per model; the oldest go first."""
    max_labels: int
    """MAX_LABELS: distinct labels of one model."""
    max_num_iterations: int
    """MAX_NUM_ITERATIONS: largest `num_iterations` a training request may ask for."""
    max_train_batch_size: int
    """MAX_TRAIN_BATCH_SIZE: largest `batch_size` a training request may ask for."""
    max_training_seconds: float
    """MAX_TRAINING_SECONDS: fine-tuning time after which a job fails (checked after every step)."""
    training_threads: int | None
    """TRAINING_THREADS: torch threads of the trainer; None = one per CPU core."""
    keep_model_versions: int | None
    """KEEP_MODEL_VERSIONS: versions kept per model after a training; older ones are deleted. None = all."""
    job_retention_days: float | None
    """JOB_RETENTION_DAYS: finished job records older than this are deleted. None = kept forever."""
    max_queued_jobs: int
    """MAX_QUEUED_JOBS: pending training jobs beyond which POST /v1/train answers 429."""
    trainer_poll_seconds: float
    """TRAINER_POLL_SECONDS: longest pause of an idle trainer between looks at the SQLite queue."""
    trainer_heartbeat_seconds: float
    """TRAINER_HEARTBEAT_SECONDS: how often a trainer says it is alive; silent for
    TRAINER_HEARTBEAT_MISSED_BEATS beats = dead."""
    trainer_heartbeat_missed_beats: int
    """TRAINER_HEARTBEAT_MISSED_BEATS: beats a trainer may miss before its running job is failed."""
    trainer_metrics_port: int | None
    """TRAINER_METRICS_PORT: a trainer run on its own serves Prometheus metrics on this port. None = off."""
    local_model_dirs: tuple[Path, ...]
    """LOCAL_MODEL_DIRS: directories (os.pathsep-separated) a request's local `base_model` must be in."""
    trust_remote_code: bool
    """TRUST_REMOTE_CODE: allow base models that run their own Python code (off: such models fail)."""
    trust_pickled_heads: bool
    """TRUST_PICKLED_HEADS: allow importing models whose head is only a pickle (loading it runs code)."""
    max_file_bytes: int
    """MAX_FILE_BYTES: bytes of one uploaded file (POST /v1/files); more is answered 413."""
    batch_file_days: float
    """BATCH_FILE_DAYS: uploaded files and batch results are deleted this long after they were made."""
    batch_shard_texts: int
    """BATCH_SHARD_TEXTS: texts per shard of a batch: the unit a batch worker takes, holds in memory,
    and computes again after a crash."""
    batch_chunk_texts: int
    """BATCH_CHUNK_TEXTS: texts of a shard per call of the engine (which cuts them into forward passes of
    MAX_BATCH_TOKENS); after each, the worker reports its progress and looks for a cancel."""
    batch_sweep_seconds: float
    """BATCH_SWEEP_SECONDS: how often a batch worker looks for shards whose worker died, cancelled and
    expired batches, and expired files."""
    batch_claim_seconds: float
    """BATCH_CLAIM_SECONDS: a shard whose worker (on another machine) has not reported for this long is
    taken by another worker; a dead worker on the same machine is seen at once."""

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

    @property
    def batch_queue_file(self) -> Path:
        return self.queue_dir / "batches.db"

    @property
    def files_dir(self) -> Path:
        """Uploaded files and batch results (POST /v1/files), shared by every process like the store."""
        return self.model_path / "files"

    @property
    def batches_dir(self) -> Path:
        """Each batch's record, shards and their results (batches/), shared by every batch worker."""
        return self.model_path / "batches"


def load_settings() -> Settings:
    model_path = Path(os.environ.get("MODEL_PATH") or DEFAULT_MODEL_PATH).expanduser().resolve()
    explicit_home = os.environ.get("BENTOML_HOME")
    bentoml_home = Path(explicit_home).expanduser().resolve() if explicit_home else model_path / "bentoml"
    explicit_config = os.environ.get("BENTOML_CONFIG")
    bentoml_config = Path(explicit_config).expanduser().resolve() if explicit_config else (
        BUNDLED_BENTOML_CONFIG if BUNDLED_BENTOML_CONFIG.is_file() else None)
    return Settings(
        model_path=model_path,
        bentoml_home=bentoml_home,
        bentoml_config=bentoml_config,
        api_key=_text("API_KEY"),
        default_base_model=os.environ.get("DEFAULT_BASE_MODEL") or DEFAULT_BASE_MODEL,
        redis_url=_text("REDIS_URL"),
        embedded_trainer=_flag("EMBEDDED_TRAINER", default=True),
        trainer_restart_delay_seconds=_float("TRAINER_RESTART_DELAY_SECONDS", 2.0, minimum=1.0),
        model_refresh_seconds=_float("MODEL_REFRESH_SECONDS", 1.0, minimum=0.1),
        hf_token=_text("HF_TOKEN"),
        log_level=_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"}),
        max_batch_size=_int("MAX_BATCH_SIZE", 64, minimum=1),
        max_batch_tokens=_int("MAX_BATCH_TOKENS", 0, minimum=0) or None,
        max_latency_ms=_int("MAX_LATENCY_MS", 60_000, minimum=1),
        max_loaded_models=_int("MAX_LOADED_MODELS", 8, minimum=1),
        inference_dtype=_choice("INFERENCE_DTYPE", "AUTO", {"AUTO", "FLOAT32", "FLOAT16", "BFLOAT16"}),
        inference_threads=_int("INFERENCE_THREADS", 0, minimum=0) or None,
        inference_backend=_choice("INFERENCE_BACKEND", "AUTO", {"AUTO", "TORCH", "ONNX", "OPENVINO"}),
        inference_quantize=_choice("INFERENCE_QUANTIZE", "AUTO", {"AUTO", "NONE", "INT8"}),
        inference_pipeline=_choice("INFERENCE_PIPELINE", "AUTO", {"AUTO", "SENTENCE_TRANSFORMERS"}),
        max_texts_per_request=_int("MAX_TEXTS_PER_REQUEST", 256, minimum=1),
        max_text_chars=_int("MAX_TEXT_CHARS", 0, minimum=0) or None,
        max_train_examples=_int("MAX_TRAIN_EXAMPLES", 10_000, minimum=2),
        max_pool_texts=_int("MAX_POOL_TEXTS", 10_000, minimum=1),
        max_explain_spans=_int("MAX_EXPLAIN_SPANS", 64, minimum=1),
        # 32 MiB: 10,000 training examples (MAX_TRAIN_EXAMPLES) of ~3,300 bytes, and a full predict request
        # (256 texts of 10,000 characters: 15 MB even with every character sent as a \uXXXX escape).
        max_request_bytes=_int("MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024),
        prediction_log_sample=_float("PREDICTION_LOG_SAMPLE", 0.0, minimum=0.0),
        prediction_log_days=_float("PREDICTION_LOG_DAYS", 7.0, minimum=0.0),
        prediction_log_max_texts=_int("PREDICTION_LOG_MAX_TEXTS", 10_000, minimum=1),
        max_labels=_int("MAX_LABELS", 500, minimum=2),
        max_num_iterations=_int("MAX_NUM_ITERATIONS", 200, minimum=1),
        max_train_batch_size=_int("MAX_TRAIN_BATCH_SIZE", 256, minimum=1),
        max_training_seconds=_float("MAX_TRAINING_SECONDS", 7200.0, minimum=1.0),
        training_threads=_int("TRAINING_THREADS", 0, minimum=0) or None,
        keep_model_versions=_int("KEEP_MODEL_VERSIONS", 10, minimum=0) or None,
        job_retention_days=_float("JOB_RETENTION_DAYS", 30.0, minimum=0.0) or None,
        max_queued_jobs=_int("MAX_QUEUED_JOBS", 100, minimum=1),
        trainer_poll_seconds=_float("TRAINER_POLL_SECONDS", 0.25, minimum=0.01),
        trainer_heartbeat_seconds=_float("TRAINER_HEARTBEAT_SECONDS", 10.0, minimum=0.1),
        trainer_heartbeat_missed_beats=_int("TRAINER_HEARTBEAT_MISSED_BEATS", 3, minimum=2),
        trainer_metrics_port=_int("TRAINER_METRICS_PORT", 0, minimum=0) or None,
        local_model_dirs=_directories("LOCAL_MODEL_DIRS", default=(model_path / "base-models",)),
        trust_remote_code=_flag("TRUST_REMOTE_CODE", default=False),
        trust_pickled_heads=_flag("TRUST_PICKLED_HEADS", default=False),
        # OpenAI's Batch API takes files of up to 200 MB; a million short texts as CSV is ~70 MB.
        max_file_bytes=_int("MAX_FILE_BYTES", 1024 * 1024 * 1024, minimum=1024),
        batch_file_days=_float("BATCH_FILE_DAYS", 30.0, minimum=0.0),
        batch_shard_texts=_int("BATCH_SHARD_TEXTS", 10_000, minimum=1),
        batch_chunk_texts=_int("BATCH_CHUNK_TEXTS", 512, minimum=1),
        batch_sweep_seconds=_float("BATCH_SWEEP_SECONDS", 10.0, minimum=0.1),
        batch_claim_seconds=_float("BATCH_CLAIM_SECONDS", 60.0, minimum=1.0),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def bentoml_environment(settings: Settings) -> dict[str, str]:
    """What BentoML must read from the environment in every process: the store, the runtime config."""
    environment = {"BENTOML_HOME": str(settings.bentoml_home)}
    if settings.bentoml_config is not None:
        environment["BENTOML_CONFIG"] = str(settings.bentoml_config)
    return environment


def apply_process_environment(settings: Settings) -> None:
    """Point BentoML (and every process we start) at the state directory and the configuration.

    BentoML resolves its home lazily, on first use of the store, from BENTOML_HOME; setting it
    here, before that first use, makes this process, its workers and our trainer share one store.
    """
    os.environ.update(bentoml_environment(settings))
    os.environ["MODEL_PATH"] = str(settings.model_path)
    # Self-hosted and often air-gapped: never send BentoML usage analytics.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    # BentoML's OpenTelemetry middleware looks this variable up several times per request, and a
    # miss (KeyError inside os.environ) is what costs: ~0.3 ms of CPU per request on each of our
    # two HTTP hops, measured. Set, spans keep unusual HTTP method names instead of "_OTHER".
    os.environ.setdefault("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "true")
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    # Made here, by each process at start, not shipped in the image: Docker copies what an image holds
    # under a volume's mount point into a new named volume once per container, and compose creates the
    # api and trainer containers at once, so a second copy of `base-models/` raced the first
    # ("failed to mkdir …/_data/base-models: file exists", 1 of 11 first `up`s; docs/operations.md).
    for directory in settings.local_model_dirs:
        if directory.is_relative_to(settings.model_path):
            directory.mkdir(parents=True, exist_ok=True)
