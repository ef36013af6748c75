"""Does the scope threshold keep its coverage on the backend that serves? (issue 40)

    make bench-scope-backends   (or: .venv/bin/python -m bench.scope_backends [--seeds 3] [--data ../shared/data])

A version's scope threshold is calibrated at training time (trainers/scope.py) on the trainer's
float32 torch embeddings, and its scope index (the training embeddings) is float32 torch too; but a
served text is embedded by whatever serves the body: ONNX Runtime or OpenVINO, float32 or int8
(docs/cpu-backends.md). This measures what that does to the promise.

Per seed: 20 banking77 intents (drawn by the seed) × 8 training texts, split and trained as the
service trains a `head` version (trainers/training.py: split_examples with the default hold-out,
train_head on all-MiniLM-L6-v2 with TrainingOptions; the scope fitted in _finish: trained.scope,
trained.scope_index). The version is saved (trained.save) and loaded as the inference service loads
it (fewshot.serving.model_loading.LoadedModel with InferenceRuntime.resolve(backend, quantize): the
export made by fewshot/serving/exporting.py into a scratch MODEL_PATH's backend cache, served by the
numpy path of fewshot/serving/numpy_pipeline.py where it reproduces the body), once per backend:
torch float32 (the reference: what the threshold was calibrated on), ONNX Runtime float32 and int8,
OpenVINO float32 and int8 (int8 calibrated on the version's own training texts), and torch
float16 (what a GPU serves by default, INFERENCE_DTYPE=AUTO; computed here on the CPU). Each embeds the
in-scope test texts (banking77 test.csv of the 20 intents) and `--foreign` out-of-scope ones (test
texts of the other 57 intents, drawn by the seed); the loaded version's scope index
(fewshot/serving/scope.py ScopeIndex.scores) scores them. Reported per backend: the in-scope share
kept at the version's float32-calibrated threshold (against the coverage it promises, 0.95 by
default), the out-of-scope share refused, and the largest |scope score − torch float32's| over every
text. Writes bench/results/scope-backends-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.report_files import in_process_machine, write_report
from bench.retraining import read_csv
from fewshot.base_models import resolve_base_model
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"
REFERENCE = "torch-none"
BACKENDS = (REFERENCE, "onnx-none", "onnx-int8", "openvino-none", "openvino-int8", "torch-float16")
"""torch-float16: torch in half precision, what a GPU serves by default (INFERENCE_DTYPE=AUTO), run here on the CPU."""
INTENTS, SHOTS = 20, 8


def sample(data: Path, seed: int, foreign: int) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """The seed's training examples, in-scope test texts and out-of-scope test texts."""
    train, test = read_csv(data / "banking77" / "train.csv"), read_csv(data / "banking77" / "test.csv")
    rng = random.Random(seed)
    intents = sorted(rng.sample(sorted(train), INTENTS))
    examples = [(text, intent) for intent in intents for text in rng.sample(train[intent], SHOTS)]
    in_scope = [text for intent in intents for text in test[intent]]
    others = [text for intent in sorted(set(test) - set(intents)) for text in test[intent]]
    return examples, in_scope, rng.sample(others, min(foreign, len(others)))


def run_seed(data: Path, seed: int, foreign: int, variants: list[str]) -> dict:
    import torch

    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel
    from fewshot.store import StoredModel
    from trainers.training import TrainingOptions, split_examples, train_head

    examples, in_scope, out_of_scope = sample(data, seed, foreign)
    options = TrainingOptions(base_model=resolve_base_model(BASE_MODEL), seed=seed)
    torch.manual_seed(seed)
    trained = train_head(split_examples(examples, options.holdout_fraction, seed), options)
    assert trained.scope is not None and trained.scope.threshold is not None, trained.scope
    threshold, coverage = trained.scope.threshold, trained.scope.coverage
    result: dict = {"seed": seed, "train_examples": len(trained.trained_on or []),
                    "in_scope_texts": len(in_scope), "out_of_scope_texts": len(out_of_scope),
                    "scope": trained.scope.model_dump(), "backends": {}}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="scope-backends-model-") as directory:
        trained.save(Path(directory))
        stored = StoredModel("scope-backends", f"s{seed}{Path(directory).name.replace('_', '')}", Path(directory),
                             {"labels": trained.labels})
        for variant in variants:
            backend, quantize = variant.upper().split("-")
            dtype = "AUTO"
            if backend == "TORCH" and quantize != "NONE":
                dtype, quantize = quantize, "NONE"  # torch-float16: a torch dtype, not an export
            started = time.perf_counter()
            loaded = LoadedModel.load(stored, InferenceRuntime.resolve(dtype=dtype, device="cpu", backend=backend,
                                                                       quantize=quantize), record=False)
            served = f"{loaded.backend.backend}-{loaded.backend.quantize}"
            if dtype != "AUTO":
                served = f"torch-{dtype.lower()}"
            if served != variant or loaded.backend.error:
                raise RuntimeError(f"{variant} served as {served}: {loaded.backend.error}")
            index = loaded.decisions.scope  # the version's saved training embeddings, as served
            assert index is not None
            _, kept_vectors = loaded.predict_with_embeddings(in_scope)  # what an abstaining request embeds
            _, foreign_vectors = loaded.predict_with_embeddings(out_of_scope)
            scores[variant] = (index.scores(kept_vectors), index.scores(foreign_vectors))
            inside, outside = scores[variant]
            result["backends"][variant] = {
                "pipeline": loaded.backend.pipeline,
                "in_scope_kept": round(float(np.mean(inside >= threshold)), 4),
                "out_of_scope_refused": round(float(np.mean(outside < threshold)), 4),
                "seconds": round(time.perf_counter() - started, 1)}
            del loaded
    reference = np.concatenate(scores[REFERENCE])
    for variant, (inside, outside) in scores.items():
        difference = np.concatenate([inside, outside]) - reference
        result["backends"][variant].update(max_abs_score_difference=round(float(np.abs(difference).max()), 6),
                                           mean_score_difference=round(float(difference.mean()), 6))
    result["threshold"], result["coverage"] = threshold, coverage
    print(seed, {variant: {key: row[key] for key in ("in_scope_kept", "out_of_scope_refused",
                                                     "max_abs_score_difference")}
                 for variant, row in result["backends"].items()}, flush=True)
    return result


def summarise(runs: list[dict], variants: list[str]) -> dict:
    summary = {}
    for variant in variants:
        rows = [run["backends"][variant] for run in runs]
        kept = [row["in_scope_kept"] for row in rows]
        summary[variant] = {
            "in_scope_kept_mean": round(statistics.mean(kept), 4), "in_scope_kept_min": min(kept),
            "coverage_lost_vs_torch": round(statistics.mean(
                run["backends"][REFERENCE]["in_scope_kept"] - run["backends"][variant]["in_scope_kept"]
                for run in runs), 4),
            "out_of_scope_refused_mean": round(statistics.mean(row["out_of_scope_refused"] for row in rows), 4),
            "max_abs_score_difference": max(row["max_abs_score_difference"] for row in rows),
            "mean_score_difference": round(statistics.mean(row["mean_score_difference"] for row in rows), 6)}
    return summary


def markdown(report: dict) -> str:
    lines = [f"# Scope threshold on the serving backends ({report['started_at']})", "",
             f"{report['base_model']}, `head` versions, banking77: {INTENTS} intents × {SHOTS} texts per seed "
             f"(default hold-out), seeds {report['seeds']}; in-scope: the intents' test texts; out-of-scope: "
             f"{report['foreign']} test texts of the other intents. The threshold is calibrated on torch float32 "
             f"embeddings (coverage {report['coverage']}) and applied to each backend's. {report['machine']}.", "",
             "| backend | in-scope kept (mean) | min over seeds | lost vs torch | out-of-scope refused | "
             "max \\|Δ score\\| | mean Δ score |", "|---|---|---|---|---|---|---|"]
    for variant, row in report["summary"].items():
        lines.append(f"| {variant} | {row['in_scope_kept_mean']} | {row['in_scope_kept_min']} | "
                     f"{row['coverage_lost_vs_torch']} | {row['out_of_scope_refused_mean']} | "
                     f"{row['max_abs_score_difference']} | {row['mean_score_difference']} |")
    lines += ["", "## Per seed", "", "| seed | threshold | backend | pipeline | in-scope kept | out-of-scope refused | "
              "max \\|Δ score\\| |", "|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        for variant, row in run["backends"].items():
            lines.append(f"| {run['seed']} | {run['threshold']:.4f} | {variant} | {row['pipeline']} | "
                         f"{row['in_scope_kept']} | {row['out_of_scope_refused']} | "
                         f"{row['max_abs_score_difference']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--foreign", type=int, default=1000, help="out-of-scope test texts per seed")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    variants = [REFERENCE, *(v for v in args.backends.split(",") if v and v != REFERENCE)]
    started_at = datetime.now(UTC).replace(microsecond=0)
    os.environ["MODEL_PATH"] = tempfile.mkdtemp(prefix="scope-backends-bench-")  # the exports' cache, never the user's
    from fewshot.settings import get_settings
    get_settings.cache_clear()
    runs = [run_seed(args.data, seed, args.foreign, variants) for seed in range(1, args.seeds + 1)]
    report = {"benchmark": "scope-backends", "started_at": started_at.isoformat(), "machine": in_process_machine(),
              "base_model": BASE_MODEL, "seeds": [run["seed"] for run in runs], "foreign": args.foreign,
              "coverage": runs[0]["coverage"], "summary": summarise(runs, variants), "runs": runs}
    stem = write_report(args.out, "scope-backends", started_at, report, markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
