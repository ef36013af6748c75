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

This module is what serving an export needs and nothing more (no torch: an inference worker whose
versions are all exported never imports it); making an export is fewshot/serving/exporting.py's job.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fewshot import backend_cache, store
from fewshot.store import CALIBRATION_TEXTS_FILE

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


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    quantize: str

    @property
    def variant(self) -> str:
        return f"{self.backend}-{self.quantize}"

    @classmethod
    def from_variant(cls, variant: str) -> BackendChoice:
        """`onnx-int8` → BackendChoice("onnx", "int8"): what `variant` writes, read back."""
        backend, _, quantize = variant.partition("-")
        if backend not in (TORCH, ONNX, OPENVINO) or quantize not in (NONE, INT8):
            raise ValueError(f"not a backend variant: {variant!r}")
        return cls(backend, quantize)

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
    return possible.backend == TORCH or export_directory(stored, possible).is_dir()


def calibration_texts(version_path: Path) -> list[str]:
    try:
        texts = json.loads((version_path / CALIBRATION_TEXTS_FILE).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return []
    return [text for text in texts if isinstance(text, str)][:MAX_CALIBRATION_TEXTS]


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


def export_directory(stored: store.StoredModel, choice: BackendChoice) -> Path:
    """Where the version's export for `choice` is kept (fewshot/backend_cache.py)."""
    return backend_cache.version_directory(stored.name, stored.version) / choice.variant


class ExportedBody:
    """An exported transformer body, numpy in and out: int64 feeds by input name → the last hidden
    state. What the numpy path (fewshot/serving/numpy_pipeline.py) runs, and what
    sentence-transformers runs through exporting.ExportedTransformerModel."""

    def __init__(self, runner: OnnxRuntimeRunner | OpenVinoRunner,
                 pad_multiples: tuple[int, int] | None = None) -> None:
        self._runner = runner
        self.input_names: list[str] = list(runner.input_names)
        self._pad_multiples = pad_multiples

    @classmethod
    def open(cls, directory: Path, choice: BackendChoice, threads: int) -> ExportedBody:
        """The export of `choice` kept in `directory`, compiled for this machine's runtime."""
        runner = OnnxRuntimeRunner(directory / ONNX_FILE, threads) if choice.backend == ONNX else \
            OpenVinoRunner(directory / OPENVINO_FILE, threads)
        return cls(runner, INT8_PAD_MULTIPLES if choice == BackendChoice(OPENVINO, INT8) else None)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        texts, tokens = feeds["input_ids"].shape
        if self._pad_multiples is not None:
            # Padding rows and columns are masked out (attention mask 0): the real rows' outputs are
            # the same; they are cut off again below.
            rows, columns = padded_rows(texts, self._pad_multiples[0]), -(-tokens // self._pad_multiples[1]) * \
                self._pad_multiples[1]
            feeds = {name: np.pad(array, ((0, rows - texts), (0, columns - tokens))) for name, array in feeds.items()}
        return np.ascontiguousarray(self._runner(feeds)[:texts, :tokens])
