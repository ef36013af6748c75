"""A batch of the inference service in, one result per item out, in batch order.

A batch holds items (model reference, text) from many concurrent requests: it is grouped by
model, each group runs in one call of its loaded model (which cuts it into length-sorted forward
passes), and results are scattered back into the batch's order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from fewshot.serving.batching import positions_by_model
from fewshot.serving.items import ItemEmbedding, ItemPrediction, TextItem
from fewshot.serving.model_cache import ModelCache
from fewshot.serving.model_loading import LoadedModel

logger = logging.getLogger("fewshot.inference")

Result = TypeVar("Result")
Computed = Callable[[str, str, int], None]
"""Told, after each group, which backend ran it (`ServingBackend.backend`), which path around the body
(`numpy` or `sentence-transformers`) and how many texts it had."""


def _ignore(backend: str, pipeline: str, texts: int) -> None:
    return None


def _per_model(cache: ModelCache, items: Sequence[TextItem], missing: Result,
               run: Callable[[LoadedModel, list[TextItem]], list[Result]], computed: Computed) -> list[Result]:
    """Group a batch by model, run each group in one call, and put results back in batch order."""
    results: list[Any] = [missing] * len(items)
    for name, indices in positions_by_model(items).items():
        loaded = cache.get(name)
        if loaded is None:
            continue
        started = time.perf_counter()
        outputs = run(loaded, [items[i] for i in indices])
        computed(loaded.backend.backend, "numpy" if loaded.pipeline is not None else "sentence-transformers",
                 len(indices))
        logger.debug("%s: %d texts in %.1f ms", name, len(indices), (time.perf_counter() - started) * 1000)
        for position, output in zip(indices, outputs, strict=True):
            results[position] = output
    return results


def _refusing_long_texts(run: Callable[[LoadedModel, list[TextItem]], list[Result]],
                         refused: Callable[[str], Result]) -> Callable[[LoadedModel, list[TextItem]], list[Result]]:
    """`run` on the group's texts its version takes; the others answered `refused(why)`."""
    def checked(loaded: LoadedModel, group: list[TextItem]) -> list[Result]:
        reasons = [loaded.text_refused(item.text) for item in group]
        if not any(reasons):
            return run(loaded, group)
        kept = [item for item, reason in zip(group, reasons, strict=True) if reason is None]
        answers = iter(run(loaded, kept) if kept else [])
        return [refused(reason) if reason else next(answers) for reason in reasons]

    return checked


def predict_items(cache: ModelCache, items: Sequence[TextItem], computed: Computed = _ignore) -> list[ItemPrediction]:
    def run(loaded: LoadedModel, group: list[TextItem]) -> list[ItemPrediction]:
        texts = [item.text for item in group]
        probabilities, read = loaded.predict(texts, with_embeddings=loaded.decisions.reads_embeddings(group))
        # abstention by the scope score reads the embeddings: one pass gives both
        answers = loaded.decisions.answer(probabilities, group, read.vectors if read.vectors.size else None)
        for answer, tokens, truncated in zip(answers, read.tokens, read.truncated, strict=True):
            answer.tokens, answer.truncated = tokens, truncated
        return answers

    return _per_model(cache, items, ItemPrediction(found=False),
                      _refusing_long_texts(run, lambda why: ItemPrediction(text_refused=why)), computed)


def embed_items(cache: ModelCache, items: Sequence[TextItem], computed: Computed = _ignore) -> list[ItemEmbedding]:
    def run(loaded: LoadedModel, group: list[TextItem]) -> list[ItemEmbedding]:
        read = loaded.embed([item.text for item in group])
        vectors = np.ascontiguousarray(read.vectors, dtype=np.float32)
        return [ItemEmbedding(vector=row.tobytes(), tokens=tokens, truncated=truncated)
                for row, tokens, truncated in zip(vectors, read.tokens, read.truncated, strict=True)]

    return _per_model(cache, items, ItemEmbedding(found=False),
                      _refusing_long_texts(run, lambda why: ItemEmbedding(text_refused=why)), computed)
