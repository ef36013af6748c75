"""Model loading: where and how a stored version runs (device, dtype, token budget) and the loaded
model's forward passes, in length-sorted sub-batches. No HTTP, no batching across requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from setfit import SetFitModel

from fewshot import backend_cache, store
from fewshot.backend_cache import ServingBackend
from fewshot.serving import backends
from fewshot.serving.backends import BackendChoice
from fewshot.serving.batching import plan_sub_batches
from fewshot.serving.decisions import DecisionRule
from fewshot.serving.labels import column_labels
from fewshot.serving.numpy_pipeline import PROBE_TEXTS, NumpyPipeline, Refused, mismatch

logger = logging.getLogger("fewshot.inference")


CPU_MAX_BATCH_TOKENS = 768
"""Measured on 2 CPU cores (bench): 512-1024 padded tokens per pass are ~2x one padded pass of 64."""
GPU_MAX_BATCH_TOKENS = 16_384
"""TEI's default max-batch-tokens: large passes keep a GPU busy and bound activation memory."""


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_threads(runtime: InferenceRuntime) -> None:
    """Torch's intra-op threads for this process: the runtime's (INFERENCE_THREADS) when torch runs
    the bodies; one when ONNX Runtime or OpenVINO do, on the runtime's threads, and torch is left the
    pooling and the head. Torch's OpenMP threads spin between its ops and took CPU from the
    export's threads (MiniLM, 64-text batches in-process: OpenVINO 427 -> 465 and 432 -> 511
    texts/s; ONNX Runtime int8 CPU per text 5.3 -> 2.7-3.3 ms). A version torch serves meanwhile
    (its export under way, or failed) runs on that one thread."""
    torch.set_num_threads(runtime.threads if runtime.backend.backend == backends.TORCH else 1)


def with_torch_threads(threads: int, predict: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], np.ndarray]:
    """`predict` run with torch on `threads` threads (AUTO timing torch in a worker whose exports
    left torch one thread: `use_threads`)."""
    def run(texts: list[str]) -> np.ndarray:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return predict(texts)
        finally:
            torch.set_num_threads(before)

    return run


@dataclass(frozen=True)
class InferenceRuntime:
    """Where and how models run: device, weight dtype, the token budget of one forward pass and
    what runs the body (torch or an ONNX Runtime / OpenVINO export)."""

    device: str
    dtype: torch.dtype
    max_batch_tokens: int
    trust_remote_code: bool = False
    backend: BackendChoice = backends.PYTORCH
    threads: int = 1
    """CPU threads of the forward pass (torch's, or ONNX Runtime's / OpenVINO's): INFERENCE_THREADS."""
    auto: bool = False
    """INFERENCE_BACKEND and INFERENCE_QUANTIZE both AUTO on CPU: each body architecture's backend is
    timed on this machine (fewshot/serving/auto_backend.py); `backend` is then only the fallback."""
    numpy_pipeline: bool = True
    """Exported bodies served through fewshot/serving/numpy_pipeline.py where it reproduces them
    (INFERENCE_PIPELINE AUTO), or always through sentence-transformers (SENTENCE_TRANSFORMERS)."""

    @classmethod
    def resolve(cls, dtype: str = "AUTO", max_batch_tokens: int | None = None,
                device: str | None = None, trust_remote_code: bool = False,
                backend: str = "TORCH", quantize: str = "NONE", threads: int | None = None,
                pipeline: str = "AUTO") -> InferenceRuntime:
        """Fill in the AUTO choices for this machine (settings: INFERENCE_DTYPE, MAX_BATCH_TOKENS,
        INFERENCE_BACKEND, INFERENCE_QUANTIZE)."""
        device = device or pick_device()
        choice = BackendChoice.resolve(backend, quantize, on_gpu=device.startswith("cuda"))
        if choice.backend != backends.TORCH:
            device = "cpu"  # the exports run on CPU (no CUDA build of ONNX Runtime or OpenVINO here)
        on_gpu = device.startswith("cuda")
        if dtype == "AUTO":
            chosen = torch.float16 if on_gpu else torch.float32  # half precision only pays on a GPU
        else:
            chosen = {"FLOAT32": torch.float32, "FLOAT16": torch.float16, "BFLOAT16": torch.bfloat16}[dtype]
        budget = max_batch_tokens or (GPU_MAX_BATCH_TOKENS if on_gpu else CPU_MAX_BATCH_TOKENS)
        auto = backend == "AUTO" and quantize == "AUTO" and not on_gpu
        return cls(device, chosen, budget, trust_remote_code, choice, threads or torch.get_num_threads(), auto,
                   pipeline == "AUTO")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: SetFitModel
    labels: list[str]
    decisions: DecisionRule
    """Its probabilities' columns and thresholds: how they become answers."""
    max_batch_tokens: int
    """Padded tokens per forward pass (see fewshot.serving.batching)."""
    backend: ServingBackend
    pipeline: NumpyPipeline | None = None
    """The numpy serving path of an exported body; None: sentence-transformers serves it (torch
    bodies, and what `backend.pipeline_error` names)."""

    @classmethod
    def load(cls, stored: store.StoredModel, runtime: InferenceRuntime, export_missing: bool = True,
             record: bool = True) -> LoadedModel:
        """Load a stored version with the runtime's backend; with `export_missing` false, a version not
        exported yet loads with torch (its `backend.exporting` says so) instead of waiting for the export.
        With `record` false, what serves it is left for the caller to `record_backend` once it does."""
        started = time.perf_counter()
        model = SetFitModel.from_pretrained(str(stored.path), device=runtime.device,
                                            trust_remote_code=runtime.trust_remote_code)
        model.model_body.eval()
        serving = backends.apply(model.model_body, stored, runtime.backend, runtime.threads, export_missing)
        pipeline = None
        if serving.backend != backends.TORCH and runtime.numpy_pipeline:
            pipeline, refused = numpy_pipeline_for(model, stored, runtime.max_batch_tokens)
            serving = serving.model_copy(update={"pipeline": "numpy" if pipeline else "sentence-transformers",
                                                 "pipeline_error": refused})
        if runtime.dtype != torch.float32 and serving.backend == backends.TORCH:
            model.model_body.to(runtime.dtype)
            if model.has_differentiable_head:  # a torch head must match the body's outputs
                model.model_head.to(runtime.dtype)
        logger.info("loaded model %s in %.2fs on %s (%s%s)", stored.tag, time.perf_counter() - started,
                    runtime.device, serving.backend if serving.backend != backends.TORCH
                    else str(runtime.dtype).removeprefix("torch."),
                    f"; torch until its {serving.requested} export is made" if serving.exporting else "")
        columns = column_labels(model, stored.labels, refuses=stored.refuses)
        decisions = DecisionRule.from_metadata(stored.tag, stored.metadata, columns)
        loaded = cls(stored.name, stored.version, model, stored.labels, decisions, runtime.max_batch_tokens, serving,
                     pipeline)
        if record:
            loaded.record_backend(stored)
        return loaded

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
        if self.pipeline is not None:
            return self.pipeline.predict_proba(texts)
        return self._in_sub_batches(texts, lambda sub: self.model.predict_proba(
            sub, batch_size=len(sub), as_numpy=True))

    def embed(self, texts: list[str], count_tokens: bool = False) -> tuple[np.ndarray, list[int] | None]:
        """Sentence embeddings (float32), and each text's token count when asked for (the numpy
        path has them from its one tokenisation)."""
        if self.pipeline is not None:
            encoded = self.pipeline.encode_ids(texts)
            return self.pipeline.embed(texts, encoded), encoded.lengths.tolist() if count_tokens else None
        vectors = self._in_sub_batches(texts, lambda sub: self.model.model_body.encode(
            sub, batch_size=len(sub), convert_to_numpy=True, show_progress_bar=False))
        return vectors, self.token_lengths(texts) if count_tokens else None

    def _in_sub_batches(self, texts: list[str], forward: Callable[[list[str]], Any]) -> np.ndarray:
        """One forward pass per length-sorted sub-batch; rows come back in `texts` order, as float32."""
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        longest_possible = self.model.model_body.max_seq_length  # None: a model without a limit
        if longest_possible and len(texts) * longest_possible <= self.max_batch_tokens:
            # All of them fit one pass however long they are (GPU budget: up to 64 texts of a
            # 256-token model): measuring their lengths first would tokenise them twice for nothing.
            passes = [list(range(len(texts)))]
        else:
            passes = plan_sub_batches(self.token_lengths(texts), self.max_batch_tokens)
        with torch.inference_mode():
            outputs = [np.asarray(forward([texts[i] for i in positions]), dtype=np.float32) for positions in passes]
        rows = np.empty((len(texts), outputs[0].shape[1]), dtype=np.float32)
        rows[np.concatenate(passes)] = np.concatenate(outputs)
        return rows


PROBES_FROM_VERSION = 16
"""The version's own training texts among the probes (fewshot.serving.numpy_pipeline.PROBE_TEXTS)."""


def numpy_pipeline_for(model: SetFitModel, stored: store.StoredModel,
                       max_batch_tokens: int) -> tuple[NumpyPipeline | None, str | None]:
    """The numpy path of an exported body, once it answered as sentence-transformers does on probe
    texts (the fixed probes and the version's own); or None and why not."""
    exported = model.model_body[0].model
    try:
        pipeline = NumpyPipeline.for_model(model, exported.run, exported.input_names, max_batch_tokens)
        probes = [*PROBE_TEXTS, *backends.calibration_texts(stored.path)[:PROBES_FROM_VERSION]]
        with torch.inference_mode():
            problem = mismatch(
                pipeline,
                lambda texts: model.model_body.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                                      show_progress_bar=False),
                (lambda texts: model.predict_proba(texts, batch_size=len(texts), as_numpy=True))
                if model.model_head is not None else None,
                probes)
    except Refused as refused:
        problem = f"not reproduced by the numpy path: {refused}"
    except Exception as error:  # never worse than today: sentence-transformers serves it
        logger.exception("the numpy path of %s failed at load", stored.tag)
        problem = f"the numpy path failed at load ({type(error).__name__}: {error})"
    if problem is not None:
        logger.warning("serving %s through sentence-transformers: %s", stored.tag, problem)
        return None, problem
    return pipeline, None
