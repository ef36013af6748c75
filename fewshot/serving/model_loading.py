"""Model loading: a stored version loaded where and how its runtime says (fewshot/serving/runtime.py:
device, dtype, token budget) and the loaded model's forward passes, in length-sorted sub-batches. No
HTTP, no batching across requests.

A version whose export and numpy path were made and checked before (by any worker, kept beside the
export: fewshot/serving/numpy_pipeline.py) loads from those files alone, and this module imports no
torch, SetFit, sentence-transformers or transformers for it: an inference worker whose versions are
all exported never imports them (bench/worker_footprint.py measures what that saves). Everything
else loads through SetFit (fewshot/serving/torch_loading.py, imported when first needed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from fewshot import backend_cache, store
from fewshot.backend_cache import ServingBackend
from fewshot.serving import backends
from fewshot.serving.backends import ExportedBody
from fewshot.serving.decisions import DecisionRule
from fewshot.serving.labels import column_labels
from fewshot.serving.long_texts import TRUNCATE, LongTextReader, Reading, refusal, text_limit, window_of
from fewshot.serving.numpy_pipeline import SAVED_DIRECTORY, NumpyPipeline, Read, Refused
from fewshot.serving.runtime import InferenceRuntime
from fewshot.serving.scope import ScopeIndex

logger = logging.getLogger("fewshot.inference")


def single_threaded_numpy() -> None:
    """numpy's own BLAS (OpenBLAS) on one thread in the inference worker. The forward passes have their
    threads (torch's OpenMP, ONNX Runtime's, OpenVINO's), which spin a while after each pass; a numpy
    product large enough for OpenBLAS to start its threads (the scope score: a text against a few
    thousand training embeddings) then fought them for the cores. Measured on 2 cores, MiniLM's
    one-text forward pass and the score against 3,199 embeddings, alternated: 26.7 ms per call
    against 7.2 ms for the pass alone; with OpenBLAS on one thread, 7.4 ms (the score alone: 59 µs)."""
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(internal_api="openblas").limit(limits=1)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: Any
    """The SetFitModel, when sentence-transformers serves the version or checked its numpy path at
    this load; None when the version loaded from its saved numpy path alone (no torch)."""
    labels: list[str]
    decisions: DecisionRule
    """Its probabilities' columns and thresholds: how they become answers."""
    max_batch_tokens: int
    """Padded tokens per forward pass (see fewshot.serving.batching)."""
    backend: ServingBackend
    pipeline: NumpyPipeline | None = None
    """The numpy serving path of an exported body; None: sentence-transformers serves it (torch
    bodies, and what `backend.pipeline_error` names)."""
    long_texts: str = TRUNCATE
    """How it reads a text longer than its window (fewshot/serving/long_texts.py; the version's metadata)."""
    window: int | None = None
    """Tokens per text in one forward pass (its body's max_seq_length); None: no limit (static embeddings)."""
    configured_text_chars: int | None = None
    """MAX_TEXT_CHARS where set (else the version's limit follows its window: `text_refused`)."""

    @classmethod
    def load(cls, stored: store.StoredModel, runtime: InferenceRuntime, export_missing: bool = True,
             record: bool = True) -> LoadedModel:
        """Load a stored version with the runtime's backend; with `export_missing` false, a version not
        exported yet loads with torch (its `backend.exporting` says so) instead of waiting for the export.
        With `record` false, what serves it is left for the caller to `record_backend` once it does."""
        started = time.perf_counter()
        saved = saved_pipeline(stored, runtime)
        if saved is not None:
            pipeline, serving = saved
            model, head = None, pipeline.head
        else:
            from fewshot.serving import torch_loading  # torch, SetFit and sentence-transformers: ~0.5 GiB, ~4 s

            model, serving, pipeline = torch_loading.load(stored, runtime, export_missing)
            head = model.model_head
        logger.info("loaded model %s in %.2fs on %s (%s%s%s)", stored.tag, time.perf_counter() - started,
                    runtime.device, serving.backend if serving.backend != backends.TORCH else runtime.dtype,
                    "; its saved numpy path, no torch" if model is None else "",
                    f"; torch until its {serving.requested} export is made" if serving.exporting else "")
        loaded = cls.of(stored, runtime, model, serving, pipeline, head)
        if record:
            loaded.record_backend(stored)
        return loaded

    @classmethod
    def of(cls, stored: store.StoredModel, runtime: InferenceRuntime, model: Any, serving: ServingBackend,
           pipeline: NumpyPipeline | None, head: Any) -> LoadedModel:
        """The version as loaded from its parts (`head`: the SetFit model's, or the numpy path's), reading
        long texts as its metadata says (`long_texts`)."""
        columns = column_labels(head, stored.labels, refuses=stored.refuses)
        decisions = DecisionRule.from_metadata(stored.tag, stored.metadata, columns, ScopeIndex.load(stored.path))
        long_texts = str(stored.metadata.get("long_texts") or TRUNCATE)
        if pipeline is not None:
            pipeline.read_long_texts(long_texts)
            window = pipeline.window
        else:
            window = window_of(model.model_body) if callable(model.model_body.tokenizer) else None
        return cls(stored.name, stored.version, model, stored.labels, decisions, runtime.max_batch_tokens, serving,
                   pipeline, long_texts, window, runtime.max_text_chars)

    def text_refused(self, text: str) -> str | None:
        """Why the version does not take `text` (longer than its limit: MAX_TEXT_CHARS, or what its
        window and long-texts policy read); None when it does."""
        limit = text_limit(self.window, self.long_texts, self.configured_text_chars)
        if limit is None or len(text) <= limit:
            return None
        return refusal(len(text), limit, self.window, self.long_texts, self.configured_text_chars is not None)

    def with_backend(self, **changes: Any) -> LoadedModel:
        """The same loaded model, its `backend` record changed (e.g. AUTO's timings added)."""
        return replace(self, backend=self.backend.model_copy(update=changes))

    def record_backend(self, stored: store.StoredModel) -> None:
        """What serves the version, for its model view (`backend`): written once this is what answers."""
        backend_cache.write_status(self.name, self.version, self.backend)
        if store.resolve(stored.tag) is None:  # deleted while it loaded: the runtimes hold their files in memory
            backend_cache.remove(self.name, self.version)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text as the forward pass will see them (truncated to the model's maximum)."""
        if self.pipeline is not None:
            return self.pipeline.token_lengths(texts)
        body = self.model.model_body
        if not callable(body.tokenizer):  # a `tokenizers.Tokenizer`: a static-embedding body (no length limit)
            return [len(encoding.ids) for encoding in body.tokenizer.encode_batch(texts)]
        encoded = body.tokenizer(texts, truncation=True, max_length=body.max_seq_length,
                                 return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, each text cut at the window (AUTO's timing and agreement; answers use `predict`)."""
        if self.pipeline is not None:
            return self.pipeline.predict_proba(texts)
        return self._in_sub_batches(texts, lambda sub: self.model.predict_proba(
            sub, batch_size=len(sub), as_numpy=True))

    def predict(self, texts: list[str], with_embeddings: bool = False) -> tuple[np.ndarray, Read]:
        """The probabilities, and how the texts were read (with their embeddings where asked for: the
        scope score reads them), each text read by the version's long-texts policy."""
        if self.pipeline is not None:
            read = self.pipeline.read(texts)
            return self.pipeline.probabilities(read.vectors), read
        reading = self._reading(texts)
        if not reading.texts_as_sent(texts):
            read = self._read_segments(reading)
            return self._head_probabilities(read.vectors), read
        if with_embeddings:  # only versions trained here have a scope: their scikit-learn head
            embeddings = self._in_sub_batches(texts, lambda sub: self.model.encode(sub, batch_size=len(sub)))
            return self._head_probabilities(embeddings, normalized=True), \
                Read(embeddings, reading.tokens, reading.truncated)
        probabilities = self._in_sub_batches(texts, lambda sub: self.model.predict_proba(
            sub, batch_size=len(sub), as_numpy=True))
        return probabilities, Read(np.empty((len(texts), 0), dtype=np.float32), reading.tokens, reading.truncated)

    def predict_with_embeddings(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities and the body's embeddings they were computed from (the scope score reads them)."""
        probabilities, read = self.predict(texts, with_embeddings=True)
        return probabilities, read.vectors

    def embed(self, texts: list[str]) -> Read:
        """Sentence embeddings (float32) as the body gives them, each text read by the version's
        long-texts policy, with the tokens read and whether each text was cut."""
        if self.pipeline is not None:
            return self.pipeline.read(texts)
        reading = self._reading(texts)
        return self._read_segments(reading)

    @cached_property
    def _torch_reader(self) -> LongTextReader | None:
        """The torch path's reader, made once: it copies the body's tokenizer (50k-token vocabularies: not
        per batch)."""
        return LongTextReader.for_body(self.model.model_body, self.long_texts)

    def _reading(self, texts: list[str]) -> Reading:
        """The torch path's plan of how to read `texts` (a body without a fast tokenizer or a window, e.g.
        static embeddings, reads all of each)."""
        reader = self._torch_reader
        if reader is None:  # lengths only
            tokens = self.token_lengths(texts)
            return Reading(list(texts), np.arange(len(texts)), np.ones(len(texts)), tokens, [False] * len(texts))
        return reader.read(texts)

    def _read_segments(self, reading: Reading) -> Read:
        body = self.model.model_body
        vectors = self._in_sub_batches(reading.segments, lambda sub: body.encode(
            sub, batch_size=len(sub), convert_to_numpy=True, show_progress_bar=False))
        ends_normalized = type(body[len(body) - 1]).__name__ == "Normalize"
        return Read(reading.pool(vectors, renormalize=ends_normalized), reading.tokens, reading.truncated)

    def _head_probabilities(self, embeddings: np.ndarray, normalized: bool = False) -> np.ndarray:
        """The head on the body's embeddings, as SetFitModel.predict_proba applies it (`normalized`: the
        embeddings already had SetFit's `normalize_embeddings` applied)."""
        if self.model.normalize_embeddings and not normalized:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        if self.model.has_differentiable_head:
            import torch

            with torch.inference_mode():
                return self.model.model_head.predict_proba(torch.from_numpy(embeddings)).float().numpy()
        probabilities = self.model.model_head.predict_proba(embeddings)
        if isinstance(probabilities, list):  # one-vs-rest: a column per label
            probabilities = np.stack(probabilities, axis=1)
        return np.asarray(probabilities, dtype=np.float32)

    def _in_sub_batches(self, texts: list[str], forward: Callable[[list[str]], Any]) -> np.ndarray:
        """One forward pass per length-sorted sub-batch; rows come back in `texts` order, as float32."""
        from fewshot.serving.torch_loading import in_sub_batches

        return in_sub_batches(texts, forward, self.model.model_body.max_seq_length, self.max_batch_tokens,
                              self.token_lengths)


def saved_pipeline(stored: store.StoredModel, runtime: InferenceRuntime) -> tuple[NumpyPipeline, ServingBackend] | None:
    """The version's numpy path as it was checked and saved beside its export for the runtime's
    backend, opened with no torch; None when there is none to open (not exported or not checked yet,
    INFERENCE_PIPELINE=SENTENCE_TRANSFORMERS, torch asked for), or it fails to open (said in the log:
    the caller loads through SetFit, which checks and saves it again)."""
    if not runtime.numpy_pipeline or runtime.backend.backend == backends.TORCH:
        return None
    choice, short_of_it = backends.for_version(stored, runtime.backend)
    directory = backends.export_directory(stored, choice)
    if not (directory / SAVED_DIRECTORY).is_dir():
        return None
    try:
        body = ExportedBody.open(directory, choice, runtime.threads)
        pipeline = NumpyPipeline.load(directory / SAVED_DIRECTORY, body.run, body.input_names, runtime.max_batch_tokens)
    except Exception as error:  # e.g. a runtime upgraded under an old export: checked again through SetFit
        reason = str(error) if isinstance(error, Refused) else f"{type(error).__name__}: {error}"
        logger.warning("%s: its saved numpy path did not open (%s); loading it through SetFit", stored.tag, reason)
        return None
    return pipeline, ServingBackend(requested=runtime.backend.variant, backend=choice.backend,
                                    quantize=choice.quantize, error=short_of_it, prepare_seconds=0.0,
                                    pipeline="numpy")
