"""The BentoML model store: the only module that registers, resolves or reads stored models.

A model version's files are a SetFit model directory; its metadata carries what the API reports.

Several trainers (processes or machines sharing the store's volume) may write at once. BentoML
copies a new version into its final directory and only then points `latest` at it, which keeps
readers of `latest` safe, but two writers can interleave those steps and a writer killed mid-copy
leaves a half-written version directory behind. So writers (register, prune, clean-up) hold one
exclusive lock on a file in the store, and `remove_incomplete_versions` clears what a crash left.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException

from fewshot import backend_cache
from fewshot.bentoml_fixes.store_directory import model_store_directory

logger = logging.getLogger("fewshot.store")

# A version directory without this file is a copy cut short (BentoML copies in no fixed order, so
# a cut copy that has it is possible too; it is never `latest`, and retention deletes it in time).
MODEL_INFO_FILE = "model.yaml"

CALIBRATION_TEXTS_FILE = "fewshot_calibration_texts.json"
"""In a version's files: training texts the trainer kept for static int8 calibration (OpenVINO;
fewshot/serving/backends.py). Never part of a download: they are the user's data, not the model."""

TRAINING_EXAMPLES_FILE = "fewshot_training_examples.json"
"""In a version's files: the examples it was trained on, `[[text, label | null | [labels]], ...]`: what a
retrain's promotion judges it without (trainers/promotion.py). Never part of a download, as above."""

# Marks our models in the store, so that `bentoml models list` users can tell them apart.
STORE_LABELS = {"kind": "setfit-classifier", "owner": "fewshot"}
HELD = "held"
"""Metadata of a version registered but not served (a retrain with `promote: if_better` that scored
worse than the version it would replace): why. `name` keeps serving the newest version without it;
`name:version` still reaches a held one."""


@dataclass(frozen=True)
class StoredModel:
    name: str
    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def labels(self) -> list[str]:
        return list(self.metadata["labels"])

    @property
    def refuses(self) -> bool:
        """Trained with "none of these" examples: its head has one more class than it has labels."""
        return bool((self.metadata.get("abstention") or {}).get("none_of_these_examples"))

    def training_examples(self) -> list[tuple[str, str | tuple[str, ...] | None]] | None:
        """The examples it was trained on (TRAINING_EXAMPLES_FILE), each target a label, None (none of
        these) or a tuple of labels; None when it kept none (an import, a version made before they were
        kept) or the file cannot be read (said in the log)."""
        path = self.path / TRAINING_EXAMPLES_FILE
        if not path.is_file():
            return None
        try:
            return [(text, tuple(target) if isinstance(target, list) else target)
                    for text, target in json.loads(path.read_text(encoding="utf8"))]
        except (OSError, ValueError, TypeError) as error:
            logger.warning("%s: its training examples could not be read (%s)", self.tag, error)
            return None


@contextmanager
def writing() -> Iterator[None]:
    """Exclusive among every process writing to this store (flock; works on NFSv4 too)."""
    directory = model_store_directory()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".fewshot-writers.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def register(name: str, write_files: Callable[[Path], None], metadata: dict[str, Any]) -> StoredModel:
    """Write a new version of `name`; it becomes visible (and `latest`) only once complete.

    The slow part (writing the weights) happens outside the writers' lock, in a staging directory;
    inside it the files are moved (a rename: same temporary filesystem as BentoML's) into the new
    version, which BentoML then copies into the store. Versions are created, and become `latest`,
    in the order they were registered.
    """
    with tempfile.TemporaryDirectory(prefix=f"fewshot-{name}-") as staging:
        write_files(Path(staging))
        with writing(), bentoml.models.create(name, labels=STORE_LABELS, metadata=_without_nulls(metadata)) as model:
            for item in Path(staging).iterdir():
                shutil.move(item, Path(model.path) / item.name)
    return _stored(bentoml.models.get(model.tag))


def add_metadata(tag: str, entries: dict[str, Any]) -> None:
    """Add entries to a stored version's metadata (e.g. an outcome known only after it was registered).

    The new model.yaml is written beside the old one and renamed over it: a reader sees the old
    file or the new one, never half of one.
    """
    with writing():
        model = bentoml.models.get(tag)
        model.info.metadata.update(_without_nulls(entries))
        info_file = Path(model.path) / MODEL_INFO_FILE
        staged = info_file.with_name(f".{MODEL_INFO_FILE}.partial")
        with staged.open("w", encoding="utf8") as handle:
            model.info.dump(handle)
        os.replace(staged, info_file)


def _without_nulls(value: Any) -> Any:
    """BentoML refuses None anywhere in metadata: leave such entries out (they read back as absent → null)."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value if item is not None]
    return value


def _stored(model: bentoml.Model) -> StoredModel:
    return StoredModel(name=model.tag.name, version=str(model.tag.version), path=Path(model.path),
                       metadata=dict(model.info.metadata))


def _ours(model: bentoml.Model) -> bool:
    return all(model.info.labels.get(key) == value for key, value in STORE_LABELS.items())


def versions(name: str) -> list[StoredModel]:
    """Every complete version of `name` that we registered, newest first (a half-written one is skipped)."""
    directory = model_store_directory() / name
    if not directory.is_dir():
        return []
    found = []
    for version in directory.iterdir():
        if not version.is_dir():
            continue
        try:
            found.append(bentoml.models.get(f"{name}:{version.name}"))
        except BentoMLException:  # no model.yaml yet (being copied) or a crashed copy
            continue
    ours = (model for model in found if _ours(model))
    return [_stored(model) for model in sorted(ours, key=lambda m: m.info.creation_time, reverse=True)]


def all_models() -> dict[str, list[StoredModel]]:
    """Every model we registered with its complete versions (newest first); newest model first."""
    directory = model_store_directory()
    if not directory.is_dir():
        return {}
    found = {entry.name: versions(entry.name) for entry in directory.iterdir() if entry.is_dir()}
    models = {name: listed for name, listed in found.items() if listed}
    return dict(sorted(models.items(), key=lambda item: item[1][0].metadata["created_at"], reverse=True))


def split_reference(reference: str) -> tuple[str, str | None]:
    """`name` or `name:version` → (name, version or None); `name:latest` means `name`."""
    name, _, version = reference.partition(":")
    return name, (version if version and version != "latest" else None)


def resolve(reference: str) -> StoredModel | None:
    """The stored model `name` (its latest version) or `name:version` refers to; None if there is none."""
    name, version = split_reference(reference)
    if version is None:
        return latest(name)
    try:
        model = bentoml.models.get(f"{name}:{version}")
    except BentoMLException:  # not found, or a copy still in progress
        return None
    return _stored(model) if _ours(model) else None


def delete(reference: str) -> list[str]:
    """Delete `name:version`, or every version of `name`; the tags deleted ([] when none matched).

    BentoML points `latest` at the newest remaining version, so deleting the latest version makes
    the previous one the latest.
    """
    name, version = split_reference(reference)
    with writing():
        doomed = [stored for stored in versions(name) if version is None or stored.version == version]
        for stored in doomed:
            bentoml.models.delete(stored.tag)
            backend_cache.remove(stored.name, stored.version)
    for stored in doomed:
        logger.info("deleted %s from the model store", stored.tag)
    return [stored.tag for stored in doomed]


def prune(name: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions of `name` and the one it serves (keep >= 1; a held
    version newer than the served one never pushes the served one out)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    removed = []
    with writing():
        listed = versions(name)
        served = next((stored for stored in listed if HELD not in stored.metadata), None)
        for old in listed[keep:]:
            if served is not None and old.version == served.version:
                continue
            bentoml.models.delete(old.tag)
            backend_cache.remove(old.name, old.version)
            removed.append(old.tag)
    return removed


def remove_incomplete_versions() -> list[str]:
    """Delete version directories without their model.yaml: copies cut short by a crash; and the
    serving exports (fewshot/backend_cache.py) of versions no longer in the store.

    Safe at any time: under the writers' lock no copy is in progress.
    """
    removed = []
    with writing():
        for info_dir in model_store_directory().glob("*/*/"):
            if info_dir.is_dir() and not (info_dir / MODEL_INFO_FILE).exists():
                shutil.rmtree(info_dir)
                removed.append(f"{info_dir.parent.name}:{info_dir.name}")
                logger.warning("removed %s from the model store: an incomplete copy (its writer died)", removed[-1])
        if backend_cache.pairs_with_store():
            backend_cache.remove_orphans({entry.name: {stored.version for stored in versions(entry.name)}
                                          for entry in model_store_directory().iterdir() if entry.is_dir()})
    return removed


def latest(name: str) -> StoredModel | None:
    """The version `name` serves: the newest complete one that is not held (`HELD`), read fresh from the
    store (another process may write)."""
    try:
        model = bentoml.models.get(f"{name}:latest")
    except BentoMLException:  # none, or `latest` names a version deleted a moment ago
        return None
    if not _ours(model):
        return None
    newest = _stored(model)
    if HELD not in newest.metadata:
        return newest
    return next((stored for stored in versions(name) if HELD not in stored.metadata), None)
