"""A single-label version's scope: its training embeddings and the out-of-scope score's threshold.

The threshold is split-conformal at `abstention_coverage` (trainers/thresholds.py), on the scores of
in-scope texts that are as new to the version as a text sent to it later — without holding more of
a few-shot set out of training:
- a frozen body (`head`) never saw any example: every in-scope training example is scored against
  the other folds' examples (5 stratified folds, cross-fitted), and every in-scope evaluation
  example against all of them;
- a fine-tuned body (`setfit`) was trained to pull its training examples together, so their
  cross-fitted scores flatter it: measured on Banking77-OOS (bench/results/out-of-scope-*), a
  threshold from them kept 0.92–0.945 of new in-scope texts instead of 0.95. Only the evaluation
  examples, which the body never saw, calibrate it; without any, the training examples do and the
  version says so (`calibration: training`, the coverage is then optimistic).

`label: null` examples are never calibration texts: they shape the score (fewshot/serving/scope.py)
and, held out, measure what the threshold refuses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewshot.learning.audit import fold_of
from fewshot.records.outcomes import Calibration, Scope
from fewshot.serving.scope import ScopeIndex
from trainers.thresholds import conformal_threshold, cross_fitted

FOLDS = 5
def fit_scope(train_vectors: np.ndarray, train_labels: Sequence[str | None], eval_vectors: np.ndarray,
              eval_labels: Sequence[str | None], coverage: float, body_saw_training: bool) -> tuple[ScopeIndex, Scope]:
    """The version's scope index (its training embeddings) and its calibrated threshold (module docstring)."""
    labelled = np.array([label is not None for label in train_labels], dtype=bool)
    index = ScopeIndex.of(train_vectors[labelled], train_vectors[~labelled])
    eval_in_scope = np.array([label is not None for label in eval_labels], dtype=bool)
    evaluation_scores = index.scores(eval_vectors[eval_in_scope]) if eval_in_scope.any() else np.empty(0)
    if body_saw_training and len(evaluation_scores):
        calibration: Calibration = "evaluation"
        scores = evaluation_scores
    else:
        calibration = "training" if body_saw_training else "cross_fitted"
        scores = np.r_[_cross_fitted_training_scores(train_vectors, train_labels),
                       [] if body_saw_training else evaluation_scores]
    threshold = conformal_threshold(scores, coverage)
    kept = np.ones(len(scores), dtype=bool)

    def apply(fitted: float | None, rows: np.ndarray) -> None:
        if fitted is not None:
            kept[rows] = scores[rows] >= fitted

    # the two halves interleaved in a shuffled order: `scores` lists the training examples label by label
    order = np.random.default_rng(0).permutation(len(scores))
    cross_fitted(len(scores), lambda rows: conformal_threshold(scores[order[rows]], coverage),
                 lambda fitted, rows: apply(fitted, order[rows]))
    foreign = ~eval_in_scope
    refused = None
    if foreign.any() and threshold is not None:
        refused = round(float(np.mean(index.scores(eval_vectors[foreign]) < threshold)), 4)
    return index, Scope(threshold=threshold, coverage=coverage, calibration=calibration,
                        calibration_examples=len(scores), none_of_these_examples=int((~labelled).sum()),
                        in_scope_kept=round(float(np.mean(kept)), 4) if len(scores) else None,
                        out_of_scope_examples=int(foreign.sum()), out_of_scope_refused=refused)


def _cross_fitted_training_scores(vectors: np.ndarray, labels: Sequence[str | None]) -> np.ndarray:
    """Each in-scope training example's score against the examples of the other folds (label: null ones included)."""
    folds = fold_of(len(labels), ["" if label is None else label for label in labels], folds=FOLDS)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    scores = []
    for fold in range(FOLDS):
        held_out, rest = (folds == fold) & labelled, folds != fold
        if not held_out.any():
            continue
        index = ScopeIndex.of(vectors[rest & labelled], vectors[rest & ~labelled])
        scores.append(index.scores(vectors[held_out]))
    return np.concatenate(scores) if scores else np.empty(0)
