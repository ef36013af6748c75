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


def test_per_label_precision_recall_f1_and_support() -> None:
    from trainers.holdout import evaluate

    expected = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "a", "a"]
    result = evaluate(expected, predicted, ["a", "b", "c"])
    assert result.accuracy == 3 / 6 and result.num_examples == 6
    a, b, c = result.per_label["a"], result.per_label["b"], result.per_label["c"]
    assert (a.precision, a.recall, a.support) == (0.5, round(2 / 3, 4), 3)
    assert a.f1 == round(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 4)
    assert (b.precision, b.recall, b.f1, b.support) == (0.5, 0.5, 0.5, 2)
    assert (c.precision, c.recall, c.f1, c.support) == (0.0, 0.0, 0.0, 1)  # never predicted: 0, not an error


def test_warnings_name_labels_with_few_examples_and_imbalance() -> None:
    from trainers.holdout import data_warnings

    assert data_warnings({"a": 8, "b": 8}) == []
    few = data_warnings({"a": 8, "b": 2, "c": 1})
    assert few[0].startswith("examples: fewer than 3 examples of 'b' (2), 'c' (1);")
    assert "imbalanced (8 examples of the most frequent, 1 of the rarest)" in few[1]
    assert len(data_warnings({"a": 12, "b": 3})) == 1  # 4× apart: imbalanced, none too few


def test_auto_keeps_fine_tuning_only_when_it_beats_the_head() -> None:
    from types import SimpleNamespace

    from trainers.run import compare

    def trained(accuracy: float | None, seconds: float, micro_f1: float | None = None) -> SimpleNamespace:
        return SimpleNamespace(accuracy=accuracy, training_duration_seconds=seconds, micro_f1=micro_f1,
                               multi_label=micro_f1 is not None)

    assert compare(trained(0.8, 1.0), trained(0.9, 30.0)).winner == "setfit"
    tie = compare(trained(0.8, 1.0), trained(0.8, 30.0))
    assert tie.winner == "head" and (tie.head_accuracy, tie.setfit_accuracy) == (0.8, 0.8)
    assert compare(trained(0.9, 1.0), trained(0.7, 30.0)).winner == "head"
    blind = compare(trained(None, 1.0), trained(None, 30.0))
    assert blind.winner == "setfit" and "no evaluation examples" in blind.reason
    # Multi-label: micro F1 decides, not subset accuracy (0 for both on a few texts and many labels).
    multi = compare(trained(0.0, 1.0, micro_f1=0.31), trained(0.0, 30.0, micro_f1=0.35))
    assert multi.winner == "setfit" and multi.metric == "micro_f1" and "(micro F1)" in multi.reason
    assert (multi.head_micro_f1, multi.setfit_micro_f1) == (0.31, 0.35)
