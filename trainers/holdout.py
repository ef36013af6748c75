"""Honest evaluation: which examples are held out of training, and how they are scored. Pure logic."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fewshot.records.outcomes import Abstention, ConfusionMatrix, LabelMetrics

DEFAULT_HOLDOUT_FRACTION = 0.2
MIN_EXAMPLES_PER_LABEL_FOR_DEFAULT_HOLDOUT = 4

Example = TypeVar("Example")

def choose_holdout_fraction(label_counts: Counter[str], requested: float | None) -> float:
    """The request's fraction, else 20% when every label has enough examples to spare some, else 0."""
    if requested is not None:
        return requested
    if min(label_counts.values()) >= MIN_EXAMPLES_PER_LABEL_FOR_DEFAULT_HOLDOUT:
        return DEFAULT_HOLDOUT_FRACTION
    return 0.0


def stratified_split(examples: Sequence[Example], labels: Sequence[str], fraction: float,
                     seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (train, holdout): per label round(n × fraction) held out, at least 1, at most n − 1.

    `labels` are the strata: an example's label (multi-label: see `multi_label_strata`). With
    fraction 0 nothing is held out. Deterministic for a given seed.
    """
    if fraction <= 0:
        return list(examples), []
    by_label: defaultdict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    held_out: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        if len(indices) < 2:
            continue  # a label needs at least one training example
        count = min(len(indices) - 1, max(1, round(len(indices) * fraction)))
        held_out.update(rng.sample(indices, count))
    train = [example for i, example in enumerate(examples) if i not in held_out]
    holdout = [example for i, example in enumerate(examples) if i in held_out]
    return train, holdout


def multi_label_strata(label_sets: Sequence[Sequence[str]]) -> list[str]:
    """A multi-label example is held out with the examples of its rarest label (so rare labels are
    split first and fairly); an example with no label forms a stratum of its own."""
    counts = Counter(label for labels in label_sets for label in labels)
    return [min(labels, key=lambda label: (counts[label], label)) if labels else "" for labels in label_sets]


def keep_every_label_in_training(train: list[Example], holdout: list[Example],
                                 label_sets: Callable[[Example], Sequence[str]]) -> tuple[list[Example], list[Example]]:
    """Multi-label: move back into training the held-out examples of any label that the split left
    without a training example (its examples were held out as other labels' strata)."""
    trained = {label for example in train for label in label_sets(example)}
    kept = []
    for example in holdout:
        if set(label_sets(example)) - trained:
            train.append(example)
            trained.update(label_sets(example))
        else:
            kept.append(example)
    return train, kept


def accuracy(expected: Sequence[str | None], predicted: Sequence[str | None]) -> float | None:
    """Share of exact matches; None when there is nothing to score."""
    if len(expected) != len(predicted):
        raise ValueError(f"{len(expected)} expected labels but {len(predicted)} predictions")
    if not expected:
        return None
    return sum(e == p for e, p in zip(expected, predicted, strict=True)) / len(expected)


def confusion_matrix(expected: Sequence[str | None], predicted: Sequence[str | None],
                     labels: Sequence[str]) -> ConfusionMatrix:
    """Counts of (expected, predicted) pairs; None gets the last row and column when it occurs."""
    with_none = None in expected or None in predicted
    order: list[str | None] = [*labels, None] if with_none else list(labels)
    index = {label: position for position, label in enumerate(order)}
    counts = [[0] * len(order) for _ in order]
    for truth, answer in zip(expected, predicted, strict=True):
        counts[index[truth]][index[answer]] += 1
    return ConfusionMatrix(labels=list(labels), counts=counts, none_of_these=with_none)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    """Single-label: of the most probable answer; multi-label: subset accuracy (exact match)."""
    num_examples: int
    per_label: dict[str, LabelMetrics]
    micro_f1: float | None = None
    macro_f1: float | None = None
    thresholds: dict[str, float] | None = None
    """Multi-label: each label's learned threshold."""
    abstention: Abstention | None = None
    """Single-label: the abstention threshold and its metrics."""
    confusion: ConfusionMatrix | None = None
    """Single-label: true label × answer counts (the most probable answer, as `accuracy`)."""


def evaluation_metadata(evaluation: Evaluation | None) -> dict[str, Any]:
    """What a version's metadata keeps of its evaluation (nulls, and 0 examples, without one); the
    learned thresholds are the caller's: a version has them with or without evaluation examples."""
    return {
        "accuracy": evaluation.accuracy if evaluation else None,
        "micro_f1": evaluation.micro_f1 if evaluation else None,
        "macro_f1": evaluation.macro_f1 if evaluation else None,
        "label_metrics": {label: scores.model_dump() for label, scores in evaluation.per_label.items()}
        if evaluation else None,
        "confusion_matrix": evaluation.confusion.model_dump() if evaluation and evaluation.confusion else None,
        "eval_num_examples": evaluation.num_examples if evaluation else 0,
    }


def evaluate(expected: Sequence[str | None], predicted: Sequence[str | None], labels: Sequence[str]) -> Evaluation:
    """Accuracy and each label's precision, recall and F1 (0 where undefined, as sklearn's zero_division=0).
    None (none of these) is an answer like a label, right where expected, but has no metrics of its own."""
    score = accuracy(expected, predicted)
    if score is None:
        raise ValueError("nothing to evaluate")
    # Every label's counts are in the confusion matrix: right answers on the diagonal, its answers down
    # its column, its texts along its row (the none-of-these row and column included in both).
    confusion = confusion_matrix(expected, predicted, labels)
    per_label = {label: LabelMetrics.of(true_positives=confusion.counts[i][i],
                                        predicted=sum(row[i] for row in confusion.counts),
                                        support=sum(confusion.counts[i]))
                 for i, label in enumerate(labels)}
    return Evaluation(score, len(expected), per_label, confusion=confusion)


FEW_EXAMPLES = 3
"""Fewer examples of a label than this and its predictions are little better than a guess."""
IMBALANCE_RATIO = 4


def data_warnings(label_counts: Mapping[str, int]) -> list[str]:
    """What the user should know about their examples before the job runs."""
    warnings = []
    few = sorted(label for label, count in label_counts.items() if count < FEW_EXAMPLES)
    if few:
        shown = ", ".join(f"{label!r} ({label_counts[label]})" for label in few[:10])
        more = f" and {len(few) - 10} more" if len(few) > 10 else ""
        warnings.append(f"examples: fewer than {FEW_EXAMPLES} examples of {shown}{more}; predictions of these "
                        "labels will be unreliable (8 or more per label is a good start)")
    most, least = max(label_counts.values(), default=0), min(label_counts.values(), default=0)
    if least and most / least >= IMBALANCE_RATIO:
        warnings.append(f"examples: labels are imbalanced ({most} examples of the most frequent, {least} of the "
                        "rarest); the head weighs labels by inverse frequency (balanced class weights) so rare "
                        "labels still get predicted, but more examples of them would help most")
    return warnings
