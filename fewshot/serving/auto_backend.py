"""INFERENCE_BACKEND=AUTO on CPU: the backend that is fastest on this machine, found by timing.

Why not a fixed default: which export is fastest depends on the CPU more than on anything we
control. MiniLM, 2 cores, same code: on an AMX Intel box OpenVINO ran float32 models in bfloat16
and beat every other backend (2.18x torch); on an AVX2-only AMD EPYC the same default was 1.20x
torch; on an AVX-512 VNNI AMD EPYC, ONNX Runtime int8 answered one text 1.7x faster than OpenVINO
float32 (docs/cpu-backends.md has every machine's numbers). So the first version of an architecture
that a machine serves is timed there: each candidate (torch; ONNX Runtime and OpenVINO, float32 and
int8) is exported and loaded, then answers the version's own training texts one at a time and in a
full pass; int8 candidates must give the labels torch gives on those texts (the accuracy rule);
the fastest by the geometric mean of both throughputs serves. The decision is kept in
MODEL_PATH/backends/auto/ under a key of the CPU (model name, instruction-set flags, cores) and the
body's architecture (its config files), so later versions of the same base model (and a restart)
load the chosen export at once; a volume moved to another machine is timed again.

It runs in a process the inference worker's background export thread starts (fewshot/serving/export_process.py:
one SetFit load, one ONNX trace, every candidate made from it; its memory goes back to the OS when it ends),
while torch serves the version.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fewshot import backend_cache, store
from fewshot.backend_cache import AutoChoice, CandidateTiming, ServingBackend
from fewshot.serving import backends
from fewshot.serving.backends import INT8, NONE, ONNX, OPENVINO, TORCH, BackendChoice
from fewshot.serving.step_times import NO_STEPS, StepTimes

logger = logging.getLogger("fewshot.inference")

Predict = Callable[[list[str]], np.ndarray]
CANDIDATES = (BackendChoice(TORCH, NONE), BackendChoice(ONNX, NONE), BackendChoice(ONNX, INT8),
              BackendChoice(OPENVINO, NONE), BackendChoice(OPENVINO, INT8))
ONE_TEXT_CALLS = 24
FULL_PASS_TEXTS = 64
FULL_PASS_REPEATS = 3
TIMING_SECONDS = 4.0
MIN_ONE_TEXT_CALLS = 5
"""A big body's timing stops early: one-text calls once they took TIMING_SECONDS in all (at least
MIN_ONE_TEXT_CALLS of them), full passes once they did (at least one). MiniLM's calls stay well under it,
so it is timed as before; torch on gte-modernbert-base's stand-in (22 layers, 2 cores under other work)
answered one text in ~1.1 s and a 64-text pass in ~8 s: 55 s for its 24 calls and 3 passes (41 s with
this stop, on a busier box; bench/export_cost.py)."""
MIN_AGREEMENT = 0.99
"""Int8 candidates: share of the timing texts on which they answer torch's label. The quality
benchmark's rule was 0.5 accuracy point; on a version's own few dozen texts, that is all of them."""
FALLBACK_TEXTS = (
    "I still have not received my new card", "How do I transfer money to another account?",
    "what is the capital of france", "The food was cold and the service slow.", "Cancel my order please",
    "Can you tell me why my payment was declined at the store yesterday evening?",
)
"""Timing texts of a version that kept none of its training texts."""
CONFIG_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


@functools.cache
def cpu_identity() -> str:
    """What makes one CPU's timings differ from another's: its model name, flags and cores."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return f"{model}|{flags}|{os.cpu_count()}"


def decision_key(stored: store.StoredModel, threads: int) -> str:
    digest = hashlib.sha256(f"{cpu_identity()}|threads={threads}".encode())
    for name in CONFIG_FILES:
        path = stored.path / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()[:24]


def decision_file(stored: store.StoredModel, threads: int) -> Path:
    return backend_cache.root() / "auto" / f"{decision_key(stored, threads)}.json"


def kept_decision(stored: store.StoredModel, threads: int) -> AutoChoice | None:
    try:
        return AutoChoice.model_validate_json(decision_file(stored, threads).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None


def keep_decision(stored: store.StoredModel, threads: int, decision: AutoChoice) -> None:
    with backend_cache.replacing(decision_file(stored, threads)) as staged:
        staged.write_text(decision.model_dump_json(), encoding="utf8")


def timing_texts(calibration: list[str]) -> list[str]:
    return calibration[:FULL_PASS_TEXTS] or list(FALLBACK_TEXTS)


def time_candidate(predict: Predict, texts: list[str]) -> tuple[float, float, np.ndarray]:
    """Median milliseconds of one text, texts/s of full passes, and the labels it gives `texts`."""
    labels = predict(texts).argmax(axis=1)  # also warms up
    single: list[float] = []
    for text in (texts * ONE_TEXT_CALLS)[:ONE_TEXT_CALLS]:
        started = time.perf_counter()
        predict([text])
        single.append(time.perf_counter() - started)
        if len(single) >= MIN_ONE_TEXT_CALLS and sum(single) >= TIMING_SECONDS:
            break
    batch = (texts * FULL_PASS_TEXTS)[:FULL_PASS_TEXTS]
    passes: list[float] = []
    for _ in range(FULL_PASS_REPEATS):
        started = time.perf_counter()
        predict(batch)
        passes.append(time.perf_counter() - started)
        if sum(passes) >= TIMING_SECONDS:
            break
    return statistics.median(single) * 1000, len(batch) / min(passes), labels


def measure(stored: store.StoredModel, load: Callable[[BackendChoice], tuple[ServingBackend, Predict]],
            threads: int, steps: StepTimes = NO_STEPS,
            confirm: Callable[[BackendChoice], tuple[ServingBackend, Predict] | None] | None = None) -> AutoChoice:
    """Time every candidate on this machine (each exported into the cache as any backend is) and
    choose. `load(choice)`: the version loaded with that backend, as what serves it and its predict.
    `confirm(choice)`, where given, is asked about the chosen one before it is final: None if it serves as
    it was timed, else what serves it instead and its predict (its numpy path, timed unchecked, failed
    the load-time check: sentence-transformers serves it), which is timed again and the choice made
    again among the rest."""
    calibration = backends.calibration_texts(stored.path)
    texts = timing_texts(calibration)
    timings: dict[str, CandidateTiming] = {}
    reference: np.ndarray | None = None

    def timed(choice: BackendChoice, serving: ServingBackend, predict: Predict) -> CandidateTiming:
        nonlocal reference
        with steps.step("timing"):
            one_text_ms, texts_per_second, labels = time_candidate(predict, texts)
        if reference is None:
            reference = labels  # torch's, the first candidate
        agreement = float((labels == reference).mean())
        return CandidateTiming(
            one_text_ms=round(one_text_ms, 3), full_pass_texts_per_s=round(texts_per_second, 1),
            agreement=round(agreement, 4), eligible=choice.quantize == NONE or agreement >= MIN_AGREEMENT,
            pipeline=serving.pipeline)

    for choice in CANDIDATES:
        if choice == BackendChoice(OPENVINO, INT8) and not calibration:
            continue  # nothing to calibrate on (backends.for_version)
        serving, predict = load(choice)
        if (serving.backend, serving.quantize) != (choice.backend, choice.quantize):
            timings[choice.variant] = CandidateTiming(error=serving.error or f"served as {serving.backend}")
            continue
        timings[choice.variant] = timed(choice, serving, predict)
        del predict  # its model's memory goes with it
    confirmed: set[str] = set()
    while True:
        eligible = {variant: timing for variant, timing in timings.items() if timing.eligible}
        chosen = max(eligible, key=lambda variant: eligible[variant].score)
        if confirm is None or chosen in confirmed:
            break
        confirmed.add(chosen)
        instead = confirm(BackendChoice.from_variant(chosen))
        if instead is None:
            break
        serving, predict = instead
        steps.candidate = chosen
        timings[chosen] = timed(BackendChoice.from_variant(chosen), serving, predict)
        del predict
    decision = AutoChoice(chosen=chosen, candidates=timings, texts=len(texts), cpu=cpu_identity().split("|")[0],
                          measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    logger.info("AUTO backend for %s on this CPU: %s (%s)", stored.tag, chosen, ", ".join(
        f"{variant} {timing.one_text_ms} ms/text, {timing.full_pass_texts_per_s} texts/s"
        for variant, timing in timings.items() if timing.error is None))
    return decision
