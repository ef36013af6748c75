"""Loaded models and the batch logic of the inference service. Knows nothing about HTTP.

A batch holds items (model name, text) from many concurrent requests: it is grouped by model,
each group runs one forward pass, and results are scattered back into the batch's order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from setfit import SetFitModel

from fewshot import store
from fewshot.classifier import best_labels, column_labels
from fewshot.schemas import ItemEmbedding, ItemPrediction, TextItem

logger = logging.getLogger("fewshot.inference")

ENCODE_BATCH_SIZE = 64


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: SetFitModel
    labels: list[str]
    column_labels: list[str]
    """The label of each `predict_proba` column, in column order."""

    @classmethod
    def load(cls, stored: store.StoredModel, device: str) -> LoadedModel:
        started = time.perf_counter()
        model = SetFitModel.from_pretrained(str(stored.path), device=device)
        model.model_body.eval()
        logger.info("loaded model %s in %.2fs on %s", stored.tag, time.perf_counter() - started, device)
        return cls(stored.name, stored.version, model, stored.labels, column_labels(model, stored.labels))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            probabilities = self.model.predict_proba(texts, batch_size=ENCODE_BATCH_SIZE, as_numpy=True)
        return np.asarray(probabilities, dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            vectors = self.model.model_body.encode(texts, batch_size=ENCODE_BATCH_SIZE,
                                                   convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class ModelCache:
    """Loaded models by name, kept current with the store's latest version.

    Requests never read the store for a cached model: a background thread looks for newer
    versions every `refresh_seconds`, loads them beside the old one and swaps the reference,
    so requests in flight finish on the version they started with.
    """

    def __init__(self, refresh_seconds: float, device: str | None = None,
                 loader: Callable[[store.StoredModel, str], LoadedModel] = LoadedModel.load) -> None:
        self.device = device or pick_device()
        self._refresh_seconds = refresh_seconds
        self._loader = loader
        self._models: dict[str, LoadedModel] = {}
        self._load_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._stopped = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_forever, name="model-refresh", daemon=True)
        self._refresher.start()

    def get(self, name: str) -> LoadedModel | None:
        loaded = self._models.get(name)
        if loaded is not None:
            return loaded
        # One load per cold model, however many batches ask for it at once.
        with self._load_locks[name]:
            loaded = self._models.get(name)
            if loaded is None:
                stored = store.latest(name)
                if stored is None:
                    return None
                loaded = self._models[name] = self._loader(stored, self.device)
        return loaded

    def refresh(self) -> None:
        """Swap in newer versions of cached models and drop models deleted from the store."""
        for name, current in list(self._models.items()):
            stored = store.latest(name)
            if stored is None:
                logger.info("model %s left the store; unloading", name)
                self._models.pop(name, None)
            elif stored.version != current.version:
                with self._load_locks[name]:
                    self._models[name] = self._loader(stored, self.device)
                logger.info("switched %s from version %s to %s", name, current.version, stored.version)

    def stop(self) -> None:
        self._stopped.set()

    def _refresh_forever(self) -> None:
        while not self._stopped.wait(self._refresh_seconds):
            try:
                self.refresh()
            except Exception:  # keep serving the cached versions; try again next round
                logger.exception("model refresh failed")


Result = TypeVar("Result")


def _per_model(cache: ModelCache, items: Sequence[TextItem], missing: Result,
               run: Callable[[LoadedModel, list[str]], list[Result]]) -> list[Result]:
    """Group a batch by model, run each group in one call, and put results back in batch order."""
    positions: defaultdict[str, list[int]] = defaultdict(list)
    for position, item in enumerate(items):
        positions[item.model_name].append(position)
    results: list[Any] = [missing] * len(items)
    for name, indices in positions.items():
        loaded = cache.get(name)
        if loaded is None:
            continue
        started = time.perf_counter()
        outputs = run(loaded, [items[i].text for i in indices])
        logger.debug("%s: %d texts in %.1f ms", name, len(indices), (time.perf_counter() - started) * 1000)
        for position, output in zip(indices, outputs, strict=True):
            results[position] = output
    return results


def predict_items(cache: ModelCache, items: Sequence[TextItem]) -> list[ItemPrediction]:
    def run(loaded: LoadedModel, texts: list[str]) -> list[ItemPrediction]:
        labels, scores = best_labels(loaded.predict_proba(texts), loaded.column_labels)
        return [ItemPrediction(label=label, score=score) for label, score in zip(labels, scores, strict=True)]

    return _per_model(cache, items, ItemPrediction(found=False), run)


def embed_items(cache: ModelCache, items: Sequence[TextItem]) -> list[ItemEmbedding]:
    def run(loaded: LoadedModel, texts: list[str]) -> list[ItemEmbedding]:
        return [ItemEmbedding(vector=vector) for vector in loaded.embed(texts).tolist()]

    return _per_model(cache, items, ItemEmbedding(found=False), run)
