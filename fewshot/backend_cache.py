"""Files derived from a stored model version to serve it faster, and what serves it.

The inference service exports a version's transformer body for ONNX Runtime or OpenVINO (int8 or
not) the first time it loads that version, and keeps the export under
MODEL_PATH/backends/<name>/<version>/<backend>-<quantize>/: beside the model store, never inside its
immutable version directories, so that a restart loads the export instead of redoing it. The
store removes a version's directory here when it deletes the version.

`serving.json` in the version's directory records what the last load actually serves it with (the
backend asked for, or torch and why not): `GET /v1/models/...` reports it. No ML imports here: the
gateway reads that file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from fewshot.settings import get_settings

logger = logging.getLogger("fewshot.store")

STATUS_FILE = "serving.json"


class CandidateTiming(BaseModel):
    """One backend timed on this machine for INFERENCE_BACKEND=AUTO (fewshot/serving/auto_backend.py)."""

    one_text_ms: float | None = None
    """Median milliseconds to answer one text alone."""
    full_pass_texts_per_s: float | None = None
    """Texts per second answering 64 texts at once."""
    agreement: float | None = None
    """Share of the timing texts on which it answers torch's label."""
    eligible: bool = False
    """Float32, or int8 that answered torch's label on (almost) every timing text."""
    pipeline: str | None = None
    """The path around the body it was timed with (`numpy` or `sentence-transformers`)."""
    error: str | None = None
    """Why it could not be timed (its export failed)."""

    @property
    def score(self) -> float:
        """Geometric mean of one-text and full-pass throughput, texts/s."""
        if self.one_text_ms is None or self.full_pass_texts_per_s is None:
            return 0.0
        return (1000 / self.one_text_ms * self.full_pass_texts_per_s) ** 0.5


class AutoChoice(BaseModel):
    """What AUTO chose on this CPU for a body architecture, and the timings it chose by."""

    chosen: str
    """The fastest eligible candidate, e.g. `onnx-int8`."""
    candidates: dict[str, CandidateTiming]
    texts: int
    """Timing texts (the version's own training texts, up to 64)."""
    cpu: str
    measured_at: str


class ServingBackend(BaseModel):
    """What serves a model version, as its last load in an inference worker found out."""

    requested: str
    """The backend and quantization the settings asked for, e.g. `openvino-int8`."""
    backend: str
    """What runs the body: `torch`, `onnx` (ONNX Runtime) or `openvino`."""
    quantize: str
    """`int8` or `none`."""
    error: str | None = None
    """Why `backend`/`quantize` differ from `requested` (an export or quantization that failed)."""
    prepare_seconds: float | None = None
    """Seconds the export and quantization took at that load (0: read from this cache)."""
    exporting: bool = False
    """The export is being made in the background; torch serves the version meanwhile."""
    pipeline: str = "sentence-transformers"
    """What runs around the body per batch: `numpy` (an exported body: the Rust tokenizer, the runtime,
    pooling and the head in numpy; fewshot/serving/numpy_pipeline.py) or `sentence-transformers`."""
    pipeline_error: str | None = None
    """Why an exported body is served through sentence-transformers: what the numpy path does not
    reproduce, or where its answers differed from sentence-transformers' at load."""
    auto: AutoChoice | None = None
    """INFERENCE_BACKEND=AUTO on CPU: the timings on this machine that chose `requested`."""


def root() -> Path:
    return get_settings().model_path / "backends"


def version_directory(name: str, version: str) -> Path:
    return root() / name / version


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A file to write `path`'s new content into, renamed over `path` when the block ends: readers see
    the old file or the new one, never half of one. The staged name is the writer's own (process and
    thread): two threads of the inference worker load one version at once (a request and the refresh)
    and both record its status; with the process id alone, one renamed the other's staged file away
    and the second rename failed (a 500 for the request that loaded it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        yield staged
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def write_status(name: str, version: str, status: ServingBackend) -> None:
    with replacing(version_directory(name, version) / STATUS_FILE) as staged:
        staged.write_text(status.model_dump_json(), encoding="utf8")


def read_status(name: str, version: str) -> ServingBackend | None:
    """None: no inference worker has loaded this version yet (with today's or earlier settings)."""
    try:
        return ServingBackend.model_validate(json.loads((version_directory(name, version) / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return None


def remove(name: str, version: str | None = None) -> None:
    """Remove what was derived from `name:version` (or from every version of `name`)."""
    directory = root() / name if version is None else version_directory(name, version)
    shutil.rmtree(directory, ignore_errors=True)
    if version is not None and directory.parent.is_dir() and not any(directory.parent.iterdir()):
        directory.parent.rmdir()


def pairs_with_store() -> bool:
    """Whether the store is MODEL_PATH's own (BENTOML_HOME not set elsewhere): only then may exports
    that no version of the store owns be swept as orphans. A process pointed at another store (a
    tool, a test) must never sweep MODEL_PATH's exports."""
    settings = get_settings()
    return settings.bentoml_home == settings.model_path / "bentoml"


def remove_orphans(versions_in_store: dict[str, set[str]]) -> list[str]:
    """Remove derived files of versions no longer in the store (deleted by another tool, e.g. the
    `bentoml models delete` CLI); the `name:version` references removed."""
    removed = []
    if not root().is_dir():
        return removed
    for model_dir in root().iterdir():
        for version_dir in model_dir.iterdir() if model_dir.is_dir() else ():
            if version_dir.name not in versions_in_store.get(model_dir.name, set()):
                shutil.rmtree(version_dir, ignore_errors=True)
                removed.append(f"{model_dir.name}:{version_dir.name}")
                logger.info("removed the serving exports of %s: the version left the store", removed[-1])
        if model_dir.is_dir() and not any(model_dir.iterdir()):
            model_dir.rmdir()
    return removed
