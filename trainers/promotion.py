"""Whether a retrained version replaces the one a model serves, and on which evaluation examples.

A retrain trains on the example set but for its fixed evaluation part (`fixed_evaluation`, in
fewshot/records/outcomes.py with the `Promotion` record: a share of each label picked by a hash of
each text, the same texts as far as the set allows), which the version's metrics are scored on.
Whether it replaces the served version is judged only on evidence neither version was trained on
(`decide`):
- a `head` retrain on the served version's body: both versions' training sets refitted on folds of
  the example set (`cross_fitted`): every text of the set is evidence;
- other retrains, and any with ENOUGH_UNSEEN_TEXTS: the evaluation texts the served version was not
  trained on either (`unseen`);
- none of either: served only when the new version was trained on a superset (`without_evidence`).
The served version's training examples are kept with it (TRAINING_EXAMPLES_FILE). numpy only: the
heads are fitted by the caller's function; no model, no HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fewshot.records.outcomes import LabelChange, Method, Promotion, Target, target_labels, text_rank
from trainers.holdout import evaluate


@dataclass(frozen=True)
class PairedScores:
    """Both versions' answers on the same texts: for each, whether each was right and the probability
    each gave the text's label (multi-label: the mean, over the labels, of the probability given to
    the right decision, present or absent)."""

    method: Method
    targets: list[Target]
    served_right: np.ndarray
    new_right: np.ndarray
    served_probability: np.ndarray
    new_probability: np.ndarray
    served_answers: list[Target]
    new_answers: list[Target]

    def __len__(self) -> int:
        return len(self.targets)


class Head(Protocol):
    """What the cross-fitting refits: a scikit-learn classifier (the service's logistic regression)."""

    classes_: np.ndarray

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray: ...


Fit = Callable[[np.ndarray, list[str]], Head]
"""Fit a single-label head on embeddings and their labels (NONE for `label: null`)."""
Embed = Callable[[Sequence[str]], np.ndarray]

NONE = "\x00none of these"
"""A `label: null` target as a class of the refitted heads (no label may hold a NUL)."""
FOLDS = 5
"""Cross-fitting folds: each text is answered by heads refitted on the other four fifths."""
ALPHA = 0.05
"""A retrain is held when a one-sided exact McNemar test says worse at this level: bench/promotion.py
measured the rules (docs/benchmarks.md, "Promotion")."""
ENOUGH_UNSEEN_TEXTS = 200
"""With this many evaluation texts that neither version was trained on, a `head` retrain compares the
versions themselves on them (one prediction each) instead of cross-fitting, which refits ten heads:
a balanced logistic regression on 8,000 MiniLM embeddings of 77 labels took 10-20 s to fit here."""
LABEL_GUARD_TEXTS = 20
"""A label both versions know is checked on its own only with this many compared texts or more:
below it one text moves its accuracy by 5 points or more, which is noise, not evidence."""
LABEL_ALPHA = 0.001
"""A label counts as worse only at this level, so that checking tens of labels rarely finds one by chance."""


def comparable(examples: Sequence[tuple[str, Target]], served_trained: Sequence[tuple[str, Target]]
               ) -> list[tuple[str, Target]]:
    """The set's examples both versions can be judged on: all but those the served version was trained
    on under another label. A relabelled text is the user's word against the served version's training
    data: the evidence the served version learned from, not a test of it."""
    trained = dict(served_trained)
    return [(text, target) for text, target in examples if text not in trained or trained[text] == target]


def unseen(evaluation: Sequence[tuple[str, Target]], served_trained: Sequence[tuple[str, Target]]
           ) -> list[tuple[str, Target]]:
    """The new version's evaluation examples that the served version was not trained on either."""
    trained = {text for text, _ in served_trained}
    return [(text, target) for text, target in evaluation if text not in trained]


def fold_of(text: str) -> int:
    return text_rank(text) % FOLDS


def _class(target: Target) -> str:
    if isinstance(target, tuple):
        raise ValueError("cross-fitting compares single-label versions")
    return NONE if target is None else target


def _fold_answers(fit: Fit, vectors: np.ndarray, classes: list[str], queries: np.ndarray,
                  targets: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Right or not, the probability of the target, and the answer of a head fitted on (vectors,
    classes) for each query; a head of one class answers it always (logistic regression needs two)."""
    if len(set(classes)) == 1:
        answers = [classes[0]] * len(queries)
        probability = np.array([1.0 if target == classes[0] else 0.0 for target in targets])
    else:
        head = fit(vectors, classes)
        known = [str(label) for label in head.classes_]
        probabilities = np.asarray(head.predict_proba(queries))
        answers = [known[i] for i in probabilities.argmax(axis=1)]
        column = {label: i for i, label in enumerate(known)}
        probability = np.array([probabilities[row, column[target]] if target in column else 0.0
                                for row, target in enumerate(targets)])
    right = np.array([answer == target for answer, target in zip(answers, targets, strict=True)])
    return right, probability, answers


def cross_fitted(embed: Embed, served_trained: Sequence[tuple[str, Target]],
                 new_trained: Sequence[tuple[str, Target]], examples: Sequence[tuple[str, Target]],
                 fit: Fit) -> PairedScores:
    """Both versions' training sets, each refitted as a head on one body without the fold a text
    falls in, answer every comparable text of the example set (`comparable`): what a `head` retrain
    compares. The served version's own head was fitted on all of its training set and the new one on
    all of its own: each refit lacks a fifth of that, alike for both, so the comparison is of what
    each set teaches, on texts neither refit saw, with every text of the set as evidence (a few
    texts per label are enough to tell then; a fixed evaluation of one text per label is not)."""
    judged = comparable(examples, served_trained)
    texts = list(dict.fromkeys([text for text, _ in [*judged, *served_trained, *new_trained]]))
    position = {text: row for row, text in enumerate(texts)}
    vectors = embed(texts)
    fold_of_text = {text: fold_of(text) for text in texts}  # a hash each, read by every fold's refits
    targets = [_class(target) for _, target in judged]
    folds = np.array([fold_of_text[text] for text, _ in judged])
    n = len(judged)
    served_right, new_right = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    served_probability, new_probability = np.zeros(n), np.zeros(n)
    served_answers: list[str] = [""] * n
    new_answers: list[str] = [""] * n
    for fold in sorted(set(folds.tolist())):
        rows = np.flatnonzero(folds == fold)
        queries = vectors[[position[judged[row][0]] for row in rows]]
        wanted = [targets[row] for row in rows]
        for trained, right, probability, answers in ((served_trained, served_right, served_probability,
                                                      served_answers),
                                                     (new_trained, new_right, new_probability, new_answers)):
            kept = [(text, target) for text, target in trained if fold_of_text[text] != fold]
            if not kept:  # a whole training set in one fold: fitted on nothing, it answers nothing right
                right[rows], probability[rows] = False, 0.0
                continue
            fold_right, fold_probability, fold_answers = _fold_answers(
                fit, vectors[[position[text] for text, _ in kept]], [_class(target) for _, target in kept],
                queries, wanted)
            right[rows], probability[rows] = fold_right, fold_probability
            for row, answer in zip(rows, fold_answers, strict=True):
                answers[row] = answer
    as_target: Callable[[str], Target] = lambda label: None if label == NONE else label  # noqa: E731
    return PairedScores("cross_fitted", [target for _, target in judged], served_right, new_right,
                        served_probability, new_probability, [as_target(a) for a in served_answers],
                        [as_target(a) for a in new_answers])


def _label_changes(scores: PairedScores, served_labels: Sequence[str], multi_label: bool) -> dict[str, LabelChange]:
    if multi_label:
        return {}
    every = sorted({label for target in [*scores.targets, *scores.served_answers, *scores.new_answers]
                    for label in target_labels(target)})
    served = evaluate(scores.targets, scores.served_answers, every)
    new = evaluate(scores.targets, scores.new_answers, every)
    return {label: LabelChange(served_f1=served.per_label[label].f1, new_f1=new.per_label[label].f1)
            for label in every if label in served_labels and new.per_label[label].support > 0}


def mcnemar_p(served_better: int, new_better: int) -> float:
    """One-sided exact McNemar test: the chance of the served version winning `served_better` or more
    of the texts where only one of the two is right, were both equally good (a fair coin per text)."""
    discordant = served_better + new_better
    return sum(math.comb(discordant, k) for k in range(served_better, discordant + 1)) / 2 ** discordant


def decide(scores: PairedScores, served_labels: Sequence[str], served_version: str, multi_label: bool) -> Promotion:
    """Served unless the evidence says worse beyond doubt: on the compared texts where only one of the
    two versions is right, the served one wins more often than a fair coin would (exact one-sided
    McNemar test, p < ALPHA); or so does it on a label both know with LABEL_GUARD_TEXTS compared
    texts or more (p < LABEL_ALPHA: many labels are checked). At the sizes users have (tens of
    texts) "worse by a text or two" is noise: bench/promotion.py measured that this rule serves
    retrains truly better by 2 points where "held if lower at all" held many of them on trec6, and
    the probability of the right label (less noisy, but sharper with every example added) served
    worse ones as readily as better ones. Labels new to this version count against the served one,
    which never answers them."""
    n = len(scores)
    difference = scores.new_right.astype(float) - scores.served_right.astype(float)
    mean = float(difference.mean())
    error = float(difference.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    new_better = int(np.sum(scores.new_right & ~scores.served_right))
    served_better = int(np.sum(scores.served_right & ~scores.new_right))
    p_value = mcnemar_p(served_better, new_better)
    metric: Literal["accuracy", "micro_f1"] = "micro_f1" if multi_label else "accuracy"
    common = {"method": scores.method, "served_version": served_version, "metric": metric,
              "served_score": round(float(scores.served_right.mean()), 4),
              "new_score": round(float(scores.new_right.mean()), 4), "evaluation_examples": n,
              "new_better": new_better, "served_better": served_better, "difference": round(mean, 4),
              "standard_error": round(error, 4), "p_value": round(p_value, 4),
              "labels": _label_changes(scores, served_labels, multi_label)}
    where = {"cross_fitted": f"{n} texts of the set, each answered by both training sets refitted without it",
             "unseen_texts": f"the {n} evaluation texts neither version was trained on"}[scores.method]
    described = "exact match" if multi_label else "accuracy"
    summary = (f"{described} {common['served_score']:.3f} -> {common['new_score']:.3f} ({new_better} texts right "
               f"only by the new version, {served_better} only by the served one, p = {p_value:.3f}) on {where}")
    if p_value < ALPHA:
        return Promotion(promoted=False, reason=f"worse beyond doubt: {summary}", **common)
    worse = [label for label in served_labels if _label_worse(scores, label)]
    if worse:
        return Promotion(promoted=False, reason=f"worse on {', '.join(worse[:5])} ({LABEL_GUARD_TEXTS}+ texts each, "
                         f"p < {LABEL_ALPHA:g}), though {summary}", **common)
    return Promotion(promoted=True, reason=f"not worse beyond doubt: {summary}", **common)


def _label_worse(scores: PairedScores, label: str) -> bool:
    rows = np.array([label in target_labels(target) for target in scores.targets], dtype=bool)
    if rows.sum() < LABEL_GUARD_TEXTS:
        return False
    new, served = scores.new_right[rows], scores.served_right[rows]
    return mcnemar_p(int(np.sum(served & ~new)), int(np.sum(new & ~served))) < LABEL_ALPHA


def without_evidence(served_trained: Sequence[tuple[str, Target]] | None, new_trained: Sequence[tuple[str, Target]],
                     served_labels: Sequence[str], new_labels: Sequence[str], served_version: str) -> Promotion:
    """No text to compare on: served when the new version was trained on everything the served one
    was (same labels) and knows each of its labels; otherwise kept, with the reason."""
    common = {"method": "no_evidence", "served_version": served_version}
    if served_trained is None:
        return Promotion(promoted=False, reason="no text to compare the versions on, and the served version's training "
                         "examples are unknown (an import, or made before they were kept): kept, not served; "
                         "retrain with promote: always to serve it", **common)
    dropped = sorted(set(served_labels) - set(new_labels))
    if dropped:
        return Promotion(promoted=False, reason=f"no text to compare the versions on, and it no longer knows "
                         f"{', '.join(dropped[:5])}: kept, not served", **common)
    new = set(new_trained)
    missing = [text for text, target in served_trained if (text, target) not in new]
    if missing:
        return Promotion(promoted=False, reason=f"no text to compare the versions on, and {len(missing)} of the served "
                         "version's training examples are gone or relabelled: kept, not served", **common)
    return Promotion(promoted=True, reason="no text to compare the versions on; trained on every example the served "
                     "version was, and more: served", **common)
