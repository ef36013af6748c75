"""What runs a loaded model's transformer body: PyTorch as trained, or an export of it for ONNX
Runtime or OpenVINO, float32 or int8.

Why our own export and not sentence-transformers' `backend="onnx"/"openvino"`: those go through
optimum-onnx / optimum-intel, and every release of both pins transformers below 5 (optimum-onnx:
<4.58; optimum-intel 2.2: <5.6 but its exporter imports optimum-onnx), while we run transformers 5.x.
So the body is exported with `torch.onnx.export` (the same graph optimum would write: input ids,
attention mask, token type ids in; the last hidden state out), quantized with the tool made for
each runtime (ONNX Runtime's dynamic int8 quantizer; OpenVINO's NNCF post-training quantization,
calibrated on the version's own training texts), and plugged in where sentence-transformers'
own backends plug in: as the `model` of its Transformer module. Pooling, normalisation, the
SetFit head and everything after them run unchanged, so predictions and embeddings keep their
shapes and code paths.

Exports live in the version's backend cache (fewshot/backend_cache.py): made once, in the background
after the version's first load (MiniLM on 2 CPU cores: ONNX 2.5 s, ONNX int8 5 s, OpenVINO 2 s,
OpenVINO int8 11-14 s; torch serves it meanwhile, so a new version answers as soon as it did without
backends: see fewshot/serving/model_cache.py), then read back at every later load (0.2-0.9 s). A
model whose export or quantization fails is served with torch, and the log and its `backend` field
say why.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from fewshot import backend_cache, store
from fewshot.backend_cache import ServingBackend
from fewshot.store import CALIBRATION_TEXTS_FILE

logger = logging.getLogger("fewshot.inference")

TORCH, ONNX, OPENVINO = "torch", "onnx", "openvino"
NONE, INT8 = "none", "int8"

CPU_DEFAULT = (OPENVINO, NONE)
"""INFERENCE_BACKEND=AUTO with a named INFERENCE_QUANTIZE on CPU (with both AUTO, the backend is timed on
the machine instead: fewshot/serving/auto_backend.py). Fastest on the AMX CPU it was measured on, where
OpenVINO computes a float32 model in bfloat16 (docs/cpu-backends.md)."""
GPU_DEFAULT = (TORCH, NONE)
"""AUTO on a GPU: the exports run on CPU only (no CUDA build of ONNX Runtime or OpenVINO is installed)."""

ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"  # and model.bin beside it
INT8_PAD_MULTIPLES = (8, 16)
"""OpenVINO int8 pads each pass to a multiple of 8 texts and 16 tokens: it prepares kernels per input
shape, and a server's passes come in hundreds of shapes. MiniLM, 64-text batches of random texts,
in-process: 403 -> 523 texts/s. (Float32/bfloat16 lost from it: 574 -> 502; ONNX Runtime too.)"""
MAX_CALIBRATION_TEXTS = 300
"""NNCF's default calibration subset size."""


class ExportFailed(Exception):
    """The body could not be exported or quantized; the message says which step and why."""


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    quantize: str

    @property
    def variant(self) -> str:
        return f"{self.backend}-{self.quantize}"

    @classmethod
    def resolve(cls, backend: str, quantize: str, on_gpu: bool) -> BackendChoice:
        """Settings INFERENCE_BACKEND / INFERENCE_QUANTIZE (upper case, AUTO allowed) → a choice."""
        default_backend, default_quantize = GPU_DEFAULT if on_gpu else CPU_DEFAULT
        chosen = default_backend if backend == "AUTO" else backend.lower()
        if chosen == TORCH:
            return cls(TORCH, NONE)  # torch's precision is INFERENCE_DTYPE's business
        if quantize == "AUTO":
            quantize = default_quantize if chosen == default_backend else NONE
        return cls(chosen, quantize.lower())


PYTORCH = BackendChoice(TORCH, NONE)


def for_version(stored: store.StoredModel, choice: BackendChoice) -> tuple[BackendChoice, str | None]:
    """What `choice` can be for this version, and why not all of it: OpenVINO int8 calibrates on the
    version's own training texts, and a version without them (trained before they were kept, or
    imported without evaluation examples) is served by OpenVINO without int8."""
    if choice == BackendChoice(OPENVINO, INT8) and not calibration_texts(stored.path):
        return BackendChoice(OPENVINO, NONE), (
            f"{stored.tag} keeps no training texts to calibrate int8 on ({CALIBRATION_TEXTS_FILE}: versions trained "
            "before this service kept them, and imports without eval_examples, have none): served without int8")
    return choice, None


def is_exported(stored: store.StoredModel, choice: BackendChoice) -> bool:
    possible, _ = for_version(stored, choice)
    return possible.backend == TORCH or (backend_cache.version_directory(stored.name, stored.version)
                                         / possible.variant).is_dir()


def apply(body: SentenceTransformer, stored: store.StoredModel, choice: BackendChoice, threads: int,
          export_missing: bool = True) -> ServingBackend:
    """Serve `body` with `choice` (as much of it as the version allows: `for_version`), exporting it
    into the cache if it is not there yet (unless `export_missing` is false: then torch serves it for
    now, `exporting`); torch (said so) on failure."""
    if choice.backend == TORCH:
        return ServingBackend(requested=choice.variant, backend=TORCH, quantize=NONE)
    if not export_missing and not is_exported(stored, choice):
        return ServingBackend(requested=choice.variant, backend=TORCH, quantize=NONE, exporting=True)
    requested, (choice, short_of_it) = choice, for_version(stored, choice)
    started = time.perf_counter()
    try:
        calibration = calibration_texts(stored.path)
        directory, made = cached_export(body, stored, choice, calibration)
        runner = OnnxRuntimeRunner(directory / ONNX_FILE, threads) if choice.backend == ONNX else \
            OpenVinoRunner(directory / OPENVINO_FILE, threads)
    except Exception as error:  # any failure: the version still serves, with torch
        reason = str(error) if isinstance(error, ExportFailed) else f"{type(error).__name__}: {error}"
        logger.warning("serving %s with torch: its %s body could not be prepared: %s", stored.tag, choice.variant,
                       reason)
        return ServingBackend(requested=requested.variant, backend=TORCH, quantize=NONE, error=reason)
    install(body, runner, INT8_PAD_MULTIPLES if choice == BackendChoice(OPENVINO, INT8) else None)
    seconds = time.perf_counter() - started
    logger.info("serving %s with %s (%s in %.1fs)%s", stored.tag, choice.variant,
                "exported" if made else "read from the cache", seconds, f": {short_of_it}" if short_of_it else "")
    return ServingBackend(requested=requested.variant, backend=choice.backend, quantize=choice.quantize,
                          error=short_of_it, prepare_seconds=round(seconds, 2) if made else 0.0)


def calibration_texts(version_path: Path) -> list[str]:
    try:
        texts = json.loads((version_path / CALIBRATION_TEXTS_FILE).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return []
    return [text for text in texts if isinstance(text, str)][:MAX_CALIBRATION_TEXTS]


def cached_export(body: SentenceTransformer, stored: store.StoredModel, choice: BackendChoice,
                  calibration: list[str]) -> tuple[Path, bool]:
    """The export's directory, and whether this call made it. Workers loading the same version
    at once take turns (a lock file): one exports, into a temporary directory renamed into place,
    and the others find it done."""
    version_dir = backend_cache.version_directory(stored.name, stored.version)
    target = version_dir / choice.variant
    version_dir.mkdir(parents=True, exist_ok=True)
    with open(version_dir / ".export.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target, False
        staging = Path(tempfile.mkdtemp(prefix=f".{choice.variant}-", dir=version_dir))
        try:
            export(body, choice, staging, calibration)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, True


def export(body: SentenceTransformer, choice: BackendChoice, directory: Path, calibration: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="fewshot-export-") as scratch:
        onnx_file = directory / ONNX_FILE if choice == BackendChoice(ONNX, NONE) else Path(scratch) / ONNX_FILE
        export_onnx(body, onnx_file)
        if choice.backend == ONNX and choice.quantize == INT8:
            quantize_onnx(onnx_file, directory / ONNX_FILE)
        elif choice.backend == OPENVINO:
            to_openvino(onnx_file, directory / OPENVINO_FILE, body, calibration if choice.quantize == INT8 else None)


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
            samples = [{name: array for name, array in _numpy_inputs(body, [text]).items() if name in names}
                       for text in calibration]
            model = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(samples))
        openvino.save_model(model, target, compress_to_fp16=False)
    except Exception as error:
        step = "NNCF int8 quantization" if calibration is not None else "OpenVINO conversion"
        raise ExportFailed(f"{step} failed ({type(error).__name__}: {str(error)[:300]})") from error


def _numpy_inputs(body: SentenceTransformer, texts: list[str]) -> dict[str, np.ndarray]:
    encoded = body.tokenizer(texts, padding=True, truncation=True, max_length=body.max_seq_length,
                             return_tensors="np")
    return {name: array.astype(np.int64) for name, array in encoded.items()}


class OnnxRuntimeRunner:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self._session.get_inputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, feeds)[0]  # thread-safe: ONNX Runtime sessions allow concurrent runs


class OpenVinoRunner:
    def __init__(self, path: Path, threads: int) -> None:
        import openvino

        self._compiled = openvino.Core().compile_model(
            str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
        self.input_names = [node.get_any_name() for node in self._compiled.inputs]
        self._requests = threading.local()  # an infer request serves one call at a time

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        return request.infer(feeds, share_inputs=True)[0].copy()  # the output buffer is reused by the next call


def padded_rows(texts: int, multiple: int) -> int:
    """Rows of a padded pass: the next power of two below `multiple`, then multiples of it. A lone
    text stays one row: padded to 8 it cost OpenVINO int8 8x the work (30 texts/s at c=1 against
    103 for float32, AMX box), and 1, 2, 4 add only three shapes."""
    if texts >= multiple:
        return -(-texts // multiple) * multiple
    return 1 << (texts - 1).bit_length()


class ExportedTransformerModel(torch.nn.Module):
    """Stands in for the Hugging Face model inside sentence-transformers' Transformer module, as
    optimum's ORTModel/OVModel do for its own backends: same keyword inputs, `last_hidden_state` out."""

    def __init__(self, runner: Callable[[dict[str, np.ndarray]], np.ndarray], input_names: list[str],
                 config: Any, pad_multiples: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.device = torch.device("cpu")
        self._runner = runner
        self._input_names = input_names
        self._pad_multiples = pad_multiples

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        hidden = self.run({name: inputs[name].numpy().astype(np.int64, copy=False) for name in self._input_names})
        return {"last_hidden_state": torch.from_numpy(hidden)}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Int64 feeds by input name → the last hidden state, numpy in and out (the serving path of
        fewshot/serving/numpy_pipeline.py calls this directly)."""
        texts, tokens = feeds["input_ids"].shape
        if self._pad_multiples is not None:
            # Padding rows and columns are masked out (attention mask 0): the real rows' outputs are
            # the same; they are cut off again below.
            rows, columns = padded_rows(texts, self._pad_multiples[0]), -(-tokens // self._pad_multiples[1]) * \
                self._pad_multiples[1]
            feeds = {name: np.pad(array, ((0, rows - texts), (0, columns - tokens))) for name, array in feeds.items()}
        return np.ascontiguousarray(self._runner(feeds)[:texts, :tokens])


def install(body: SentenceTransformer, runner: OnnxRuntimeRunner | OpenVinoRunner,
            pad_multiples: tuple[int, int] | None = None) -> None:
    """Replace the torch transformer of `body` (its weights are freed) by the exported one."""
    transformer = _transformer(body)
    transformer.model = ExportedTransformerModel(runner, runner.input_names, transformer.model.config, pad_multiples)
