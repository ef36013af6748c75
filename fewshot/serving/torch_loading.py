"""A stored version loaded through SetFit: the torch body (or an export plugged into it,
fewshot/serving/exporting.py), and the numpy path of an exported body checked against it and saved
for later loads (fewshot/serving/numpy_pipeline.py). Imported only when a version needs it: torch,
SetFit and sentence-transformers cost an inference worker ~0.5 GiB and ~4 s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from setfit import SetFitModel

from fewshot import store
from fewshot.backend_cache import ServingBackend
from fewshot.serving import backends, exporting
from fewshot.serving.batching import plan_sub_batches
from fewshot.serving.numpy_pipeline import PROBE_TEXTS, SAVED_DIRECTORY, NumpyPipeline, Refused, mismatch
from fewshot.serving.runtime import InferenceRuntime
from fewshot.serving.step_times import NO_STEPS, StepTimes

logger = logging.getLogger("fewshot.inference")

PROBES_FROM_VERSION = 16
"""The version's own training texts among the probes (fewshot.serving.numpy_pipeline.PROBE_TEXTS)."""


def use_threads(runtime: InferenceRuntime) -> None:
    """Torch's intra-op threads for this process (InferenceRuntime.torch_threads): all of them when torch
    runs the bodies; one when ONNX Runtime or OpenVINO do, on the runtime's threads, and torch is left
    the pooling and the head. Torch's OpenMP threads spin between its ops and took CPU from the
    export's threads (MiniLM, 64-text batches in-process: OpenVINO 427 -> 465 and 432 -> 511
    texts/s; ONNX Runtime int8 CPU per text 5.3 -> 2.7-3.3 ms). A version torch serves meanwhile
    (its export under way, or failed) runs on that one thread."""
    torch.set_num_threads(runtime.torch_threads)


def load(stored: store.StoredModel, runtime: InferenceRuntime,
         export_missing: bool) -> tuple[SetFitModel, ServingBackend, NumpyPipeline | None]:
    """The version through SetFit with the runtime's backend (exported now unless `export_missing` is
    false), what serves it, and the numpy path of an exported body once it answered as
    sentence-transformers does (saved beside the export for later loads)."""
    use_threads(runtime)
    model = load_setfit(stored, runtime)
    serving, pipeline = serve_with(model, stored, runtime, runtime.backend, export_missing)
    return model, serving, pipeline


def load_setfit(stored: store.StoredModel, runtime: InferenceRuntime) -> SetFitModel:
    model = SetFitModel.from_pretrained(str(stored.path), device=runtime.device,
                                        trust_remote_code=runtime.trust_remote_code)
    model.model_body.eval()
    return model


def serve_with(model: SetFitModel, stored: store.StoredModel, runtime: InferenceRuntime,
               choice: backends.BackendChoice, export_missing: bool = True,
               traced: exporting.TracedOnnx | None = None,
               steps: StepTimes = NO_STEPS, check: bool = True) -> tuple[ServingBackend, NumpyPipeline | None]:
    """`model`'s body served with `choice` (its export plugged in; `traced`: the body's ONNX graph, if
    traced already), and the numpy path of an exported body once checked (with `check` false: unchecked
    and not saved, for AUTO's timing of candidates that may not serve: fewshot/serving/export_process.py)."""
    with steps.step("export (or read from the cache)"):
        serving = exporting.apply(model.model_body, stored, choice, runtime.threads, export_missing, traced)
    pipeline = None
    if serving.backend != backends.TORCH and runtime.numpy_pipeline:
        served = backends.BackendChoice(serving.backend, serving.quantize)
        if check:
            with steps.step("numpy-path check"):
                pipeline, refused = numpy_pipeline_for(model, stored, served, runtime.max_batch_tokens)
        else:
            pipeline, refused = unchecked_pipeline(model, runtime.max_batch_tokens)
        serving = serving.model_copy(update={"pipeline": "numpy" if pipeline else "sentence-transformers",
                                             "pipeline_error": refused})
    dtype = getattr(torch, runtime.dtype)
    if dtype != torch.float32 and serving.backend == backends.TORCH:
        model.model_body.to(dtype)
        if model.has_differentiable_head:  # a torch head must match the body's outputs
            model.model_head.to(dtype)
    return serving, pipeline


def unchecked_pipeline(model: SetFitModel, max_batch_tokens: int) -> tuple[NumpyPipeline | None, str | None]:
    """The numpy path of the exported body, not compared with sentence-transformers (nor saved)."""
    exported: backends.ExportedBody = model.model_body[0].model.exported
    try:
        return NumpyPipeline.for_model(model, exported.run, exported.input_names, max_batch_tokens), None
    except Refused as refused:
        return None, f"not reproduced by the numpy path: {refused}"
    except Exception as error:  # as numpy_pipeline_for: sentence-transformers serves it
        logger.exception("the numpy path of an exported body failed to build")
        return None, f"the numpy path failed at load ({type(error).__name__}: {error})"


def numpy_pipeline_for(model: SetFitModel, stored: store.StoredModel, served: backends.BackendChoice,
                       max_batch_tokens: int) -> tuple[NumpyPipeline | None, str | None]:
    """The numpy path of the body exported as `served`, once it answered as sentence-transformers does
    on probe texts (the fixed probes and the version's own), saved beside the export; or None and
    why not."""
    exported: backends.ExportedBody = model.model_body[0].model.exported
    try:
        pipeline = NumpyPipeline.for_model(model, exported.run, exported.input_names, max_batch_tokens)
        # The fixed probes and the version's own texts, each set in a pass of its own (and each text alone):
        # padding a short text far past a long one is the fixed probes' pass ("" and "a" beside the long
        # one). All in one pass, every version text was padded to the long probe too: gte-modernbert-base's
        # stand-in (22 layers, 8192 positions: the long probe is ~800 tokens, not truncated) spent 137-145 s
        # per ONNX Runtime variant in this check, most of AUTO's 10 minutes; 65-99 s split so, on a busier
        # box (bench/export_cost.py). AUTO now checks only the candidate it chooses (export_process.py).
        groups = [list(PROBE_TEXTS), backends.calibration_texts(stored.path)[:PROBES_FROM_VERSION]]
        with torch.inference_mode(), _encoding_each_group_once(model.model_body):
            problem = next(filter(None, (mismatch(
                pipeline,
                lambda texts: model.model_body.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                                      show_progress_bar=False),
                (lambda texts: model.predict_proba(texts, batch_size=len(texts), as_numpy=True))
                if model.model_head is not None else None,
                group) for group in groups if group)), None)
    except Refused as refused:
        problem = f"not reproduced by the numpy path: {refused}"
    except Exception as error:  # never worse than today: sentence-transformers serves it
        logger.exception("the numpy path of %s failed at load", stored.tag)
        problem = f"the numpy path failed at load ({type(error).__name__}: {error})"
    if problem is not None:
        logger.warning("serving %s through sentence-transformers: %s", stored.tag, problem)
        return None, problem
    try:
        pipeline.save(backends.export_directory(stored, served) / SAVED_DIRECTORY)
    except Refused as refused:  # it still serves; later loads go through SetFit and check it again
        logger.info("%s: its numpy path is not saved for loads without torch: %s", stored.tag, refused)
    except Exception:
        logger.exception("%s: could not save its numpy path for later loads", stored.tag)
    return pipeline, None


@contextlib.contextmanager
def _encoding_each_group_once(body: Any) -> Iterator[None]:
    """While the numpy path is checked: the body's `encode` runs once per group of texts, not twice (once for
    the embeddings, once inside SetFit's `predict_proba` for the probabilities), when both ask for the same
    rows (SetFit normalises them as asked: `normalize_embeddings` is part of the key). SetFit's own
    `predict_proba` still computes the probabilities from them. A third of the check's forward passes."""
    original = body.encode
    last: dict[str, Any] = {}

    def encode(sentences: Any, *args: Any, normalize_embeddings: bool = False, convert_to_tensor: bool = False,
               **options: Any) -> Any:
        if args or not isinstance(sentences, list):
            return original(sentences, *args, normalize_embeddings=normalize_embeddings,
                            convert_to_tensor=convert_to_tensor, **options)
        key = (tuple(sentences), normalize_embeddings)
        if last.get("key") != key:
            rows = original(sentences, normalize_embeddings=normalize_embeddings,
                            **{**options, "convert_to_numpy": True, "convert_to_tensor": False})
            last.update(key=key, rows=np.asarray(rows))
        rows = last["rows"].copy()
        return torch.from_numpy(rows) if convert_to_tensor else rows

    body.encode = encode
    try:
        yield
    finally:
        del body.encode  # the class's own again


def in_sub_batches(texts: list[str], forward: Callable[[list[str]], Any], longest_possible: int | None,
                   max_batch_tokens: int, token_lengths: Callable[[list[str]], list[int]]) -> np.ndarray:
    """One forward pass per length-sorted sub-batch; rows come back in `texts` order, as float32."""
    if not texts:
        return np.empty((0, 0), dtype=np.float32)
    if longest_possible and len(texts) * longest_possible <= max_batch_tokens:
        # All of them fit one pass however long they are (GPU budget: up to 64 texts of a
        # 256-token model): measuring their lengths first would tokenise them twice for nothing.
        passes = [list(range(len(texts)))]
    else:
        passes = plan_sub_batches(token_lengths(texts), max_batch_tokens)
    with torch.inference_mode():
        outputs = [np.asarray(forward([texts[i] for i in positions]), dtype=np.float32) for positions in passes]
    rows = np.empty((len(texts), outputs[0].shape[1]), dtype=np.float32)
    rows[np.concatenate(passes)] = np.concatenate(outputs)
    return rows
