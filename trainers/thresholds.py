"""Thresholds learned on the evaluation examples, and the metrics measured with them.

- Multi-label: per label, the probability threshold that maximises that label's F1, shrunk toward
  the threshold that maximises F1 over every label's decisions at once (micro F1) in proportion
  to how few positive examples the label has: (n × its own + SHRINKAGE × shared) / (n + SHRINKAGE).
  A few-shot hold-out has one or two positives per label, and a threshold set on two texts is
  noise: on GoEmotions (28 labels, 8 texts per label, a 20% hold-out: about 2 positives per
  label; truth 1.2 labels per text), per-label thresholds alone predicted 5.6 labels per text,
  micro F1 0.162 (head) and 0.195 (fine-tuned) on the test texts; shrunk, 1.8 and 2.5 labels per
  text, 0.217 and 0.255 (bench/results/label-tasks-20261202T023029Z). With many positives a
  label's own threshold dominates; with none, the shared one is used.
- Single-label abstention: the lowest top probability that keeps a chosen share (coverage) of the
  in-scope evaluation texts, as split-conformal prediction sets it. With n in-scope scores, the
  threshold is the k-th lowest, k = n + 1 - ceil((n + 1) × coverage); for a new in-scope text
  exchangeable with them, P(kept) >= coverage. Below about 1 / (1 - coverage) examples no score
  can promise that, and the lowest is used (k = 1: every evaluation text is kept).

The version stores thresholds fitted on all its evaluation examples. Its metrics are measured
with thresholds fitted on the other half of them (two folds, each scored with the other's
thresholds), so no example is scored by a threshold it helped set: scoring them with their own
thresholds would report F1 and coverage that new texts do not get.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from fewshot.records.outcomes import Abstention, LabelMetrics
from fewshot.serving.decisions import DEFAULT_THRESHOLD, Column, multi_label_sets, single_label_answers
from trainers.holdout import Evaluation, evaluate

Fitted = TypeVar("Fitted")


def f1_threshold(probabilities: np.ndarray, positives: np.ndarray) -> float:
    """The threshold on one label's probabilities that maximises its F1 on these examples: halfway
    between the lowest probability it accepts and the highest it rejects. DEFAULT_THRESHOLD
    without positive examples (nothing to learn from)."""
    if not positives.any():
        return DEFAULT_THRESHOLD
    order = np.argsort(-probabilities, kind="stable")
    ranked, relevant = probabilities[order], positives[order].astype(np.int64)
    true_positives = np.cumsum(relevant)
    f1 = 2 * true_positives / (np.arange(1, len(ranked) + 1) + relevant.sum())
    # A cut can only fall between two different probabilities.
    cuttable = np.r_[ranked[:-1] > ranked[1:], True]
    best = int(np.argmax(np.where(cuttable, f1, -1.0)))  # ties: the higher threshold
    below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
    return float((ranked[best] + below) / 2)


SHRINKAGE = 3
"""Positive examples a label's own threshold needs to weigh as much as the shared one."""


def f1_thresholds(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """One threshold per column, shrunk toward the shared one (module docstring); `targets` is the
    0/1 matrix of true labels."""
    targets = targets.astype(bool)
    shared = f1_threshold(probabilities.ravel(), targets.ravel())  # DEFAULT_THRESHOLD without any positive
    own = np.asarray([f1_threshold(probabilities[:, j], targets[:, j]) for j in range(probabilities.shape[1])])
    positives = targets.sum(axis=0)
    return (positives * own + SHRINKAGE * shared) / (positives + SHRINKAGE)


def conformal_threshold(in_scope_scores: np.ndarray, coverage: float) -> float | None:
    """The abstention threshold keeping `coverage` of in-scope texts (module docstring); None without any."""
    n = len(in_scope_scores)
    if n == 0:
        return None
    k = max(1, n + 1 - math.ceil(round((n + 1) * coverage, 9)))
    return float(np.sort(in_scope_scores)[k - 1])


def cross_fitted(n: int, fit: Callable[[np.ndarray], Fitted], apply: Callable[[Fitted, np.ndarray], None]) -> None:
    """Two folds (alternate examples): `fit` on one fold's indices, `apply` to the other's."""
    indices = np.arange(n)
    folds = [indices[0::2], indices[1::2]]
    for fitted_on, applied_to in ((folds[0], folds[1]), (folds[1], folds[0])):
        if len(applied_to):
            apply(fit(fitted_on), applied_to)


def evaluate_multi_label(probabilities: np.ndarray, columns: Sequence[str], expected: Sequence[Sequence[str]],
                         labels: Sequence[str]) -> Evaluation:
    """Thresholds (fitted on every example), subset accuracy, micro/macro F1 and per-label metrics
    (measured with cross-fitted thresholds)."""
    targets = np.asarray([[column in wanted for column in columns] for wanted in expected], dtype=bool)
    thresholds = f1_thresholds(probabilities, targets)
    predicted: list[list[str]] = [[] for _ in expected]

    def apply(fitted: np.ndarray, rows: np.ndarray) -> None:
        for row, chosen in zip(rows, multi_label_sets(probabilities[rows], columns, fitted), strict=True):
            predicted[row] = chosen

    cross_fitted(len(expected), lambda rows: f1_thresholds(probabilities[rows], targets[rows]), apply)
    return multi_label_metrics(expected, predicted, labels,
                               thresholds={column: float(t) for column, t in zip(columns, thresholds, strict=True)})


def multi_label_metrics(expected: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], labels: Sequence[str],
                        thresholds: dict[str, float] | None = None) -> Evaluation:
    """Subset accuracy (exact match), micro F1 (over every label decision), macro F1 (mean over the
    labels with evaluation examples) and each label's precision/recall/F1/support."""
    per_label = {}
    totals = np.zeros(3)  # true positives, predicted, actual
    supported = []  # the F1 of each label with evaluation examples, unrounded
    for label in labels:
        true_positives = sum(label in e and label in p for e, p in zip(expected, predicted, strict=True))
        predicted_as = sum(label in p for p in predicted)
        support = sum(label in e for e in expected)
        totals += (true_positives, predicted_as, support)
        per_label[label] = LabelMetrics.of(true_positives, predicted_as, support)
        if support:
            supported.append(2 * true_positives / (predicted_as + support))
    micro = 2 * totals[0] / (totals[1] + totals[2]) if totals[1] + totals[2] else 0.0
    exact = sum(set(e) == set(p) for e, p in zip(expected, predicted, strict=True)) / len(expected)
    return Evaluation(accuracy=exact, num_examples=len(expected), per_label=per_label, micro_f1=round(float(micro), 4),
                      macro_f1=round(float(np.mean(supported)), 4) if supported else None, thresholds=thresholds)


def evaluate_single_label(probabilities: np.ndarray, columns: Sequence[Column], expected: Sequence[str | None],
                          labels: Sequence[str], coverage: float, none_of_these_examples: int) -> Evaluation:
    """Accuracy of the most probable answer (a None expected label: the text is none of these) and
    per-label metrics, as before abstention; then the abstention threshold (fitted on every in-scope
    example) and what abstaining does (cross-fitted): in-scope texts kept and their accuracy, and
    "none of these" texts refused."""
    plain = single_label_answers(probabilities, columns, None)
    evaluation = evaluate(list(expected), plain.labels, labels)
    in_scope = np.asarray([label is not None for label in expected])
    scores = np.asarray(plain.scores)
    answered: list[str | None] = list(plain.labels)

    def apply(threshold: float | None, rows: np.ndarray) -> None:
        decided = single_label_answers(probabilities[rows], columns, threshold)
        for row, label in zip(rows, decided.labels, strict=True):
            answered[row] = label

    cross_fitted(len(expected), lambda rows: conformal_threshold(scores[rows][in_scope[rows]], coverage), apply)
    kept = [i for i in np.flatnonzero(in_scope) if answered[i] is not None]
    out_of_scope = np.flatnonzero(~in_scope)
    abstention = Abstention(
        threshold=conformal_threshold(scores[in_scope], coverage), coverage=coverage,
        none_of_these_examples=none_of_these_examples,
        in_scope_kept=_share(len(kept), int(in_scope.sum())),
        in_scope_accuracy=_share(sum(answered[i] == expected[i] for i in kept), len(kept)),
        out_of_scope_examples=len(out_of_scope),
        out_of_scope_refused=_share(sum(answered[i] is None for i in out_of_scope), len(out_of_scope)))
    return dataclasses.replace(evaluation, abstention=abstention)


def untested_abstention(coverage: float, none_of_these_examples: int) -> Abstention:
    """A single-label version without evaluation examples: nothing to learn a threshold on."""
    return Abstention(threshold=None, coverage=coverage, none_of_these_examples=none_of_these_examples)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
