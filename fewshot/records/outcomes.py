"""What the job records and the model versions' metadata store of an evaluation, a promotion and a
scope: the pydantic types the trainers fill in and the API shows, and the few pure functions they
need (`fixed_evaluation`: which examples of a set a retrain evaluates on, which the API marks).

The logic that computes them stays with the trainers: trainers/holdout.py (evaluation),
trainers/promotion.py (whether a retrained version is served), trainers/scope.py (the scope's
threshold). pydantic and the standard library only.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Literal

from pydantic import BaseModel, Field

# Evaluation (trainers/holdout.py)

Target = str | None | tuple[str, ...]
"""What an example says of its text: its label, None (none of the labels), or its labels (multi-label)."""


def target_labels(target: Target) -> tuple[str, ...]:
    """The labels a target names."""
    return target if isinstance(target, tuple) else () if target is None else (target,)


DEFAULT_ABSTENTION_COVERAGE = 0.95


class Abstention(BaseModel):
    """A single-label version's "none of these": its learned threshold and what abstaining does on
    the evaluation examples. Stored in the version's metadata, shown by the API."""

    threshold: float | None = Field(default=None, description=(
        "The top probability below which the version answers `label: null` (with `abstain: true`, or always for "
        "a version trained with none-of-these examples): split-conformal, the lowest that keeps `coverage` of the "
        "in-scope evaluation texts. Null without in-scope evaluation examples."))
    coverage: float = Field(description="The share of in-scope texts the threshold is set to keep "
                                        "(abstention_coverage of the training request).")
    none_of_these_examples: int = Field(default=0, description=(
        "Training examples with `label: null`; when > 0 the version always abstains where they say so."))
    in_scope_kept: float | None = Field(default=None, description=(
        "Share of in-scope evaluation texts answered (not refused) when abstaining, each scored with a threshold "
        "fitted on the other half of the evaluation examples."))
    in_scope_accuracy: float | None = Field(default=None, description="Accuracy on the in-scope texts answered.")
    out_of_scope_examples: int = Field(default=0, description="Evaluation examples with `label: null`.")
    out_of_scope_refused: float | None = Field(default=None, description=(
        "Share of the `label: null` evaluation texts refused when abstaining; null without them."))


class LabelMetrics(BaseModel):
    """One label's scores on the evaluation examples: stored in the version's metadata, shown by the API."""

    precision: float
    recall: float
    f1: float
    support: int = Field(description="Evaluation examples of this label.")

    @classmethod
    def of(cls, true_positives: int, predicted: int, support: int) -> LabelMetrics:
        """From counts; 0 where undefined, as sklearn's zero_division=0."""
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4), support=support)


class ConfusionMatrix(BaseModel):
    """A single-label version's answers on its evaluation examples, by true label (rows) and answer
    (columns), both in `labels` order: counts[i][j] texts of labels[i] were answered labels[j]."""

    labels: list[str]
    counts: list[list[int]]
    none_of_these: bool = Field(default=False, description=(
        "One more row and column, last: texts of none of the labels (`label: null` evaluation examples) and "
        "answers of none (the version's none-of-these class)."))


# Promotion (trainers/promotion.py)

EVALUATION_SHARE = 5
"""One example in 5 of each label is evaluated on (as /v1/train's default hold-out of 0.2)."""
MIN_LABEL_EXAMPLES = 4
"""A label with fewer examples is never evaluated on (as /v1/train's hold-out)."""


def text_rank(text: str) -> int:
    """Where a text falls in the order that picks evaluation examples: a hash of the text alone."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def fixed_evaluation(examples: Sequence[tuple[str, Target]],
                     always_train: Collection[str] = ()) -> tuple[list[int], list[int]]:
    """Positions of the examples to train on and to evaluate on. Each label (multi-label: each
    example's rarest label; `label: null` examples as one more) with MIN_LABEL_EXAMPLES examples or
    more gives one in EVALUATION_SHARE of them, at least one: those whose texts rank lowest
    (`text_rank`). So a label is evaluated in proportion and keeps most of its examples to train on,
    and as a set grows its evaluation texts stay, but for a new text ranking lower or a larger share.
    Multi-label: an example stays in training when one of its labels would keep none there.
    Texts in `always_train` (a user's corrections: feedback) are never evaluated on: the next
    retrain learns from them, as feedback promises."""
    counts = Counter(label for _, target in examples for label in target_labels(target))
    strata: dict[str, list[int]] = {}
    for position, (text, target) in enumerate(examples):
        if text in always_train:
            continue
        labels = target_labels(target)
        key = min(labels, key=lambda label: (counts[label], label)) if labels else ""
        strata.setdefault(key, []).append(position)
    chosen: set[int] = set()
    for positions in strata.values():
        if len(positions) >= MIN_LABEL_EXAMPLES:
            ranked = sorted(positions, key=lambda position: text_rank(examples[position][0]))
            chosen.update(ranked[:max(1, len(positions) // EVALUATION_SHARE)])
    left_to_train = Counter(counts)
    evaluation = []
    for position in sorted(chosen, key=lambda position: text_rank(examples[position][0])):
        labels = target_labels(examples[position][1])
        if all(left_to_train[label] > 1 for label in labels):
            evaluation.append(position)
            left_to_train.subtract(labels)
    taken = set(evaluation)
    return [position for position in range(len(examples)) if position not in taken], sorted(evaluation)


class LabelChange(BaseModel):
    served_f1: float
    new_f1: float


Method = Literal["cross_fitted", "unseen_texts", "no_evidence", "always", "first_version"]


class Promotion(BaseModel):
    """Why a retrained version is served, or kept and not served."""

    promoted: bool
    reason: str
    rule: Literal["if_better", "always"] = "if_better"
    method: Method = Field(default="unseen_texts", description=(
        "What decided: cross_fitted (a head on the served version's body: both versions' training sets refitted "
        "on folds of the example set and scored on the texts each fold left out), unseen_texts (both versions "
        "answered the set's texts that neither was trained on), no_evidence (no text to compare on: served only "
        "when trained on everything the served version was, with every label of it), always (promote: always), "
        "first_version (nothing was served)."))
    served_version: str | None = Field(default=None, description="The version it was compared with.")
    metric: Literal["accuracy", "micro_f1"] = "accuracy"
    served_score: float | None = Field(default=None, description=(
        "The served version's accuracy on the compared texts (multi-label: the share of label decisions right)."))
    new_score: float | None = Field(default=None, description="The new version's, on the same texts.")
    evaluation_examples: int = Field(default=0, description="Texts both versions were compared on.")
    new_better: int = Field(default=0, description="Compared texts only the new version answered right.")
    served_better: int = Field(default=0, description="Compared texts only the served version answered right.")
    difference: float | None = Field(default=None, description=(
        "new_score - served_score: the mean over the compared texts of (new right) - (served right)."))
    standard_error: float | None = Field(default=None, description="Of `difference`, over the compared texts.")
    p_value: float | None = Field(default=None, description=(
        "One-sided exact McNemar test on the texts only one version answered right: the chance of the served "
        "version winning that many of them were both equally good. Held when below 0.05 (worse beyond doubt)."))
    labels: dict[str, LabelChange] = Field(default_factory=dict, description=(
        "Per label both versions know and the compared texts have: F1 of each."))


# Scope (trainers/scope.py)

Calibration = Literal["cross_fitted", "evaluation", "training"]


class Scope(BaseModel):
    """How a single-label version tells in-scope texts from foreign ones: stored in its metadata, shown by the API."""

    score: Literal["knn"] = Field(default="knn", description=(  # fewshot.serving.scope.KNN
        "knn: cosine similarity to the nearest training example, lowered where a `label: null` example is nearer "
        "(the difference is subtracted)."))
    threshold: float | None = Field(description=(
        "The scope score below which the version abstains (`abstain: true`, or always for a version trained with "
        "`label: null` examples): split-conformal, the lowest that keeps `coverage` of the calibration texts."))
    coverage: float = Field(description="The share of in-scope texts the threshold is set to keep.")
    calibration: Calibration = Field(description=(
        "Which in-scope texts set the threshold: `cross_fitted`, the training examples (each scored without its "
        "fold) and the evaluation ones, for a frozen body (`head`); `evaluation`, the evaluation examples, for a "
        "fine-tuned body (it saw the training ones); `training`, a fine-tuned body without evaluation examples: "
        "its coverage is optimistic."))
    calibration_examples: int = Field(description="In-scope texts the threshold was set on.")
    none_of_these_examples: int = Field(default=0, description="Training examples with `label: null` in the score.")
    in_scope_kept: float | None = Field(default=None, description=(
        "Share of the calibration texts kept, each by a threshold set on the other half of them."))
    out_of_scope_examples: int = Field(default=0, description="Evaluation examples with `label: null`.")
    out_of_scope_refused: float | None = Field(default=None, description=(
        "Share of the `label: null` evaluation texts whose scope score is below the threshold; null without them."))
