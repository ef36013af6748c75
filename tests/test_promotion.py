"""The retrain promotion rule and the fixed evaluation split (trainers/promotion.py), on their own:
synthetic embeddings (a cluster per label) and the service's head, no model, no server."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fewshot.records.outcomes import EVALUATION_SHARE, MIN_LABEL_EXAMPLES, fixed_evaluation, text_rank
from trainers.promotion import (
    LABEL_GUARD_TEXTS,
    PairedScores,
    comparable,
    cross_fitted,
    decide,
    unseen,
    without_evidence,
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
    # multi-label: an example whose other label would keep none to train on stays in training
    tagged = [(f"t{n}", ("p", "q")) for n in range(5)] + [("only q", ("q",))]
    train, evaluation = fixed_evaluation(tagged)
    assert len(evaluation) == 1 and all(tagged[i][1] != ("q",) for i in evaluation)


def test_feedback_texts_are_always_trained_on() -> None:
    examples = [(f"text {n}", "a" if n % 2 else "b") for n in range(40)]
    _, evaluation = fixed_evaluation(examples)
    corrected = {examples[i][0] for i in evaluation[:3]}
    train, evaluation_after = fixed_evaluation(examples, always_train=corrected)
    assert corrected <= {examples[i][0] for i in train}
    assert not corrected & {examples[i][0] for i in evaluation_after}


CENTRES = {label: centre for label, centre in zip("abcdefgh", np.random.default_rng(0).normal(size=(8, 16)) * 1.2,
                                                       strict=True)}


def labelled(label: str, count: int, rng: random.Random, tag: str = "") -> list[tuple[str, str]]:
    return [(f"{label}{tag}-{rng.random():.12f}", label) for _ in range(count)]


class Embeddings:
    """Each text a point near its true label's centre (its name's first letter), the same every call."""

    def __init__(self) -> None:
        self.points: dict[str, np.ndarray] = {}

    def __call__(self, texts) -> np.ndarray:
        for text in texts:
            if text not in self.points:
                seed = text_rank(text) % 2**32
                self.points[text] = CENTRES[text[0]] + np.random.default_rng(seed).normal(size=16)
        return np.stack([self.points[text] for text in texts])


def fit(vectors: np.ndarray, labels: list[str]) -> LogisticRegression:
    return LogisticRegression(class_weight="balanced").fit(vectors, labels)


def retrain(served_trained, examples):
    train_rows, _ = fixed_evaluation(examples)
    return [examples[i] for i in train_rows]


@pytest.mark.parametrize("seed", range(5))
def test_more_examples_and_a_new_label_are_served_on_cross_fitted_evidence(seed: int) -> None:
    """The issue's session: 8 labels x 2, then 6 more each and a 9th label with 8."""
    rng = random.Random(seed)
    first = [pair for label in "abcdefg" for pair in labelled(label, 2, rng)]
    grown = first + [pair for label in "abcdefg" for pair in labelled(label, 6, rng)] + labelled("h", 8, rng)
    scores = cross_fitted(Embeddings(), first, retrain(first, grown), grown, fit)
    assert len(scores) == len(grown)  # every text of the set is evidence
    promotion = decide(scores, sorted("abcdefg"), "v1", multi_label=False)
    assert promotion.promoted, promotion.reason
    assert promotion.method == "cross_fitted" and promotion.evaluation_examples == len(grown)
    assert promotion.new_score > promotion.served_score and promotion.new_better > promotion.served_better
    assert "h" not in promotion.labels and set(promotion.labels) <= set("abcdefg")


@pytest.mark.parametrize("seed", range(5))
def test_a_set_relabelled_wrongly_is_held(seed: int) -> None:
    """Half the texts the served version learned, given the next label: judged on the texts whose labels
    both sets agree on, the relabelled set's version is worse."""
    rng = random.Random(seed)
    examples = [pair for label in "abcd" for pair in labelled(label, 8, rng)]
    served_trained = retrain([], examples)
    learned = set(served_trained)
    rotated = [(text, "abcd"[("abcd".index(label) + 1) % 4]) if n % 2 and (text, label) in learned else (text, label)
               for n, (text, label) in enumerate(examples)]
    assert sum(r != e for r, e in zip(rotated, examples, strict=True)) >= len(examples) // 3
    judged = comparable(rotated, served_trained)
    # relabelled texts the served version learned are not evidence
    assert all(target == text[0] for text, target in judged)
    scores = cross_fitted(Embeddings(), served_trained, retrain(served_trained, rotated), rotated, fit)
    promotion = decide(scores, list("abcd"), "v1", multi_label=False)
    assert not promotion.promoted and promotion.reason.startswith("worse"), promotion.reason
    assert promotion.new_score < promotion.served_score


def scores_of(served_right: list[bool], new_right: list[bool], targets: list[str]) -> PairedScores:
    served, new = np.array(served_right), np.array(new_right)
    return PairedScores("unseen_texts", list(targets), served, new, served.astype(float), new.astype(float),
                        [t if r else "x" for t, r in zip(targets, served_right, strict=True)],
                        [t if r else "x" for t, r in zip(targets, new_right, strict=True)])


def test_served_unless_worse_and_a_label_checked_only_with_enough_texts() -> None:
    targets = ["a"] * 10 + ["b"] * 10
    assert decide(scores_of([True] * 20, [True] * 20, targets), ["a", "b"], "v1", False).promoted  # a tie serves
    # 2 texts of 20 lost: within the noise of 20 texts, served
    noise = decide(scores_of([True] * 20, [True] * 18 + [False] * 2, targets), ["a", "b"], "v1", False)
    assert noise.promoted and (noise.served_better, noise.new_better) == (2, 0) and noise.difference == -0.1
    worse = decide(scores_of([True] * 20, [True] * 14 + [False] * 6, targets), ["a", "b"], "v1", False)
    assert not worse.promoted and worse.reason.startswith("worse beyond doubt") and worse.difference == -0.3
    assert worse.p_value == round(0.5 ** 6, 4)  # 6 texts only the served version answers, none the other way
    # tiny evidence: one or two texts lost are never "beyond doubt"
    assert decide(scores_of([True, True], [False, False], ["a", "b"]), ["a", "b"], "v1", False).promoted
    # better overall, but every text of a label with enough texts to tell lost: held by the label guard
    many = ["a"] * LABEL_GUARD_TEXTS + ["b"] * (3 * LABEL_GUARD_TEXTS)
    traded = scores_of([True] * LABEL_GUARD_TEXTS + [False] * (3 * LABEL_GUARD_TEXTS),
                       [False] * LABEL_GUARD_TEXTS + [True] * (3 * LABEL_GUARD_TEXTS), many)
    guarded = decide(traded, ["a", "b"], "v1", False)
    assert not guarded.promoted and guarded.reason.startswith("worse on a"), guarded.reason
    # the same trade on a label with too few texts to tell is not held
    few = ["a"] * (LABEL_GUARD_TEXTS - 1) + ["b"] * (3 * LABEL_GUARD_TEXTS)
    assert decide(scores_of([True] * (LABEL_GUARD_TEXTS - 1) + [False] * (3 * LABEL_GUARD_TEXTS),
                            [False] * (LABEL_GUARD_TEXTS - 1) + [True] * (3 * LABEL_GUARD_TEXTS), few),
                  ["a", "b"], "v1", False).promoted


def test_without_evidence_a_superset_is_served_and_anything_else_held() -> None:
    served = [("one", "a"), ("two", "b")]
    assert without_evidence(served, [*served, ("three", "c")], ["a", "b"], ["a", "b", "c"], "v1").promoted
    dropped = without_evidence(served, [("one", "a"), ("three", "c")], ["a", "b"], ["a", "c"], "v1")
    assert not dropped.promoted and "no longer knows b" in dropped.reason
    relabelled = without_evidence(served, [("one", "a"), ("two", "a"), ("x", "b")], ["a", "b"], ["a", "b"], "v1")
    assert not relabelled.promoted and "1 of the served version's training examples" in relabelled.reason
    imported = without_evidence(None, [("one", "a"), ("two", "b")], ["a", "b"], ["a", "b"], "v1")
    assert not imported.promoted and "unknown" in imported.reason and imported.method == "no_evidence"


def test_unseen_texts_are_the_evaluation_texts_the_served_version_did_not_train_on() -> None:
    assert unseen([("old", "a"), ("new", "b")], [("old", "a"), ("other", "b")]) == [("new", "b")]
