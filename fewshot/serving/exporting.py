"""Making a version's export (fewshot/serving/backends.py says which and why): the transformer body
exported with torch to ONNX, quantized for ONNX Runtime or converted (and quantized) for OpenVINO,
kept in the backend cache, and plugged into the loaded sentence-transformers body. Everything here
needs torch; serving an export that is already made does not (fewshot/serving/backends.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from fewshot import store
from fewshot.backend_cache import ServingBackend
from fewshot.serving.backends import (
    INT8,
    NONE,
    ONNX,
    ONNX_FILE,
    OPENVINO,
    OPENVINO_FILE,
    TORCH,
    BackendChoice,
    ExportedBody,
    calibration_texts,
    export_directory,
    for_version,
    is_exported,
)

logger = logging.getLogger("fewshot.inference")

MAX_CALIBRATION_SAMPLES = 64
MAX_CALIBRATION_TOKENS = 128
"""NNCF's int8 calibration: at most this many of the version's texts (spread over them: they are kept in
label order), each cut to this many tokens. NNCF runs
the model once per sample per statistics pass (two: SmoothQuant's and the ranges'): gte-modernbert-base's
stand-in (22 layers, 2 busy cores) took ~0.2 s a sample of ~15 tokens, and the version's texts may be up to
MAX_CALIBRATION_TEXTS (300) and up to 8192 tokens long each. Bounds the worst case (not measured: the
bench's version has 24 short texts); AUTO's int8 label-agreement rule still judges the result."""


class ExportFailed(Exception):
    """The body could not be exported or quantized; the message says which step and why."""


def apply(body: SentenceTransformer, stored: store.StoredModel, choice: BackendChoice, threads: int,
          export_missing: bool = True, traced: TracedOnnx | None = None) -> ServingBackend:
    """Serve `body` with `choice` (as much of it as the version allows: `for_version`), exporting it
    into the cache if it is not there yet (unless `export_missing` is false: then torch serves it for
    now, `exporting`); torch (said so) on failure. `traced`: the body's float32 ONNX graph, traced once
    for every variant made from it (AUTO makes four)."""
    if choice.backend == TORCH:
        return ServingBackend(requested=choice.variant, backend=TORCH, quantize=NONE)
    if not export_missing and not is_exported(stored, choice):
        return ServingBackend(requested=choice.variant, backend=TORCH, quantize=NONE, exporting=True)
    requested, (choice, short_of_it) = choice, for_version(stored, choice)
    started = time.perf_counter()
    try:
        calibration = calibration_texts(stored.path)
        directory, made = cached_export(body, stored, choice, calibration, traced)
        exported = ExportedBody.open(directory, choice, threads)
    except Exception as error:  # any failure: the version still serves, with torch
        reason = str(error) if isinstance(error, ExportFailed) else f"{type(error).__name__}: {error}"
        logger.warning("serving %s with torch: its %s body could not be prepared: %s", stored.tag, choice.variant,
                       reason)
        return ServingBackend(requested=requested.variant, backend=TORCH, quantize=NONE, error=reason)
    install(body, exported)
    seconds = time.perf_counter() - started
    logger.info("serving %s with %s (%s in %.1fs)%s", stored.tag, choice.variant,
                "exported" if made else "read from the cache", seconds, f": {short_of_it}" if short_of_it else "")
    return ServingBackend(requested=requested.variant, backend=choice.backend, quantize=choice.quantize,
                          error=short_of_it, prepare_seconds=round(seconds, 2) if made else 0.0)


def cached_export(body: SentenceTransformer, stored: store.StoredModel, choice: BackendChoice,
                  calibration: list[str], traced: TracedOnnx | None = None) -> tuple[Path, bool]:
    """The export's directory, and whether this call made it. Workers loading the same version
    at once take turns (a lock file): one exports, into a temporary directory renamed into place,
    and the others find it done."""
    target = export_directory(stored, choice)
    version_dir = target.parent
    version_dir.mkdir(parents=True, exist_ok=True)
    with open(version_dir / ".export.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target, False
        staging = Path(tempfile.mkdtemp(prefix=f".{choice.variant}-", dir=version_dir))
        try:
            export(body, choice, staging, calibration, traced)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, True


def export(body: SentenceTransformer, choice: BackendChoice, directory: Path, calibration: list[str],
           traced: TracedOnnx | None = None) -> None:
    with TracedOnnx(body) if traced is None else contextlib.nullcontext(traced) as graph:
        onnx_file = graph.path()
        if choice == BackendChoice(ONNX, NONE):
            shutil.copyfile(onnx_file, directory / ONNX_FILE)
        elif choice.backend == ONNX and choice.quantize == INT8:
            quantize_onnx(onnx_file, directory / ONNX_FILE)
        elif choice.backend == OPENVINO:
            to_openvino(onnx_file, directory / OPENVINO_FILE, body, calibration if choice.quantize == INT8 else None)


class TracedOnnx:
    """The body's float32 ONNX graph, traced on first use and kept in a scratch directory while the block
    lasts: every variant is made from it (the int8 quantizers and OpenVINO's conversion read an ONNX file).
    Traced once, not once per variant: gte-modernbert-base's stand-in (22 layers, 2 cores) took 8-13 s and
    ~1.9 GB more RSS per trace (bench/export_cost.py), and AUTO traced it four times."""

    def __init__(self, body: SentenceTransformer) -> None:
        self._body = body
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._path: Path | None = None
        self._failed: ExportFailed | None = None

    def __enter__(self) -> TracedOnnx:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch, self._path = None, None

    def path(self) -> Path:
        if self._failed is not None:
            raise self._failed
        if self._path is None:
            if isinstance(_transformer(self._body).model, ExportedTransformerModel):
                raise ExportFailed("the body's torch weights were replaced by an export before it was traced")
            self._scratch = tempfile.TemporaryDirectory(prefix="fewshot-export-")
            path = Path(self._scratch.name) / ONNX_FILE
            try:
                export_onnx(self._body, path)
            except ExportFailed as failed:
                self._failed = failed
                raise
            self._path = path
        return self._path


def _transformer(body: SentenceTransformer) -> torch.nn.Module:
    first = body[0]
    if not hasattr(first, "model") or not hasattr(first, "tokenizer"):
        raise ExportFailed(f"the body's first module is {type(first).__name__}, not a transformer")
    return first


def _example_inputs(body: SentenceTransformer) -> dict[str, torch.Tensor]:
    encoded = body.tokenizer(["an example text", "a second and longer example text"], padding=True,
                             return_tensors="pt")
    return {name: tensor for name, tensor in encoded.items() if name in ("input_ids", "attention_mask",
                                                                          "token_type_ids")}


class _LastHiddenState(torch.nn.Module):
    """The graph to export: the transformer's inputs, positionally, in → its last hidden state out."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True).last_hidden_state


def export_onnx(body: SentenceTransformer, path: Path) -> None:
    """The transformer of `body` as ONNX, batch and sequence length dynamic."""
    model = _transformer(body).model.float().eval()  # an fp16 torch body exports as float32
    inputs = _example_inputs(body)
    names = list(inputs)
    try:
        with torch.inference_mode(False), torch.no_grad():
            # dynamo=False: the TorchScript exporter handles HF attention masks without guards on
            # sequence length; the dynamo exporter specialises them (checked with MiniLM, torch 2.13).
            torch.onnx.export(_LastHiddenState(model, names), tuple(inputs.values()), str(path), input_names=names,
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                              dynamic_axes={name: {0: "batch", 1: "sequence"}
                                            for name in [*names, "last_hidden_state"]})
    except Exception as error:
        raise ExportFailed(f"ONNX export failed ({type(error).__name__}: {str(error)[:300]})") from error


def quantize_onnx(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization, per channel: per tensor lost too much (MiniLM:
    cosine to float32 0.969 on average vs 0.993 per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
    except Exception as error:
        raise ExportFailed(f"ONNX Runtime int8 quantization failed ({type(error).__name__}: {error})") from error


def to_openvino(source: Path, target: Path, body: SentenceTransformer, calibration: list[str] | None) -> None:
    """OpenVINO IR from the ONNX graph, float32 weights kept (OpenVINO would store float16 by
    default), or statically quantized to int8 with NNCF on `calibration` texts. At run time OpenVINO
    picks the precision it computes in per CPU: bfloat16 where the CPU has AMX, float32 elsewhere."""
    import openvino

    try:
        model = openvino.Core().read_model(source)
        if calibration is not None:
            import nncf

            names = [node.get_any_name() for node in model.inputs]
            every = max(1, -(-len(calibration) // MAX_CALIBRATION_SAMPLES))
            samples = [{name: array for name, array in _numpy_inputs(body, [text], MAX_CALIBRATION_TOKENS).items()
                        if name in names} for text in calibration[::every]]
            model = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(samples))
        openvino.save_model(model, target, compress_to_fp16=False)
    except Exception as error:
        step = "NNCF int8 quantization" if calibration is not None else "OpenVINO conversion"
        raise ExportFailed(f"{step} failed ({type(error).__name__}: {str(error)[:300]})") from error


def _numpy_inputs(body: SentenceTransformer, texts: list[str], max_tokens: int) -> dict[str, np.ndarray]:
    encoded = body.tokenizer(texts, padding=True, truncation=True, max_length=min(body.max_seq_length, max_tokens),
                             return_tensors="np")
    return {name: array.astype(np.int64) for name, array in encoded.items()}


class ExportedTransformerModel(torch.nn.Module):
    """Stands in for the Hugging Face model inside sentence-transformers' Transformer module, as
    optimum's ORTModel/OVModel do for its own backends: same keyword inputs, `last_hidden_state` out."""

    def __init__(self, exported: ExportedBody, config: Any) -> None:
        super().__init__()
        self.config = config
        self.device = torch.device("cpu")
        self.exported = exported

    @property
    def input_names(self) -> list[str]:
        return list(self.exported.input_names)

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        hidden = self.exported.run({name: inputs[name].numpy().astype(np.int64, copy=False)
                                    for name in self.exported.input_names})
        return {"last_hidden_state": torch.from_numpy(hidden)}


def install(body: SentenceTransformer, exported: ExportedBody) -> None:
    """Replace the torch transformer of `body` (its weights are freed) by the exported one."""
    transformer = _transformer(body)
    transformer.model = ExportedTransformerModel(exported, transformer.model.config)
