"""The retrain promotion rule and the fixed evaluation split (trainers/promotion.py), on their own."""

from __future__ import annotations

from trainers.holdout import evaluate
from trainers.promotion import LABEL_F1_TOLERANCE, MIN_LABEL_EXAMPLES, decide, fixed_evaluation, in_fixed_evaluation


def test_the_fixed_evaluation_depends_on_the_text_alone_and_keeps_every_label_trainable() -> None:
    examples = [(f"text {n}", "a" if n % 3 else "b") for n in range(60)] + [("rare one", "c"), ("rare two", "c")]
    train, evaluation = fixed_evaluation(examples)
    assert sorted(train + evaluation) == list(range(len(examples)))
    assert all(in_fixed_evaluation(examples[i][0]) for i in evaluation) and evaluation
    assert not [i for i in evaluation if examples[i][1] == "c"]  # fewer than MIN_LABEL_EXAMPLES: never evaluated
    assert MIN_LABEL_EXAMPLES > 2
    grown = [*examples, *[(f"more {n}", "b") for n in range(20)]]
    _, evaluation_after = fixed_evaluation(grown)
    assert set(evaluation) <= set(evaluation_after)  # what was evaluated on stays so as the set grows
    # a label whose every example hashes into the evaluation still keeps one to train on
    hashed_in = [text for text in (f"t{n}" for n in range(500)) if in_fixed_evaluation(text)][:5]
    train, evaluation = fixed_evaluation([(text, "only") for text in hashed_in] + [("x", "other")] * 0)
    assert len(train) == 1 and len(evaluation) == 4
    # multi-label: each of an example's labels must be able to spare it
    tagged = [(text, ("p", "q")) for text in hashed_in]
    train, evaluation = fixed_evaluation(tagged)
    assert len(train) == 1


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
