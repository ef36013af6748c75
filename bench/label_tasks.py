"""Label-task benchmark: multi-label models and "none of these", on real data, against the SetFit
library used directly.

    make bench-label-tasks   (or: .venv/bin/python -m bench.label_tasks [--seeds 3] [--data ../shared/data])

Multi-label, GoEmotions (28 labels; a text has one or more): per seed, `--shots` training texts
drawn for each label (a text drawn for one label keeps all its labels), and the same
`--test-size` test texts for every seed. Scored on the test texts: micro F1, macro F1 (mean over
labels) and subset accuracy (exact label sets) of
- head / setfit: the service's strategies as it runs them (trainers.training: one-vs-rest head with
  balanced class weights, a 20% hold-out of the shots on which each label's threshold is learned);
  `@0.5` rows: the same models with SetFit's fixed threshold instead, to separate the two changes;
  `@per-label` rows: with each label's own F1-best threshold on the hold-out, not shrunk toward the
  shared one (trainers/thresholds.py says why the service shrinks them);
- setfit-library / setfit-library-head: `SetFitModel(multi_target_strategy="one-vs-rest")` straight
  from the library on every shot, its default head, `model.predict` (a label where its probability
  > 0.5); fine-tuned with the same iterations, batch size, learning rate and seed, or head only.

None of these, Banking77-OOS protocol (Zhang et al., 2021, "Are Pretrained Transformers Robust in
Intent Classification?"): per seed, 50 of the 77 intents are in scope; the other 27 are out of
scope, their test texts count as foreign. Half of the out-of-scope intents (13) may lend
`--none-shots` training texts each as `label: null` examples ("seen" foreign intents); the other
14 are never shown ("unseen"). `--shots` texts per in-scope intent, 20% hold-out (the abstention
threshold is learned on it, coverage 0.95). Scored on `--test-per-intent` test texts per intent:
in-scope accuracy (a refused in-scope text counts as wrong), in-scope texts kept, accuracy on the
kept ones, and the share of foreign texts refused (unseen and seen intents apart), for
- plain: the most probable intent, never refusing (what a classifier without abstention does);
- abstain: `abstain: true` (the learned split-conformal threshold, coverage 0.95);
- abstain@0.80: the same with `abstention_coverage: 0.8` (its threshold learned on the same hold-out);
- none-of-these: trained with the `label: null` examples too, which such a model always applies.

Everything runs in this process on the bundled all-MiniLM-L6-v2 (no network). Writes
bench/results/label-tasks-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report_files import in_process_machine, write_report
from fewshot.base_models import resolve_base_model
from fewshot.serving.decisions import multi_label_sets, single_label_answers
from fewshot.serving.labels import column_labels
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT
from trainers.thresholds import conformal_threshold, f1_threshold, multi_label_metrics
from trainers.training import Split, TrainedClassifier, TrainingOptions, fine_tune, split_examples, train_head

RESULTS = PROJECT_ROOT / "bench" / "results"
TEST_SEED = 1234  # the test texts are the same for every training seed
IN_SCOPE_INTENTS = 50  # Banking77-OOS: 50 in-scope intents, 27 out of scope
MULTI_LABEL_ROWS = ("head", "head@per-label", "head@0.5", "setfit", "setfit@per-label", "setfit@0.5",
                    "setfit-library-head", "setfit-library")
OOS_ROWS = ("plain", "abstain", "abstain@0.80", "none-of-these")
LOWER_COVERAGE = 0.80


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---- multi-label: GoEmotions -------------------------------------------------------------------

def goemotions(data: Path, seed: int, shots: int, test_size: int
               ) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, tuple[str, ...]]], list[str]]:
    def parse(rows: list[dict[str, str]]) -> list[tuple[str, tuple[str, ...]]]:
        return [(row["text"], tuple(sorted(row["labels"].split("|")))) for row in rows]

    folder = data / "goemotions"
    train, test = parse(read_rows(folder / "train.csv")), parse(read_rows(folder / "test.csv"))
    labels = sorted({label for _, labels in train for label in labels})
    having: defaultdict[str, list[int]] = defaultdict(list)
    for index, (_, row_labels) in enumerate(train):
        for label in row_labels:
            having[label].append(index)
    rng = random.Random(seed)
    chosen: dict[int, None] = {}  # ordered, distinct
    for label in labels:
        for index in rng.sample(having[label], shots):
            chosen[index] = None
    return [train[i] for i in chosen], random.Random(TEST_SEED).sample(test, test_size), labels


def scores(expected: Sequence[tuple[str, ...]], predicted: list[list[str]], labels: list[str]) -> dict[str, float]:
    metrics = multi_label_metrics(expected, predicted, labels)
    return {"micro_f1": metrics.micro_f1 or 0.0, "macro_f1": metrics.macro_f1 or 0.0,
            "subset_accuracy": metrics.accuracy, "labels_per_text": float(np.mean([len(p) for p in predicted]))}


def ours_multi_label(trained: TrainedClassifier, split: Split, test: Sequence[tuple[str, tuple[str, ...]]]
                     ) -> dict[str, dict[str, float]]:
    """With its learned thresholds, with each label's own unshrunk one, and with 0.5."""
    columns: list[str] = column_labels(trained.model.model_head, trained.labels)  # type: ignore[assignment]
    probabilities = np.asarray(trained.model.predict_proba([text for text, _ in test], as_numpy=True))
    held_out = np.asarray(trained.model.predict_proba([text for text, _ in split.evaluation], as_numpy=True))
    positives = np.asarray([[column in labels for column in columns] for _, labels in split.evaluation])  # type: ignore[operator]
    own = np.asarray([f1_threshold(held_out[:, j], positives[:, j]) for j in range(len(columns))])
    learned = np.asarray([(trained.thresholds or {})[column] for column in columns])
    expected = [labels for _, labels in test]
    return {name: scores(expected, multi_label_sets(probabilities, columns, thresholds), trained.labels)
            for name, thresholds in (("learned", learned), ("per-label", own), ("0.5", np.full(len(columns), 0.5)))}


def library_multi_label(examples: Sequence[tuple[str, tuple[str, ...]]], labels: list[str],
                        test: Sequence[tuple[str, tuple[str, ...]]], options: TrainingOptions,
                        fine_tuned: bool) -> tuple[dict[str, float], float]:
    """The SetFit library as its multi-label docs use it: one-vs-rest, default head, `model.predict`."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    targets = [[int(label in row_labels) for label in labels] for _, row_labels in examples]
    texts = [text for text, _ in examples]
    model = SetFitModel.from_pretrained(options.base_model.location, multi_target_strategy="one-vs-rest")
    started = time.perf_counter()
    if fine_tuned:
        with tempfile.TemporaryDirectory() as scratch:
            arguments = TrainingArguments(output_dir=scratch, num_iterations=options.num_iterations,
                                          batch_size=options.batch_size, body_learning_rate=options.learning_rate,
                                          seed=options.seed, save_strategy="no", report_to="none",
                                          show_progress_bar=False)
            Trainer(model=model, args=arguments, train_dataset=Dataset.from_dict({"text": texts, "label": targets}),
                    metric=lambda predicted, expected: {}).train()
    else:
        model.fit(texts, targets, num_epochs=1, show_progress_bar=False)
    seconds = time.perf_counter() - started
    predicted = np.asarray(model.predict([text for text, _ in test], as_numpy=True))
    chosen = [[label for label, on in zip(labels, row, strict=True) if on] for row in predicted]
    return scores([expected for _, expected in test], chosen, labels), seconds


def run_multi_label(args: argparse.Namespace, seed: int, options: TrainingOptions) -> dict[str, Any]:
    examples, test, labels = goemotions(args.data, seed, args.shots, args.test_size)
    split = split_examples(examples, None, seed)
    results: dict[str, Any] = {}
    for strategy, train in (("head", train_head), ("setfit", fine_tune)):
        trained = train(split, options)
        variants = ours_multi_label(trained, split, test)
        results[strategy] = {**variants["learned"], "train_seconds": trained.training_duration_seconds}
        results[f"{strategy}@per-label"], results[f"{strategy}@0.5"] = variants["per-label"], variants["0.5"]
    for name, fine_tuned in (("setfit-library-head", False), ("setfit-library", True)):
        results[name], seconds = library_multi_label(examples, labels, test, options, fine_tuned)
        results[name]["train_seconds"] = seconds
    print("goemotions", seed, {name: round(r["micro_f1"], 3) for name, r in results.items()}, flush=True)
    return {"seed": seed, "train_examples": len(examples), "holdout_examples": len(split.evaluation),
            "test_examples": len(test), "results": results}


# ---- none of these: Banking77-OOS --------------------------------------------------------------

def banking77_oos(data: Path, seed: int, shots: int, none_shots: int, test_per_intent: int) -> dict[str, Any]:
    train: defaultdict[str, list[str]] = defaultdict(list)
    test: defaultdict[str, list[str]] = defaultdict(list)
    for row in read_rows(data / "banking77" / "train.csv"):
        train[row["label"]].append(row["text"])
    for row in read_rows(data / "banking77" / "test.csv"):
        test[row["label"]].append(row["text"])
    rng = random.Random(seed)
    intents = sorted(train)
    in_scope = sorted(rng.sample(intents, IN_SCOPE_INTENTS))
    foreign = sorted(set(intents) - set(in_scope))
    seen = sorted(rng.sample(foreign, len(foreign) // 2))
    unseen = sorted(set(foreign) - set(seen))
    examples = [(text, intent) for intent in in_scope for text in rng.sample(train[intent], shots)]
    none_examples = [(text, None) for intent in seen for text in rng.sample(train[intent], none_shots)]
    test_rng = random.Random(TEST_SEED)
    test_rows = [(text, intent) for intent in intents
                 for text in test_rng.sample(test[intent], min(test_per_intent, len(test[intent])))]
    return {"examples": examples, "none_examples": none_examples, "test": test_rows, "in_scope": set(in_scope),
            "seen": set(seen), "unseen": set(unseen)}


def score_oos(trained: TrainedClassifier, task: dict[str, Any], threshold: float | None) -> dict[str, float]:
    texts = [text for text, _ in task["test"]]
    probabilities = np.asarray(trained.model.predict_proba(texts, as_numpy=True))
    refuses = bool(trained.abstention and trained.abstention.none_of_these_examples)
    columns = column_labels(trained.model.model_head, trained.labels, refuses=refuses)
    answers = single_label_answers(probabilities, columns, threshold)
    truth = [intent for _, intent in task["test"]]
    in_scope = [i for i, intent in enumerate(truth) if intent in task["in_scope"]]
    kept = [i for i in in_scope if answers.labels[i] is not None]

    def refused(group: set[str]) -> float:
        rows = [i for i, intent in enumerate(truth) if intent in group]
        return sum(answers.labels[i] is None for i in rows) / len(rows)

    return {"in_scope_accuracy": sum(answers.labels[i] == truth[i] for i in in_scope) / len(in_scope),
            "in_scope_kept": len(kept) / len(in_scope),
            "accuracy_kept": sum(answers.labels[i] == truth[i] for i in kept) / len(kept) if kept else 0.0,
            "refused_unseen": refused(task["unseen"]), "refused_seen": refused(task["seen"])}


def run_oos(args: argparse.Namespace, seed: int, options: TrainingOptions, strategy: str) -> dict[str, Any]:
    task = banking77_oos(args.data, seed, args.shots, args.none_shots, args.test_per_intent)
    train = train_head if strategy == "head" else fine_tune
    split = split_examples(task["examples"], None, seed)
    plain = train(split, options)
    threshold = plain.abstention.threshold if plain.abstention else None
    # What abstention_coverage 0.8 would have learned: the same rule on the same hold-out.
    held_out = np.asarray(plain.model.predict_proba([text for text, _ in split.evaluation], as_numpy=True))
    lower = conformal_threshold(held_out.max(axis=1), LOWER_COVERAGE)
    refusing = train(split_examples(task["examples"] + task["none_examples"], None, seed), options)
    results = {"plain": score_oos(plain, task, None), "abstain": score_oos(plain, task, threshold),
               "abstain@0.80": score_oos(plain, task, lower),
               "none-of-these": score_oos(refusing, task, refusing.abstention.threshold if refusing.abstention
                                          else None)}
    print("banking77-oos", strategy, seed, {name: (round(r["in_scope_accuracy"], 3), round(r["refused_unseen"], 3))
                                           for name, r in results.items()}, flush=True)
    return {"seed": seed, "strategy": strategy, "train_examples": len(task["examples"]),
            "none_examples": len(task["none_examples"]), "test_examples": len(task["test"]), "results": results}


# ---- report ------------------------------------------------------------------------------------

def mean_and_stdev(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict[str, Any]], rows: Sequence[str], metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {row: {metric: mean_and_stdev([run["results"][row][metric] for run in runs]) for metric in metrics}
            for row in rows}


def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [f"# Label-task benchmark, {report['finished_at']}", "",
             f"{setup['machine']}; base model {setup['base_model']}; seeds {setup['seeds']}; num_iterations "
             f"{setup['num_iterations']}, batch_size {setup['batch_size']}. Total {report['wall_seconds']:.0f} s. "
             "Mean ± standard deviation over seeds.", "",
             f"## Multi-label: GoEmotions (28 labels), {setup['shots']} texts drawn per label "
             f"(~{report['multi_label_train_examples']} examples), {setup['test_size']} test texts", "",
             "| model | micro F1 | macro F1 | subset accuracy | labels per text | training s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row, numbers in report["multi_label"].items():
        cells = " | ".join(f"{numbers[m][0]:.3f} ± {numbers[m][1]:.3f}" for m in ("micro_f1", "macro_f1",
                                                                                 "subset_accuracy"))
        cells += f" | {numbers['labels_per_text'][0]:.2f}"
        seconds = f"{numbers['train_seconds'][0]:.1f}" if "train_seconds" in numbers else "(same model)"
        lines.append(f"| {row} | {cells} | {seconds} |")
    lines += ["", f"## None of these: Banking77-OOS, 50 in-scope intents × {setup['shots']} texts, 27 foreign "
              f"intents (13 seen: {setup['none_shots']} `label: null` texts each, 14 unseen), "
              f"{setup['test_per_intent']} test texts per intent", "",
              "| strategy | model | in-scope accuracy | in-scope kept | accuracy on kept | foreign refused (unseen) "
              "| foreign refused (seen) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for strategy, summary in report["none_of_these"].items():
        for row, numbers in summary.items():
            cells = " | ".join(f"{numbers[m][0]:.3f} ± {numbers[m][1]:.3f}" for m in (
                "in_scope_accuracy", "in_scope_kept", "accuracy_kept", "refused_unseen", "refused_seen"))
            lines.append(f"| {strategy} | {row} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=8, help="training texts per label / in-scope intent")
    parser.add_argument("--none-shots", type=int, default=4, help="`label: null` texts per seen foreign intent")
    parser.add_argument("--test-size", type=int, default=1000, help="GoEmotions test texts")
    parser.add_argument("--test-per-intent", type=int, default=20, help="Banking77 test texts per intent")
    parser.add_argument("--num-iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--oos-strategies", default="head", help="head, setfit or both (setfit: ~4 min more per seed)")
    parser.add_argument("--base-model", default=BASE_MODEL)
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))

    started = time.perf_counter()
    multi_label_runs, oos_runs = [], defaultdict(list)
    for seed in seeds:
        options = TrainingOptions(base_model=resolve_base_model(args.base_model), num_iterations=args.num_iterations,
                                  batch_size=args.batch_size, seed=seed)
        torch.manual_seed(seed)
        multi_label_runs.append(run_multi_label(args, seed, options))
        for strategy in args.oos_strategies.split(","):
            torch.manual_seed(seed)
            oos_runs[strategy].append(run_oos(args, seed, options, strategy))

    finished = datetime.now(UTC)
    report = {
        "finished_at": finished.isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "setup": {"machine": in_process_machine(),
                  "base_model": args.base_model, "seeds": seeds, "shots": args.shots, "none_shots": args.none_shots,
                  "test_size": args.test_size, "test_per_intent": args.test_per_intent,
                  "num_iterations": args.num_iterations, "batch_size": args.batch_size},
        "multi_label_train_examples": round(statistics.mean(run["train_examples"] for run in multi_label_runs)),
        "multi_label": {row: {metric: mean_and_stdev([run["results"][row][metric] for run in multi_label_runs])
                              for metric in run_metrics}
                        for row in MULTI_LABEL_ROWS
                        for run_metrics in [list(multi_label_runs[0]["results"][row])]},
        "none_of_these": {strategy: summarise(runs, OOS_ROWS, ("in_scope_accuracy", "in_scope_kept", "accuracy_kept",
                                                              "refused_unseen", "refused_seen"))
                          for strategy, runs in oos_runs.items()},
        "runs": {"multi_label": multi_label_runs, "none_of_these": oos_runs},
    }
    stem = write_report(RESULTS, "label-tasks", finished, report, markdown(report))
    print(markdown(report))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
