"""Loaded models and the batch logic of the inference service. Knows nothing about HTTP.

A batch holds items (model name, text) from many concurrent requests: it is grouped by model,
each group runs in length-sorted forward passes of bounded size, and results are scattered back
into the batch's order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from setfit import SetFitModel

from fewshot import store
from fewshot.classifier import best_labels, column_labels, top_labels
from fewshot.schemas import ItemEmbedding, ItemPrediction, LabelScore, TextItem
from fewshot.sub_batches import plan_sub_batches

logger = logging.getLogger("fewshot.inference")


CPU_MAX_BATCH_TOKENS = 768
"""Measured on 2 CPU cores (bench): 512-1024 padded tokens per pass are ~2x one padded pass of 64."""
GPU_MAX_BATCH_TOKENS = 16_384
"""TEI's default max-batch-tokens: large passes keep a GPU busy and bound activation memory."""


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_threads(count: int | None) -> None:
    """Torch's intra-op threads for this process (INFERENCE_THREADS); None keeps one per core."""
    if count:
        torch.set_num_threads(count)


@dataclass(frozen=True)
class InferenceRuntime:
    """Where and how models run: device, weight dtype and the token budget of one forward pass."""

    device: str
    dtype: torch.dtype
    max_batch_tokens: int
    trust_remote_code: bool = False

    @classmethod
    def resolve(cls, dtype: str = "AUTO", max_batch_tokens: int | None = None,
                device: str | None = None, trust_remote_code: bool = False) -> InferenceRuntime:
        """Fill in the AUTO choices for this machine (settings: INFERENCE_DTYPE, MAX_BATCH_TOKENS)."""
        device = device or pick_device()
        on_gpu = device.startswith("cuda")
        if dtype == "AUTO":
            chosen = torch.float16 if on_gpu else torch.float32  # half precision only pays on a GPU
        else:
            chosen = {"FLOAT32": torch.float32, "FLOAT16": torch.float16, "BFLOAT16": torch.bfloat16}[dtype]
        budget = max_batch_tokens or (GPU_MAX_BATCH_TOKENS if on_gpu else CPU_MAX_BATCH_TOKENS)
        return cls(device, chosen, budget, trust_remote_code)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: SetFitModel
    labels: list[str]
    column_labels: list[str]
    """The label of each `predict_proba` column, in column order."""
    max_batch_tokens: int
    """Padded tokens per forward pass (see fewshot.sub_batches)."""

    @classmethod
    def load(cls, stored: store.StoredModel, runtime: InferenceRuntime) -> LoadedModel:
        started = time.perf_counter()
        model = SetFitModel.from_pretrained(str(stored.path), device=runtime.device,
                                            trust_remote_code=runtime.trust_remote_code)
        model.model_body.eval()
        if runtime.dtype != torch.float32:
            model.model_body.to(runtime.dtype)
            if model.has_differentiable_head:  # a torch head must match the body's outputs
                model.model_head.to(runtime.dtype)
        logger.info("loaded model %s in %.2fs on %s (%s)", stored.tag, time.perf_counter() - started,
                    runtime.device, str(runtime.dtype).removeprefix("torch."))
        return cls(stored.name, stored.version, model, stored.labels, column_labels(model, stored.labels),
                   runtime.max_batch_tokens)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text as the forward pass will see them (truncated to the model's maximum)."""
        body = self.model.model_body
        encoded = body.tokenizer(texts, truncation=True, max_length=body.max_seq_length,
                                 return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self._in_sub_batches(texts, lambda sub: self.model.predict_proba(
            sub, batch_size=len(sub), as_numpy=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._in_sub_batches(texts, lambda sub: self.model.model_body.encode(
            sub, batch_size=len(sub), convert_to_numpy=True, show_progress_bar=False))

    def _in_sub_batches(self, texts: list[str], forward: Callable[[list[str]], Any]) -> np.ndarray:
        """One forward pass per length-sorted sub-batch; rows come back in `texts` order, as float32."""
        passes = plan_sub_batches(self.token_lengths(texts), self.max_batch_tokens)
        with torch.inference_mode():
            outputs = [np.asarray(forward([texts[i] for i in positions]), dtype=np.float32) for positions in passes]
        if not outputs:
            return np.empty((0, 0), dtype=np.float32)
        rows = np.empty((len(texts), outputs[0].shape[1]), dtype=np.float32)
        rows[np.concatenate(passes)] = np.concatenate(outputs)
        return rows


class ModelCache:
    """Loaded models by reference (`name`: its latest version, or `name:version`): at most
    `max_models`, kept current with the store.

    Requests never read the store for a cached model: a background thread looks for newer
    versions every `refresh_seconds`, loads them beside the old one and swaps the reference,
    so requests in flight finish on the version they started with; a deleted model or version
    is dropped. Beyond `max_models` the least recently used one is unloaded (a batch still using
    it keeps its reference). Two references to one version share one loaded model.
    """

    def __init__(self, load: Callable[[store.StoredModel], LoadedModel], refresh_seconds: float,
                 max_models: int, resolve: Callable[[str], store.StoredModel | None] = store.resolve,
                 on_evict: Callable[[str], None] | None = None) -> None:
        self._load = load
        self._on_evict = on_evict
        self._resolve = resolve
        self._refresh_seconds = refresh_seconds
        self._max_models = max_models
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards _models; never held while loading
        self._load_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._stopped = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_forever, name="model-refresh", daemon=True)
        self._refresher.start()

    def get(self, reference: str) -> LoadedModel | None:
        loaded = self._touch(reference)
        if loaded is not None:
            return loaded
        # One load per cold model, however many batches ask for it at once.
        with self._load_locks[reference]:
            loaded = self._touch(reference)
            if loaded is None:
                stored = self._resolve(reference)
                if stored is None:
                    return None
                loaded = self._loaded_version(stored) or self._load(stored)
                self._put(reference, loaded)
        return loaded

    def loaded_names(self) -> list[str]:
        """References of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def refresh(self, names: set[str] | None = None) -> None:
        """Swap in newer versions of cached models and drop models deleted from the store;
        only the references to models in `names` when given (after a deletion: at once)."""
        with self._lock:
            snapshot = [(reference, loaded) for reference, loaded in self._models.items()
                        if names is None or store.split_reference(reference)[0] in names]
        for reference, current in snapshot:
            stored = self._resolve(reference)
            if stored is None:
                logger.info("model %s left the store; unloading", reference)
                with self._lock:
                    self._models.pop(reference, None)
            elif stored.version != current.version:
                with self._load_locks[reference]:
                    replacement = self._loaded_version(stored) or self._load(stored)
                    with self._lock:
                        if reference in self._models:  # not evicted meanwhile
                            self._models[reference] = replacement
                logger.info("switched %s from version %s to %s", reference, current.version, stored.version)

    def stop(self) -> None:
        self._stopped.set()

    @classmethod
    def for_runtime(cls, runtime: InferenceRuntime, refresh_seconds: float, max_models: int,
                    on_load: Callable[[str], None] | None = None,
                    on_evict: Callable[[str], None] | None = None) -> ModelCache:
        def load(stored: store.StoredModel) -> LoadedModel:
            loaded = LoadedModel.load(stored, runtime)
            if on_load is not None:
                on_load(stored.tag)
            return loaded

        return cls(load, refresh_seconds, max_models, on_evict=on_evict)

    def _touch(self, reference: str) -> LoadedModel | None:
        with self._lock:
            loaded = self._models.get(reference)
            if loaded is not None:
                self._models.move_to_end(reference)
            return loaded

    def _loaded_version(self, stored: store.StoredModel) -> LoadedModel | None:
        """That version, if another reference already loaded it (`intents` and `intents:<latest>`)."""
        with self._lock:
            return next((loaded for loaded in self._models.values()
                         if (loaded.name, loaded.version) == (stored.name, stored.version)), None)

    def _put(self, reference: str, loaded: LoadedModel) -> None:
        with self._lock:
            self._models[reference] = loaded
            self._models.move_to_end(reference)
            while len(self._models) > self._max_models:
                evicted, _ = self._models.popitem(last=False)
                logger.info("unloaded %s: least recently used of more than %d loaded models",
                            evicted, self._max_models)
                if self._on_evict is not None:
                    self._on_evict(evicted)

    def _refresh_forever(self) -> None:
        while not self._stopped.wait(self._refresh_seconds):
            try:
                self.refresh()
            except Exception:  # keep serving the cached versions; try again next round
                logger.exception("model refresh failed")


Result = TypeVar("Result")


def _per_model(cache: ModelCache, items: Sequence[TextItem], missing: Result,
               run: Callable[[LoadedModel, list[TextItem]], list[Result]]) -> list[Result]:
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
        outputs = run(loaded, [items[i] for i in indices])
        logger.debug("%s: %d texts in %.1f ms", name, len(indices), (time.perf_counter() - started) * 1000)
        for position, output in zip(indices, outputs, strict=True):
            results[position] = output
    return results


def predict_items(cache: ModelCache, items: Sequence[TextItem]) -> list[ItemPrediction]:
    def run(loaded: LoadedModel, group: list[TextItem]) -> list[ItemPrediction]:
        probabilities = loaded.predict_proba([item.text for item in group])
        labels, scores = best_labels(probabilities, loaded.column_labels)
        # Requests in one batch may ask for different k: rank once for the largest, cut per item.
        ranked = top_labels(probabilities, loaded.column_labels, max(item.top_k or 0 for item in group))
        return [ItemPrediction(label=label, score=score, scores=[LabelScore(label=name, score=probability)
                                                                 for name, probability in row[:item.top_k]]
                               if item.top_k else None)
                for label, score, row, item in zip(labels, scores, ranked, group, strict=True)]

    return _per_model(cache, items, ItemPrediction(found=False), run)


def embed_items(cache: ModelCache, items: Sequence[TextItem]) -> list[ItemEmbedding]:
    def run(loaded: LoadedModel, group: list[TextItem]) -> list[ItemEmbedding]:
        return [ItemEmbedding(vector=vector) for vector in loaded.embed([item.text for item in group]).tolist()]

    return _per_model(cache, items, ItemEmbedding(found=False), run)
