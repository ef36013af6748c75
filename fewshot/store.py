"""The BentoML model store: the only module that registers, resolves or reads stored models.

A model version's files are a SetFit model directory; its metadata carries what the API reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from fewshot.schemas import ModelView

# Marks our models in the store, so that `bentoml models list` users can tell them apart.
STORE_LABELS = {"kind": "setfit-classifier", "owner": "fewshot"}


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

    def view(self) -> ModelView:
        meta = self.metadata
        return ModelView(
            model_name=self.name,
            model_version=self.version,
            base_model=meta["base_model"],
            created_at=meta["created_at"],
            accuracy=meta.get("accuracy"),
            training_duration_seconds=meta["training_duration_seconds"],
            num_examples=meta["num_examples"],
            eval_num_examples=meta["eval_num_examples"],
            labels=meta["labels"],
            job_id=meta.get("job_id"),
        )


def register(name: str, write_files: Callable[[Path], None], metadata: dict[str, Any]) -> StoredModel:
    """Write a new version of `name`; it becomes visible (and `latest`) only once complete."""
    with bentoml.models.create(name, labels=STORE_LABELS, metadata=metadata) as model:
        write_files(Path(model.path))
    return StoredModel(name=name, version=str(model.tag.version), path=Path(model.path),
                       metadata=dict(model.info.metadata))


def _stored(model: bentoml.Model) -> StoredModel:
    return StoredModel(name=model.tag.name, version=str(model.tag.version), path=Path(model.path),
                       metadata=dict(model.info.metadata))


def versions(name: str) -> list[StoredModel]:
    """Every complete version of `name`, newest first."""
    try:
        found = bentoml.models.list(name)
    except NotFound:
        return []
    return [_stored(model) for model in sorted(found, key=lambda m: m.info.creation_time, reverse=True)]


def prune(name: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions of `name` (keep >= 1: the served, newest one stays)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    removed = []
    for old in versions(name)[keep:]:
        bentoml.models.delete(old.tag)
        removed.append(old.tag)
    return removed


def latest(name: str) -> StoredModel | None:
    """The newest complete version of `name`, read fresh from the store (another process may write)."""
    try:
        model = bentoml.models.get(f"{name}:latest")
    except NotFound:
        return None
    return StoredModel(name=name, version=str(model.tag.version), path=Path(model.path),
                       metadata=dict(model.info.metadata))
