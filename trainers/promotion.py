"""Whether a retrained version replaces the one a model serves, and on which evaluation examples.

Both versions are scored on the same examples: the example set's fixed evaluation part
(`fixed_evaluation`), a share of each label picked by a hash of each text, so that every retrain of
a model evaluates on the same texts as far as its set allows, and the new version is never judged
on texts it was trained on. The new version replaces the served one unless it is worse overall or
on a label both know (`decide`). Pure Python: no model, no HTTP.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from trainers.holdout import Evaluation, Target, target_labels

EVALUATION_SHARE = 5
"""One example in 5 of each label is evaluated on (as /v1/train's default hold-out of 0.2)."""
MIN_LABEL_EXAMPLES = 4
"""A label with fewer examples is never evaluated on (as /v1/train's hold-out)."""
LABEL_F1_TOLERANCE = 0.05
"""How much a label's F1 may drop before the new version counts as worse on it: a few evaluation
texts per label make F1 move in steps of 0.1-0.3, and one text more or less right is noise."""


def text_rank(text: str) -> int:
    """Where a text falls in the order that picks evaluation examples: a hash of the text alone."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def fixed_evaluation(examples: Sequence[tuple[str, Target]]) -> tuple[list[int], list[int]]:
    """Positions of the examples to train on and to evaluate on. Each label (multi-label: each
    example's rarest label; `label: null` examples as one more) with MIN_LABEL_EXAMPLES examples or
    more gives one in EVALUATION_SHARE of them, at least one: those whose texts rank lowest
    (`text_rank`). So a label is evaluated in proportion and keeps most of its examples to train on,
    and as a set grows its evaluation texts stay, but for a new text ranking lower or a larger share.
    Multi-label: an example stays in training when one of its labels would keep none there."""
    counts = Counter(label for _, target in examples for label in target_labels(target))
    strata: dict[str, list[int]] = {}
    for position, (_, target) in enumerate(examples):
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


class Promotion(BaseModel):
    """Why a retrained version is served, or kept and not served."""

    promoted: bool
    reason: str
    rule: Literal["if_better", "always"] = "if_better"
    served_version: str | None = Field(default=None, description="The version it was compared with.")
    metric: Literal["accuracy", "micro_f1"] = "accuracy"
    served_score: float | None = None
    new_score: float | None = None
    labels: dict[str, LabelChange] = Field(default_factory=dict, description=(
        "Per label both versions know and the evaluation examples have: F1 of each."))
    evaluation_examples: int = 0


def decide(served: Evaluation, new: Evaluation, served_labels: Sequence[str], served_version: str,
           multi_label: bool) -> Promotion:
    """Served unless worse: a lower overall score (accuracy; micro F1 for multi-label), or a label both
    versions know whose F1 drops by more than LABEL_F1_TOLERANCE. Labels new to this version cannot
    be worse (the served version never answers them)."""
    metric: Literal["accuracy", "micro_f1"] = "micro_f1" if multi_label else "accuracy"
    served_score = (served.micro_f1 if multi_label else served.accuracy) or 0.0
    new_score = (new.micro_f1 if multi_label else new.accuracy) or 0.0
    shared = [label for label in served_labels
              if label in new.per_label and label in served.per_label and new.per_label[label].support > 0]
    changes = {label: LabelChange(served_f1=round(served.per_label[label].f1, 4),
                                  new_f1=round(new.per_label[label].f1, 4)) for label in shared}
    worse_labels = [label for label, change in changes.items()
                    if change.new_f1 < change.served_f1 - LABEL_F1_TOLERANCE]
    common = {"served_version": served_version, "metric": metric, "served_score": round(served_score, 4),
              "new_score": round(new_score, 4), "labels": changes, "evaluation_examples": new.num_examples}
    if new_score < served_score:
        return Promotion(promoted=False, reason=f"{metric} {new_score:.3f} is below the served version's "
                         f"{served_score:.3f} on the same {new.num_examples} evaluation examples", **common)
    if worse_labels:
        named = ", ".join(f"{label} {changes[label].served_f1:.2f} -> {changes[label].new_f1:.2f}"
                          for label in worse_labels[:5])
        return Promotion(promoted=False, reason=f"F1 dropped by more than {LABEL_F1_TOLERANCE} on: {named}", **common)
    return Promotion(promoted=True, reason=f"{metric} {new_score:.3f} against the served version's "
                     f"{served_score:.3f}, and no label worse by more than {LABEL_F1_TOLERANCE} F1", **common)
