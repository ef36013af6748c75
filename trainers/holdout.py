"""Honest evaluation: which examples are held out of training, and how they are scored. Pure logic."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TypeVar

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

    With fraction 0 nothing is held out. Deterministic for a given seed.
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


def accuracy(expected: Sequence[str], predicted: Sequence[str]) -> float | None:
    """Share of exact matches; None when there is nothing to score."""
    if len(expected) != len(predicted):
        raise ValueError(f"{len(expected)} expected labels but {len(predicted)} predictions")
    if not expected:
        return None
    return sum(e == p for e, p in zip(expected, predicted, strict=True)) / len(expected)
