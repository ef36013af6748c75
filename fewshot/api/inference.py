"""Predictions and embeddings: the gateway's client to the inference service, and the two serving routes.

Every text a request (or a learning route) needs answered goes through `InferenceClient`: concurrent
requests share one call to the inference service (fewshot.serving.coalesce), and a request that waited
MAX_LATENCY_MS for a call is answered 503 (with one gateway worker, requests queue here rather than in
BentoML's dispatcher, so this is where load is shed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
from bentoml.exceptions import ServiceUnavailable
from starlette.responses import JSONResponse, Response

from fewshot.api import errors
from fewshot.api.inference_schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
)
from fewshot.api.openai_compat import openai_response
from fewshot.api.prediction_sampling import PredictionSampler
from fewshot.records import embedding_cache
from fewshot.serving.coalesce import Coalescer
from fewshot.serving.items import ItemEmbedding, ItemPrediction, TextItem
from fewshot.store import StoredModel

Send = Callable[[list[TextItem]], Awaitable[list]]

CHARS_PER_TOKEN_ESTIMATE = 4
"""The gateway has no tokenizer: a text's tokens are estimated from its length (English averages
~4.5 characters per token of BERT-style and BPE tokenizers). The inference service cuts its forward
passes by the real counts (MAX_BATCH_TOKENS); this only keeps calls to it even."""
CALL_TOKENS_PER_TEXT = 256
"""A call to the inference service holds at most MAX_BATCH_SIZE × this many estimated tokens (64 texts:
16,384, TEI's default max-batch-tokens): a request of long texts does not take the call of 64 short ones."""


def estimated_tokens(item: TextItem) -> int:
    return len(item.text) // CHARS_PER_TOKEN_ESTIMATE + 2


class TextRefused(Exception):
    """A text is longer than the version takes (fewshot/serving/long_texts.py); `index`: its position."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(why)
        self.index = index


class InferenceClient:
    """The inference service as the gateway's routes call it: items in, results out, in order."""

    def __init__(self, send_predict: Send, send_embed: Send, refresh: Callable[[list[str]], Awaitable[None]],
                 max_batch_size: int, max_latency_ms: float, max_texts_per_request: int) -> None:
        shed = {"max_wait_seconds": max_latency_ms / 1000,
                "waited_too_long": lambda: ServiceUnavailable("too many requests are waiting; retry shortly"),
                "cost": estimated_tokens, "max_cost": max_batch_size * CALL_TOKENS_PER_TEXT}
        self.predict: Coalescer[TextItem, ItemPrediction] = Coalescer(send_predict, max_items=max_batch_size, **shed)
        self.embed: Coalescer[TextItem, ItemEmbedding] = Coalescer(send_embed, max_items=max_batch_size, **shed)
        self.refresh = refresh
        """Re-read these models from the store now (after a deletion)."""
        self._chunk = max_texts_per_request

    async def answers(self, version: str, texts: list[str], **options: object) -> list[ItemPrediction] | None:
        """The version's predictions for any number of texts, a request's worth at a time (None: deleted meanwhile)."""
        answers: list[ItemPrediction] = []
        for start in range(0, len(texts), self._chunk):
            answers += await self.predict([TextItem(model_name=version, text=text, **options)
                                           for text in texts[start:start + self._chunk]])
        if not all(answer.found for answer in answers):
            return None
        _raise_refused(answers, list(range(len(texts))))
        return answers

    async def vectors(self, version: StoredModel, texts: list[str]) -> np.ndarray | None:
        """The version's embeddings of `texts`: those its trainer cached (the texts it was trained and
        evaluated on), the rest from the inference service a request's worth at a time (None: deleted
        meanwhile)."""
        cached = await asyncio.to_thread(embedding_cache.read, version.name, version.version) if texts else {}
        first = {text: index for index, text in reversed(list(enumerate(texts)))}
        missing = list(dict.fromkeys(text for text in texts if text not in cached))
        for start in range(0, len(missing), self._chunk):
            chunk = missing[start:start + self._chunk]
            results = await self.embed([TextItem(model_name=version.tag, text=text) for text in chunk])
            if not all(result.found for result in results):
                return None
            _raise_refused(results, [first[text] for text in chunk])
            cached.update((text, np.frombuffer(result.vector, dtype=np.float32))
                          for text, result in zip(chunk, results, strict=True))
        return np.stack([cached[text] for text in texts]) if texts else np.empty((0, 0), dtype=np.float32)


async def predict(client: InferenceClient, request: PredictRequest,
                  sampler: PredictionSampler | None) -> PredictResponse | JSONResponse:
    answer = prediction_answer(request, await client.predict(request.items()))
    if sampler is not None and isinstance(answer, PredictResponse):
        sampler.offer(request.model_name, request.texts)
    return answer


async def embeddings(client: InferenceClient,
                     request: EmbeddingsRequest) -> EmbeddingsResponse | Response:
    return embeddings_answer(request, await client.embed(request.items()))


def prediction_answer(request: PredictRequest, results: list[ItemPrediction]) -> PredictResponse | JSONResponse:
    """/v1/predict's answer from the inference service's results, one per text: the route's and a batch
    line's (batches/), so an answer from a file is the one the route gives."""
    if not all(result.found for result in results):
        return errors.unknown_model(request.model_name)
    if too_long := _text_refused(results, "texts"):
        return too_long
    if refused := next((result.error for result in results if result.error), None):
        return errors.invalid(refused)  # asked what this version cannot do (e.g. abstain, multi-label)
    return PredictResponse(predictions=[
        Prediction(text=text, label=result.label, score=result.score, labels=result.labels,
                   abstained=result.abstained, reason=result.reason, scope_score=result.scope_score,
                   scores=result.scores, tokens=result.tokens, truncated=result.truncated)
        for text, result in zip(request.texts, results, strict=True)
    ])


def embeddings_answer(request: EmbeddingsRequest, results: list[ItemEmbedding]) -> EmbeddingsResponse | Response:
    """/v1/embeddings' answer (ours or OpenAI's shape) from the inference service's results, one per text."""
    if not all(result.found for result in results):
        return errors.unknown_model(request.reference, request.field)
    if too_long := _text_refused(results, "input" if request.is_openai else "texts"):
        return too_long
    if request.is_openai:
        return openai_response(request, results)
    return EmbeddingsResponse(embeddings=[result.floats() for result in results],
                              tokens=[result.tokens for result in results],
                              truncated=[result.truncated for result in results])


def _raise_refused(results: list[ItemPrediction] | list[ItemEmbedding], positions: list[int]) -> None:
    for position, result in zip(positions, results, strict=True):
        if result.text_refused:
            raise TextRefused(position, result.text_refused)


def _text_refused(results: list[ItemPrediction] | list[ItemEmbedding], field: str) -> JSONResponse | None:
    """A 400 naming the first text longer than its version takes (fewshot/serving/long_texts.py)."""
    for index, result in enumerate(results):
        if result.text_refused:
            return errors.invalid(f"{field}[{index}]: {result.text_refused}")
    return None
