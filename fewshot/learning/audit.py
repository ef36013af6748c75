"""Which examples of a set look mislabelled, from out-of-fold probabilities (confident learning).

Every example is scored by a head that never saw it: the set is split into folds, and a head
fitted on the other folds' embeddings gives its probabilities (`out_of_fold_probabilities`), the
way cleanlab finds label errors (Northcutt et al., "Confident Learning", 2021). A label's
*typical* probability is the mean out-of-fold probability its own examples get; an example is a
suspect when its given label's probability falls below that label's typical one and another label
is more probable than it. (Confident learning's stricter rule, that the other label also reach its
own typical probability, missed clear cases: a head fitted on a few examples per label gives soft
probabilities, and a mislabelled text's true label often lands just under its typical one.) The
score is that other label's probability minus the given one's (the normalized margin), in (0, 1]:
the higher, the more suspect. Near-duplicate texts with different labels are suspects too, and
labels too thin to be scored are reported rather than guessed at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fewshot.learning.selection import normalized

NONE_OF_THESE = ""
"""The class of `label: null` examples (none of the labels) while auditing."""

FOLDS = 5
MIN_LABEL_EXAMPLES = 3
"""A label with fewer examples cannot be audited under cross-validation (a fold would leave it with
one or none to learn from): it is reported as too thin instead."""

NEAR_DUPLICATE_SIMILARITY = 0.95
"""Cosine similarity above which two differently labelled texts say the same thing (MiniLM)."""

Why = Literal["disagrees", "near_duplicate"]


@dataclass(frozen=True)
class Suspect:
    index: int
    """Row of the set."""
    suggested: str | tuple[str, ...]
    """The label the evidence points to (NONE_OF_THESE: none of the labels); multi-label sets: the
    label set it points to."""
    score: float
    why: Why
    other_index: int | None = None
    """near_duplicate: the row it conflicts with."""


def fold_of(count: int, labels: Sequence[str], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each row's fold: every label spread evenly over the folds (stratified), in a fixed order."""
    generator = np.random.default_rng(seed)
    assignment = np.empty(count, dtype=np.int64)
    rows_by_label: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        rows_by_label.setdefault(label, []).append(row)
    offset = 0
    for label in sorted(rows_by_label):
        rows = np.array(rows_by_label[label])
        generator.shuffle(rows)
        assignment[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)  # labels start on different folds: small ones don't all share fold 0
    return assignment


RIDGE = 1.0
"""L2 penalty of the audit's least-squares head (on unit-length embeddings and a bias column)."""


def least_squares_head(points: np.ndarray, targets: np.ndarray, classes: int, ridge: float = RIDGE) -> np.ndarray:
    """Weights (features + bias → one score per class) of a class-balanced ridge regression onto
    one-hot targets: closed form, one (d+1)² solve whatever the number of examples and labels."""
    features = np.hstack([points, np.ones((len(points), 1))])
    counts = np.bincount(targets, minlength=classes).astype(np.float64)
    weights = len(targets) / (np.count_nonzero(counts) * counts[targets])  # `class_weight: balanced`, as the heads
    weighted = features * weights[:, None]
    gram = features.T @ weighted + ridge * np.eye(features.shape[1])
    return np.linalg.solve(gram, weighted.T @ np.eye(classes)[targets])


Head = Callable[[np.ndarray, np.ndarray, int, np.ndarray], np.ndarray]
"""(training rows, their class indices, how many classes, rows to score) → each scored row's
probability of every class (0 for a class absent from the training rows)."""


def least_squares_probabilities(points: np.ndarray, targets: np.ndarray, classes: int,
                                queries: np.ndarray) -> np.ndarray:
    """`least_squares_head`'s scores, clipped at 0 and scaled to sum to 1 per row."""
    scores = np.hstack([queries, np.ones((len(queries), 1))]) @ least_squares_head(points, targets, classes)
    scores[:, np.bincount(targets, minlength=classes) == 0] = 0.0
    scores = np.clip(scores, 0.0, None) + 1e-9
    return scores / scores.sum(axis=1, keepdims=True)


def out_of_fold_probabilities(embeddings: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                              folds: int = FOLDS, head: Head = least_squares_probabilities) -> np.ndarray:
    """Probabilities of `classes` for each row from a head fitted without its fold.

    The head is least squares, not the logistic regression a version serves: on banking77's 10,003
    training texts (77 labels, MiniLM) five logistic-regression fits took 32 s on 2 CPU cores, the
    closed form 1.8 s (bench/active_learning.py, same run, which passes the logistic one as `head`).
    It found slightly fewer flipped labels (0.94 of them in the top 2× suspects against 0.96,
    banking77 8-shot), and an audit answered in seconds is one that gets used."""
    points = normalized(embeddings).astype(np.float64)
    targets = np.array([classes.index(label) for label in labels])
    assignment = fold_of(len(labels), labels, folds)
    probabilities = np.zeros((len(labels), len(classes)), dtype=np.float64)
    for fold in range(folds):
        held_out = assignment == fold
        if held_out.any():
            probabilities[held_out] = head(points[~held_out], targets[~held_out], len(classes), points[held_out])
    return probabilities


def disagreements(probabilities: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                  auditable: set[str]) -> list[Suspect]:
    """Confident-learning suspects among rows whose label is in `auditable`, most suspect first."""
    given = np.array([classes.index(label) for label in labels])
    typical = np.array([probabilities[given == c, c].mean() if (given == c).any() else 1.0
                        for c in range(len(classes))])
    found: list[Suspect] = []
    for row, label in enumerate(labels):
        if label not in auditable:
            continue
        own = probabilities[row, given[row]]
        if own >= typical[given[row]]:
            continue
        others = probabilities[row].copy()
        others[given[row]] = -np.inf
        best = int(np.argmax(others))
        if others[best] <= own:
            continue
        found.append(Suspect(index=row, suggested=classes[best], score=float(others[best] - own), why="disagrees"))
    return sorted(found, key=lambda suspect: -suspect.score)


def near_duplicates(embeddings: np.ndarray, labels: Sequence[str],
                    similarity: float = NEAR_DUPLICATE_SIMILARITY) -> list[Suspect]:
    """Pairs of texts that say the same thing with different labels: each a suspect, suggested the
    other's label, scored by how alike they are."""
    points = normalized(embeddings)
    found: list[Suspect] = []
    for start in range(0, len(points), 1024):
        block = points[start:start + 1024] @ points.T
        for offset, row in enumerate(range(start, min(start + 1024, len(points)))):
            block[offset, : row + 1] = -1.0  # each pair once
            for found_other in np.flatnonzero(block[offset] >= similarity):
                other = int(found_other)
                if labels[row] != labels[other]:
                    alike = float(block[offset, other])
                    found.append(Suspect(row, labels[other], alike, "near_duplicate", other))
                    found.append(Suspect(other, labels[row], alike, "near_duplicate", row))
    return sorted(found, key=lambda suspect: -suspect.score)


def thin_labels(labels: Sequence[str], minimum: int = MIN_LABEL_EXAMPLES) -> dict[str, int]:
    """Labels with fewer than `minimum` examples, and how many they have."""
    return {label: count for label, count in sorted(Counter(labels).items()) if count < minimum}


@dataclass(frozen=True)
class Audit:
    suspects: list[Suspect]
    """Disagreements first by score, then near-duplicate conflicts not already among them."""
    thin: dict[str, int]


def audit(embeddings: np.ndarray, labels: Sequence[str], head: Head = least_squares_probabilities) -> Audit:
    """Suspect labels of a single-label set (NONE_OF_THESE for `label: null` examples). `head`: another
    head for the out-of-fold probabilities (the benchmark's logistic-regression baseline)."""
    thin = thin_labels(labels)
    classes = sorted(set(labels))
    suspects: list[Suspect] = []
    if len(classes) - len(thin) >= 2:
        probabilities = out_of_fold_probabilities(embeddings, labels, classes, head=head)
        suspects = disagreements(probabilities, labels, classes, auditable=set(classes) - set(thin))
    listed = {suspect.index for suspect in suspects}
    for suspect in near_duplicates(embeddings, labels):
        if suspect.index not in listed:
            suspects.append(suspect)
            listed.add(suspect.index)
    return Audit(suspects=suspects, thin=thin)


def audit_multi_label(embeddings: np.ndarray, label_sets: Sequence[Sequence[str]]) -> Audit:
    """Suspect label sets of a multi-label set: each label is audited as its own two classes
    (present, absent) the way `disagreements` audits one; a row is a suspect when any of its
    decisions is, suggested the set with those decisions turned, scored by the largest margin."""
    counts = Counter(label for labels in label_sets for label in labels)
    thin = {label: count for label, count in sorted(counts.items()) if count < MIN_LABEL_EXAMPLES}
    turned: dict[int, tuple[set[str], float]] = {}
    for label in sorted(set(counts) - set(thin)):
        present = ["present" if label in labels else "absent" for labels in label_sets]
        if present.count("absent") < MIN_LABEL_EXAMPLES:
            continue
        probabilities = out_of_fold_probabilities(embeddings, present, ["absent", "present"])
        for suspect in disagreements(probabilities, present, ["absent", "present"], {"absent", "present"}):
            labels, score = turned.get(suspect.index, (set(label_sets[suspect.index]), -1.0))
            labels ^= {label}
            turned[suspect.index] = (labels, max(score, suspect.score))
    suspects = [Suspect(index=row, suggested=tuple(sorted(labels)), score=score, why="disagrees")
                for row, (labels, score) in turned.items()]
    suspects.sort(key=lambda suspect: -suspect.score)
    listed = {suspect.index for suspect in suspects}
    for suspect in near_duplicates(embeddings, [",".join(sorted(labels)) for labels in label_sets]):
        if suspect.index not in listed:
            other = tuple(sorted(label_sets[suspect.other_index])) if suspect.other_index is not None else ()
            suspects.append(Suspect(suspect.index, other, suspect.score, suspect.why, suspect.other_index))
            listed.add(suspect.index)
    return Audit(suspects=suspects, thin=thin)
