"""Hold-out selection and scoring."""

from __future__ import annotations

from collections import Counter

import pytest

from trainers.holdout import accuracy, choose_holdout_fraction, stratified_split


def test_default_fraction_needs_four_examples_of_every_label() -> None:
    assert choose_holdout_fraction(Counter({"a": 4, "b": 9}), None) == 0.2
    assert choose_holdout_fraction(Counter({"a": 3, "b": 9}), None) == 0.0
    assert choose_holdout_fraction(Counter({"a": 3, "b": 9}), 0.5) == 0.5
    assert choose_holdout_fraction(Counter({"a": 30, "b": 9}), 0.0) == 0.0


def test_split_is_stratified_with_at_least_one_per_label_and_disjoint() -> None:
    labels = ["a"] * 8 + ["b"] * 4 + ["c"] * 5
    examples = list(range(len(labels)))
    train, holdout = stratified_split(examples, labels, 0.2, seed=1)
    held_labels = Counter(labels[i] for i in holdout)
    assert held_labels == {"a": 2, "b": 1, "c": 1}
    assert sorted(train + holdout) == examples
    assert not set(train) & set(holdout)
    assert {labels[i] for i in train} == {"a", "b", "c"}


def test_split_keeps_a_training_example_of_every_label() -> None:
    labels = ["a", "a", "b", "b", "c"]
    train, holdout = stratified_split(list(range(5)), labels, 0.9, seed=0)
    assert {labels[i] for i in train} == {"a", "b", "c"}
    assert len(holdout) == 2


def test_split_is_deterministic_and_zero_holds_nothing_out() -> None:
    labels = ["a"] * 10 + ["b"] * 10
    assert stratified_split(list(range(20)), labels, 0.3, 7) == stratified_split(list(range(20)), labels, 0.3, 7)
    assert stratified_split(list(range(20)), labels, 0.0, 7) == (list(range(20)), [])


def test_accuracy() -> None:
    assert accuracy(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 0.75
    assert accuracy([], []) is None
    with pytest.raises(ValueError):
        accuracy(["a"], [])
