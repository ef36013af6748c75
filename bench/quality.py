"""Quality benchmark: test accuracy and training time of each training strategy, next to the SetFit
library used directly with the same settings.

    make bench-quality      (or: .venv/bin/python -m bench.quality [--seeds 3] [--data ../shared/data])

For each data set (banking77, sst2, trec6: CSV `text,label` under --data) and seed: `--max-labels`
labels (all when fewer; banking77's 77 are capped, chosen by the seed), `--shots` training examples
per label (drawn by the seed) and up to `--test-per-label` test examples per label (the same for every
seed). Strategies run as the service runs them (trainers.training / trainers.run, default hold-out:
20% of the shots held out for the auto comparison and the reported hold-out accuracy):

- head:   frozen all-MiniLM-L6-v2 body, logistic-regression head (balanced class weights);
- setfit: SetFit fine-tuning, then the head;
- auto:   head, then fine-tuning; the fine-tuned model wins only if it beats the head on the hold-out;
- setfit-library: `setfit.Trainer` straight from the library on every shot (no hold-out), the
  library's default head, same iterations, batch size, learning rate and seed.

Serving backends (`--backends`, fewshot/serving/backends.py): every model the head and setfit
strategies trained is also loaded as the inference service loads it (fewshot.serving.model_loading,
exported into a scratch MODEL_PATH) with each backend, and scored on the same test texts: its
accuracy next to torch's, paired (same model, same texts).

Everything runs in this process on the bundled MiniLM (no network). Writes
bench/results/quality-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report_files import in_process_machine, write_report
from fewshot.base_models import resolve_base_model
from fewshot.serving.labels import best_labels, column_labels
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT
from trainers.holdout import evaluate
from trainers.run import compare
from trainers.training import Split, TrainedClassifier, TrainingOptions, fine_tune, split_examples, train_head

RESULTS = PROJECT_ROOT / "bench" / "results"
DATASETS = ("banking77", "sst2", "trec6")
STRATEGIES = ("head", "setfit", "auto", "setfit-library")
BACKENDS = ("torch-none", "onnx-none", "onnx-int8", "openvino-none", "openvino-int8")
TEST_SEED = 1234  # the test subset is the same for every training seed


def read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def by_label(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        grouped[label].append(text)
    return grouped


def sample_task(data: Path, dataset: str, seed: int, max_labels: int, shots: int,
                test_per_label: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    train, test = by_label(read_csv(data / dataset / "train.csv")), by_label(read_csv(data / dataset / "test.csv"))
    rng = random.Random(seed)
    labels = sorted(label for label in train if len(train[label]) >= shots and test.get(label))
    if len(labels) > max_labels:
        labels = sorted(rng.sample(labels, max_labels))
    examples = [(text, label) for label in labels for text in rng.sample(train[label], shots)]
    test_rng = random.Random(TEST_SEED)
    test_rows = [(text, label) for label in labels
                 for text in test_rng.sample(test[label], min(test_per_label, len(test[label])))]
    return examples, test_rows


def test_accuracy(model: Any, labels: list[str], test_rows: list[tuple[str, str]]) -> float:
    probabilities = np.asarray(model.predict_proba([text for text, _ in test_rows], as_numpy=True))
    predicted, _ = best_labels(probabilities, column_labels(model.model_head, labels))
    return evaluate([label for _, label in test_rows], predicted, labels).accuracy


def run_library(examples: list[tuple[str, str]], options: TrainingOptions) -> tuple[Any, list[str], float]:
    """The SetFit library as its README uses it: every example trained on, its default head."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    labels = sorted({label for _, label in examples})
    ids = {label: index for index, label in enumerate(labels)}
    model = SetFitModel.from_pretrained(options.base_model.location, labels=labels)
    started = time.perf_counter()  # as for the strategies: fitting, not loading
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(output_dir=scratch, num_iterations=options.num_iterations,
                                      batch_size=options.batch_size, body_learning_rate=options.learning_rate,
                                      seed=options.seed, save_strategy="no", report_to="none",
                                      show_progress_bar=False)
        trainer = Trainer(model=model, args=arguments, train_dataset=Dataset.from_dict(
            {"text": [t for t, _ in examples], "label": [ids[label] for _, label in examples]}),
            metric=lambda predicted, expected: {})
        trainer.train()
    return model, labels, time.perf_counter() - started


def backend_accuracies(trained: TrainedClassifier, test_rows: list[tuple[str, str]],
                       variants: list[str]) -> dict[str, float]:
    """Test accuracy of `trained` served by each backend variant (e.g. `openvino-int8`), loaded exactly
    as the inference service loads a stored version (export into MODEL_PATH's backend cache included)."""
    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel
    from fewshot.store import StoredModel

    accuracies = {}
    with tempfile.TemporaryDirectory(prefix="quality-model-") as directory:
        trained.save(Path(directory))
        stored = StoredModel("quality", Path(directory).name.replace("_", ""), Path(directory),
                             {"labels": trained.labels})
        for variant in variants:
            backend, quantize = variant.upper().split("-")
            loaded = LoadedModel.load(stored, InferenceRuntime.resolve(backend=backend, quantize=quantize))
            if loaded.backend.error:
                raise RuntimeError(f"{variant}: {loaded.backend.error}")
            predicted, _ = best_labels(loaded.predict_proba([text for text, _ in test_rows]), loaded.decisions.columns)
            accuracies[variant] = evaluate([label for _, label in test_rows], predicted, trained.labels).accuracy
    return accuracies


def run_task(examples: list[tuple[str, str]], test_rows: list[tuple[str, str]], options: TrainingOptions,
             strategies: list[str], variants: list[str]) -> dict[str, dict[str, Any]]:
    split: Split = split_examples(examples, None, options.seed)
    results: dict[str, dict[str, Any]] = {}
    head = tuned = None
    if {"head", "auto"} & set(strategies):
        head = train_head(split, options)
        results["head"] = {"test_accuracy": test_accuracy(head.model, split.labels, test_rows),
                           "holdout_accuracy": head.accuracy, "train_seconds": head.training_duration_seconds}
        if variants:
            results["head"]["backends"] = backend_accuracies(head, test_rows, variants)
    if {"setfit", "auto"} & set(strategies):
        tuned = fine_tune(split, options)
        results["setfit"] = {"test_accuracy": test_accuracy(tuned.model, split.labels, test_rows),
                             "holdout_accuracy": tuned.accuracy, "train_seconds": tuned.training_duration_seconds}
        if variants:
            results["setfit"]["backends"] = backend_accuracies(tuned, test_rows, variants)
    if "auto" in strategies:
        comparison = compare(head, tuned)
        winner = results[comparison.winner]
        results["auto"] = {"test_accuracy": winner["test_accuracy"], "winner": comparison.winner,
                           "train_seconds": results["head"]["train_seconds"] + results["setfit"]["train_seconds"],
                           "seconds_to_first_model": results["head"]["train_seconds"]}
    if "setfit-library" in strategies:
        model, labels, seconds = run_library(examples, options)
        results["setfit-library"] = {"test_accuracy": test_accuracy(model, labels, test_rows),
                                     "train_seconds": seconds}
    return {name: results[name] for name in strategies if name in results}


def summarise(runs: list[dict[str, Any]], strategies: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for dataset in sorted({run["dataset"] for run in runs}):
        of_dataset = [run for run in runs if run["dataset"] == dataset]
        summary[dataset] = {}
        for strategy in strategies:
            accuracies = [run["results"][strategy]["test_accuracy"] for run in of_dataset]
            seconds = [run["results"][strategy]["train_seconds"] for run in of_dataset]
            summary[dataset][strategy] = {
                "accuracy_mean": statistics.mean(accuracies),
                "accuracy_stdev": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "train_seconds_mean": statistics.mean(seconds),
            }
            if strategy == "auto":
                summary[dataset][strategy]["head_won"] = sum(
                    run["results"]["auto"]["winner"] == "head" for run in of_dataset)
                summary[dataset][strategy]["seconds_to_first_model_mean"] = statistics.mean(
                    run["results"]["auto"]["seconds_to_first_model"] for run in of_dataset)
    return summary


def summarise_backends(runs: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """Per data set, strategy and backend: mean test accuracy, and its difference from torch on the
    same models and texts (mean and worst seed), in accuracy points."""
    rows = []
    for dataset in sorted({run["dataset"] for run in runs}):
        of_dataset = [run for run in runs if run["dataset"] == dataset]
        for strategy in ("head", "setfit"):
            scored = [run["results"][strategy]["backends"] for run in of_dataset
                      if "backends" in run["results"].get(strategy, {})]
            for variant in variants if scored else ():
                deltas = [100 * (scores[variant] - scores["torch-none"]) for scores in scored]
                rows.append({"dataset": dataset, "strategy": strategy, "backend": variant,
                             "accuracy_mean": statistics.mean(scores[variant] for scores in scored),
                             "delta_points_mean": statistics.mean(deltas), "delta_points_worst": min(deltas)})
    return rows


def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"# Quality benchmark, {report['finished_at']}",
        "",
        f"{setup['machine']}; base model {setup['base_model']}; {setup['shots']} examples per label, at most "
        f"{setup['max_labels']} labels, up to {setup['test_per_label']} test examples per label; seeds "
        f"{setup['seeds']}; num_iterations {setup['num_iterations']}, batch_size {setup['batch_size']}, "
        f"learning rate {setup['learning_rate']}. Total {report['wall_seconds']:.0f} s.",
        "",
        "Test accuracy: mean ± standard deviation over seeds; training seconds: mean of fitting, base-model load "
        "excluded (`auto` = head + fine-tuning; notes: how soon its first model served).",
        "",
        "| data set | labels | strategy | test accuracy | training s | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, strategies in report["summary"].items():
        labels = report["labels"][dataset]
        for strategy, numbers in strategies.items():
            notes = ""
            if strategy == "auto":
                notes = (f"head won {numbers['head_won']}/{len(setup['seeds'])}; first model after "
                         f"{numbers['seconds_to_first_model_mean']:.1f} s")
            lines.append(f"| {dataset} | {labels} | {strategy} | {numbers['accuracy_mean']:.3f} ± "
                         f"{numbers['accuracy_stdev']:.3f} | {numbers['train_seconds_mean']:.1f} | {notes} |")
    if report.get("backends"):
        lines += [
            "",
            "## By serving backend",
            "",
            "The same trained models served by each backend (fewshot/serving/backends.py), same test texts; "
            "difference from torch in accuracy points (mean over seeds, and the worst seed).",
            "",
            "| data set | strategy | backend | test accuracy | Δ vs torch (mean) | Δ (worst seed) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [f"| {row['dataset']} | {row['strategy']} | {row['backend']} | {row['accuracy_mean']:.3f} | "
                  f"{row['delta_points_mean']:+.2f} | {row['delta_points_worst']:+.2f} |" for row in report["backends"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--max-labels", type=int, default=8)
    parser.add_argument("--test-per-label", type=int, default=50)
    parser.add_argument("--num-iterations", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--base-model", default=BASE_MODEL)
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="serving backends to score the head and setfit models with ('' for none)")
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    variants = [variant for variant in args.backends.split(",") if variant]
    if variants and "torch-none" not in variants:
        variants.insert(0, "torch-none")  # the reference the others are compared with
    # The backend exports go to a scratch MODEL_PATH, never into the user's.
    os.environ["MODEL_PATH"] = tempfile.mkdtemp(prefix="quality-bench-")
    from fewshot.settings import get_settings
    get_settings.cache_clear()
    seeds = list(range(1, args.seeds + 1))

    started = time.perf_counter()
    runs, labels = [], {}
    for dataset in args.datasets.split(","):
        for seed in seeds:
            examples, test_rows = sample_task(args.data, dataset, seed, args.max_labels, args.shots,
                                              args.test_per_label)
            labels[dataset] = len({label for _, label in examples})
            options = TrainingOptions(base_model=resolve_base_model(args.base_model),
                                      num_iterations=args.num_iterations, batch_size=args.batch_size,
                                      learning_rate=args.learning_rate, seed=seed)
            torch.manual_seed(seed)
            results = run_task(examples, test_rows, options, strategies, variants)
            runs.append({"dataset": dataset, "seed": seed, "train_examples": len(examples),
                         "test_examples": len(test_rows), "results": results})
            print(dataset, seed, {name: round(r["test_accuracy"], 4) for name, r in results.items()},
                  {name: round(r["train_seconds"], 1) for name, r in results.items()}, flush=True)

    finished = datetime.now(UTC)
    report = {
        "finished_at": finished.isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "setup": {"machine": in_process_machine(),
                  "base_model": args.base_model, "shots": args.shots, "max_labels": args.max_labels,
                  "test_per_label": args.test_per_label, "seeds": seeds, "num_iterations": args.num_iterations,
                  "batch_size": args.batch_size, "learning_rate": args.learning_rate, "backends": variants},
        "labels": labels,
        "summary": summarise(runs, strategies),
        "backends": summarise_backends(runs, variants),
        "runs": runs,
    }
    stem = write_report(RESULTS, "quality", finished, report, markdown(report))
    print(markdown(report))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
