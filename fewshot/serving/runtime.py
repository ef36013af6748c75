"""Where and how a worker's models run (`InferenceRuntime`): device, dtype, the token budget of one
forward pass, what runs the bodies and with how many threads. Beside model_loading.py, which loads
a stored version with it, and torch_loading.py, which model_loading imports when first needed and
which takes it too: both import it from here, so neither imports the other at its top. No torch
(asked for CUDA only where a driver is present), no HTTP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from fewshot.serving import backends
from fewshot.serving.backends import BackendChoice
from fewshot.settings import Settings

CPU_MAX_BATCH_TOKENS = 768
"""Measured on 2 CPU cores (bench): 512-1024 padded tokens per pass are ~2x one padded pass of 64."""
GPU_MAX_BATCH_TOKENS = 16_384
"""TEI's default max-batch-tokens: large passes keep a GPU busy and bound activation memory."""
DTYPES = ("float32", "float16", "bfloat16")


def may_have_cuda() -> bool:
    """Whether an NVIDIA driver is present (its /proc entry or device nodes): only then is torch
    imported to ask whether CUDA works. A CPU-only worker serving exports never imports torch."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def pick_device() -> str:
    if not may_have_cuda():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_threads() -> int:
    """Threads of a forward pass when INFERENCE_THREADS is not set: as torch's own default
    (OMP_NUM_THREADS, else one per physical core), bounded by the CPUs this process may run on."""
    if (configured := os.environ.get("OMP_NUM_THREADS", "")).isdigit() and int(configured) > 0:
        return int(configured)
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(psutil.cpu_count(logical=False) or usable, usable))


@dataclass(frozen=True)
class InferenceRuntime:
    """Where and how models run: device, weight dtype, the token budget of one forward pass and
    what runs the body (torch or an ONNX Runtime / OpenVINO export)."""

    device: str
    dtype: str
    """A torch dtype's name (DTYPES): what torch computes a torch-served body in."""
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
    max_text_chars: int | None = None
    """MAX_TEXT_CHARS where set: the characters of a text any version takes; None: each version's own
    (fewshot/serving/long_texts.py `text_limit`)."""
    torch_threads: int = 1
    """Torch's intra-op threads in this worker (fewshot/serving/torch_loading.py: `use_threads`): all of
    `threads` when torch runs the bodies; one when the exports do and torch is left the pooling and
    the head of a version served through sentence-transformers, or a version torch serves until its
    export is made."""

    @classmethod
    def resolve(cls, dtype: str = "AUTO", max_batch_tokens: int | None = None,
                device: str | None = None, trust_remote_code: bool = False,
                backend: str = "TORCH", quantize: str = "NONE", threads: int | None = None,
                pipeline: str = "AUTO", max_text_chars: int | None = None) -> InferenceRuntime:
        """Fill in the AUTO choices for this machine (settings: INFERENCE_DTYPE, MAX_BATCH_TOKENS,
        INFERENCE_BACKEND, INFERENCE_QUANTIZE)."""
        device = device or pick_device()
        choice = BackendChoice.resolve(backend, quantize, on_gpu=device.startswith("cuda"))
        if choice.backend != backends.TORCH:
            device = "cpu"  # the exports run on CPU (no CUDA build of ONNX Runtime or OpenVINO here)
        on_gpu = device.startswith("cuda")
        # AUTO: half precision only pays on a GPU
        chosen = ("float16" if on_gpu else "float32") if dtype == "AUTO" else dtype.lower()
        budget = max_batch_tokens or (GPU_MAX_BATCH_TOKENS if on_gpu else CPU_MAX_BATCH_TOKENS)
        auto = backend == "AUTO" and quantize == "AUTO" and not on_gpu
        threads = threads or default_threads()
        return cls(device, chosen, budget, trust_remote_code, choice, threads, auto, pipeline == "AUTO",
                   max_text_chars, threads if choice.backend == backends.TORCH and not auto else 1)

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceRuntime:
        """The runtime the settings ask for, as every process that serves versions reads them (the
        inference service, a batch worker)."""
        return cls.resolve(settings.inference_dtype, settings.max_batch_tokens,
                           trust_remote_code=settings.trust_remote_code, backend=settings.inference_backend,
                           quantize=settings.inference_quantize, threads=settings.inference_threads,
                           pipeline=settings.inference_pipeline, max_text_chars=settings.max_text_chars)

    def serving(self, choice: BackendChoice) -> InferenceRuntime:
        """This runtime with `choice` running the bodies (AUTO's decision; torch then gets the threads)."""
        return replace(self, backend=choice, torch_threads=self.threads if choice == backends.PYTORCH else 1)
