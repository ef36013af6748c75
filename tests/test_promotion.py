"""The retrain promotion rule and the fixed evaluation split (trainers/promotion.py), on their own."""

from __future__ import annotations

from collections import Counter

from trainers.holdout import evaluate
from trainers.promotion import (
    EVALUATION_SHARE,
    LABEL_F1_TOLERANCE,
    MIN_LABEL_EXAMPLES,
    decide,
    fixed_evaluation,
    text_rank,
)


def test_the_fixed_evaluation_takes_a_share_of_each_label_by_hash_and_keeps_it_as_the_set_grows() -> None:
    examples = [(f"text {n}", "a" if n % 3 else "b") for n in range(60)] + [("rare one", "c"), ("rare two", "c")]
    train, evaluation = fixed_evaluation(examples)
    assert sorted(train + evaluation) == list(range(len(examples)))
    taken = Counter(examples[i][1] for i in evaluation)
    assert taken == {"a": 40 // EVALUATION_SHARE, "b": 20 // EVALUATION_SHARE}  # c: too few to evaluate on
    assert MIN_LABEL_EXAMPLES > 2
    lowest_a = sorted((i for i, (_, label) in enumerate(examples) if label == "a"),
                      key=lambda i: text_rank(examples[i][0]))[:8]
    assert set(lowest_a) <= set(evaluation)  # the texts that rank lowest, whatever their order in the set
    reordered = list(reversed(examples))
    assert {reordered[i][0] for i in fixed_evaluation(reordered)[1]} == {examples[i][0] for i in evaluation}
    grown = [*examples, *[(f"more {n}", "c") for n in range(8)]]
    _, evaluation_after = fixed_evaluation(grown)
    assert {examples[i] for i in evaluation} <= {grown[i] for i in evaluation_after}  # a's and b's stay
    assert Counter(grown[i][1] for i in evaluation_after)["c"] == 2
    # multi-label: an example whose other label would keep nothing to train on stays in training
    tagged = [(f"t{n}", ("p", "q")) for n in range(5)] + [("only q", ("q",))]
    train, evaluation = fixed_evaluation(tagged)
    assert len(evaluation) == 1 and all(tagged[i][1] != ("q",) for i in evaluation)


def scored(expected: list[str], predicted: list[str]):
    return evaluate(expected, predicted, sorted(set(expected) | {"a", "b", "c"}))


def test_a_version_is_served_unless_worse_overall_or_on_a_label_both_know() -> None:
    truth = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    served = scored(truth, ["a"] * 5 + ["b"] * 5 + ["a"] * 5)  # never answers c (a label new to the retrain)
    better = scored(truth, truth)
    promotion = decide(served, better, ["a", "b"], "v1", multi_label=False)
    assert promotion.promoted and promotion.new_score == 1.0 and set(promotion.labels) == {"a", "b"}
    worse = scored(truth, ["b"] * 5 + ["b"] * 5 + ["a"] * 5)
    held = decide(served, worse, ["a", "b"], "v1", multi_label=False)
    assert not held.promoted and "below the served version's" in held.reason
    # as good overall, but one known label much worse: held, and the label named
    before = scored(truth, ["a"] * 5 + ["b"] * 5 + ["b"] * 5)  # a perfect, c never right
    trade = scored(truth, ["a", "a", "a", "c", "c"] + ["b"] * 5 + ["c"] * 5)  # c learned, a worse
    assert trade.accuracy > before.accuracy
    shifted = decide(before, trade, ["a", "b", "c"], "v1", multi_label=False)
    assert not shifted.promoted and shifted.reason.startswith(f"F1 dropped by more than {LABEL_F1_TOLERANCE} on: a")
