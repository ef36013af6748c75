"""Multi-label and "none of these", in-process: the request rules, the learned thresholds and the
answers a version gives with them (the same functions the inference service and the trainers run)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fewshot.api.errors import describe_validation_errors
from fewshot.api.inference_schemas import PredictRequest
from fewshot.api.schemas import label_counts
from fewshot.api.training_schemas import ImportRequest, TrainRequest
from fewshot.serving.decisions import DecisionRule, multi_label_sets, single_label_answers
from fewshot.serving.items import TextItem
from trainers.holdout import confusion_matrix, keep_every_label_in_training, multi_label_strata, stratified_split
from trainers.thresholds import (
    SHRINKAGE,
    conformal_threshold,
    evaluate_multi_label,
    evaluate_single_label,
    f1_threshold,
    f1_thresholds,
    multi_label_metrics,
)

MULTI = [{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["y"]}, {"text": "c", "labels": []}]
SINGLE = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": None}]


def error_message(model: type, payload: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    return describe_validation_errors(caught.value.errors(include_context=False, include_input=False))


def test_the_form_of_the_examples_chooses_the_task_and_survives_the_job_record() -> None:
    multi = TrainRequest.model_validate({"model_name": "m", "examples": MULTI})
    single = TrainRequest.model_validate({"model_name": "m", "examples": SINGLE})
    assert multi.is_multi_label and not single.is_multi_label
    assert [e.target for e in multi.examples] == [("x", "y"), ("y",), ()]
    assert [e.target for e in single.examples] == ["x", "y", None]
    assert label_counts(multi.examples) == {"y": 2, "x": 1} and label_counts(single.examples) == {"x": 1, "y": 1}
    for request in (multi, single):  # the trainer validates the stored JSON again
        stored = request.model_dump(mode="json")
        assert all(len({"label", "labels"} & set(example)) == 1 for example in stored["examples"])
        assert TrainRequest.model_validate(stored) == request
    assert single.coverage == 0.95


@pytest.mark.parametrize(("payload", "expected"), [
    ({"examples": [*SINGLE[:2], MULTI[0]]}, "examples: must all give `label` (one label, or null for none of them) "
                                            "or all give `labels` (a list: a multi-label model), not both forms "
                                            "(see item 2)"),
    ({"examples": [{"text": "a", "labels": "x"}, *MULTI]}, "examples[0].labels: Input should be a valid list"),
    ({"examples": [{"text": "a"}, *SINGLE]}, "examples[0]: label: field required"),
    ({"examples": [{"text": "a", "label": "x", "labels": ["x"]}, *SINGLE]},
     "examples[0]: send `label` (one label, or null) or `labels` (a list, multi-label), not both"),
    ({"examples": [{"text": "a", "label": "x", "labels": None}, *SINGLE]},
     "examples[0]: send `label` (one label, or null) or `labels` (a list, multi-label), not both"),
    ({"examples": [{"text": "a", "labels": None}, *SINGLE]}, "examples[0]: labels: must be a list"),
    ({"examples": [{"text": "a", "labels": ["x", "x"]}, *MULTI]}, "examples[0].labels: must be distinct; repeated: x"),
    ({"examples": [{"text": "a", "label": "x"}, {"text": "b", "label": None}]},
     "examples: must contain at least 2 distinct labels (besides `label: null` examples)"),
    ({"examples": [{"text": "a", "labels": ["x"]}, {"text": "b", "labels": []}]},
     "examples: must contain at least 2 distinct labels (besides `label: null` examples)"),
    ({"examples": MULTI, "eval_examples": [{"text": "e", "label": "x"}]},
     "eval_examples: must give `labels` (a list), as the training examples do (see item 0)"),
    ({"examples": SINGLE, "eval_examples": [{"text": "e", "labels": ["x"]}]},
     "eval_examples: must give `label` (one label, or null), as the training examples do (see item 0)"),
    ({"examples": MULTI, "eval_examples": [{"text": "e", "labels": ["x", "z"]}]},
     "eval_examples: labels must be among the training examples' labels; unknown: z"),
    ({"examples": MULTI, "abstention_coverage": 0.9}, "abstention_coverage: is for single-label models"),
    ({"examples": SINGLE, "abstention_coverage": 0}, "abstention_coverage: Input should be greater than 0"),
    ({"examples": SINGLE, "abstention_coverage": 1.5}, "abstention_coverage: Input should be less than or equal to 1"),
    ({"examples": MULTI, "holdout_fraction": 0.3},
     "holdout_fraction: needs at least 2 examples of every label when > 0 (one to train on, one to evaluate); too "
     "few for: x"),
])
def test_label_rules_name_their_field(payload: dict, expected: str) -> None:
    assert error_message(TrainRequest, {"model_name": "m", **payload}).startswith(expected)


def test_evaluation_may_hold_texts_of_none_of_the_labels() -> None:
    evaluation = [{"text": "e", "label": None}, {"text": "f", "label": "x"}]
    request = TrainRequest.model_validate({"model_name": "m", "examples": SINGLE[:2], "eval_examples": evaluation})
    assert [e.target for e in request.eval_examples or []] == [None, "x"]
    assert ImportRequest.model_validate({"model_name": "m", "source": "org/model",
                                         "eval_examples": [{"text": "e", "label": None}]})
    assert error_message(ImportRequest, {"model_name": "m", "source": "org/model",
                                         "eval_examples": [{"text": "e", "labels": ["x"]}]}).startswith(
        "eval_examples: must give `label` (one label, or null for none of them): imported models are single-label")


def test_predict_threshold_and_abstain() -> None:
    request = PredictRequest.model_validate({"model_name": "m", "texts": ["t"], "threshold": 0.3, "abstain": True})
    assert request.items()[0].threshold == 0.3 and request.items()[0].abstain
    assert error_message(PredictRequest, {"model_name": "m", "texts": ["t"], "threshold": 1.2}) == \
        "threshold: Input should be less than or equal to 1"
    assert error_message(PredictRequest, {"model_name": "m", "texts": ["t"], "abstain": "maybe"}).startswith(
        "abstain: Input should be a valid boolean")


def test_f1_threshold_falls_between_what_it_accepts_and_rejects() -> None:
    probabilities = np.asarray([0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
    assert f1_threshold(probabilities, np.asarray([1, 1, 1, 0, 0, 0], dtype=bool)) == pytest.approx(0.325)
    # A positive ranked below a negative: accepting it too costs a false positive, still the best F1.
    assert f1_threshold(probabilities, np.asarray([1, 0, 1, 0, 0, 0], dtype=bool)) == pytest.approx(0.325)
    assert f1_threshold(probabilities, np.zeros(6, dtype=bool)) == 0.5  # nothing to learn from
    assert f1_threshold(np.asarray([0.4, 0.4, 0.1]), np.asarray([1, 0, 0], dtype=bool)) == pytest.approx(0.25)


def test_a_labels_threshold_is_shrunk_toward_the_shared_one_the_fewer_positives_it_has() -> None:
    rng = np.random.default_rng(2)
    many = rng.random(100) < 0.5
    probabilities = np.column_stack([np.where(many, 0.8, 0.2) + rng.normal(0, 0.02, 100),  # 50 positives
                                     np.r_[0.95, np.full(99, 0.1)],  # one positive, far above the rest
                                     np.full(100, 0.3)])  # no positive
    targets = np.column_stack([many, np.r_[True, np.zeros(99, dtype=bool)], np.zeros(100, dtype=bool)])
    shared = f1_threshold(probabilities.ravel(), targets.ravel())
    own = f1_threshold(probabilities[:, 1], targets[:, 1])
    thresholds = f1_thresholds(probabilities, targets)
    assert abs(thresholds[0] - f1_threshold(probabilities[:, 0], many)) < 0.05 * abs(thresholds[0] - shared) + 0.01
    assert thresholds[1] == pytest.approx((own + SHRINKAGE * shared) / (1 + SHRINKAGE))
    assert thresholds[2] == pytest.approx(shared)
    assert f1_thresholds(probabilities, np.zeros_like(targets)).tolist() == [0.5, 0.5, 0.5]


def test_conformal_threshold_keeps_the_coverage_of_in_scope_texts() -> None:
    scores = np.linspace(0.01, 1.0, 100)
    threshold = conformal_threshold(scores, 0.95)
    assert threshold == pytest.approx(0.05)  # k = 101 - ceil(95.95) = 5: the 5th lowest
    assert (scores >= threshold).mean() == 0.96
    assert conformal_threshold(scores[:10], 0.95) == pytest.approx(0.01)  # too few to promise 95%: the lowest
    assert conformal_threshold(np.asarray([]), 0.95) is None
    assert conformal_threshold(np.asarray([0.2, 0.9, 0.5, 0.7]), 0.5) == pytest.approx(0.5)  # k = 5 - 3 = 2


def test_multi_label_answers_each_label_at_its_threshold() -> None:
    probabilities = np.asarray([[0.9, 0.3, 0.6], [0.1, 0.2, 0.3]])
    thresholds = np.asarray([0.5, 0.25, 0.7])
    assert multi_label_sets(probabilities, ["a", "b", "c"], thresholds) == [["a", "b"], ["c"][:0]]
    rule = DecisionRule("m:1", "multi_label", ["a", "b", "c"], thresholds, None)
    items = [TextItem(model_name="m", text="t"), TextItem(model_name="m", text="u", threshold=0.15, top_k=2)]
    first, second = rule.answer(probabilities, items)
    assert (first.label, first.score, first.labels) == ("a", 0.9, ["a", "b"])
    assert [s.label for s in first.scores or []] == ["a", "c", "b"]  # every label's score
    assert (second.label, second.labels, [s.label for s in second.scores or []]) == ("c", ["c", "b"], ["c", "b"])
    refused = rule.answer(probabilities, [TextItem(model_name="m", text="t", abstain=True)])[0]
    assert refused.error is not None and refused.error.startswith("abstain: is for single-label models")


def test_single_label_abstains_below_its_threshold_and_for_its_none_column() -> None:
    probabilities = np.asarray([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.2, 0.1, 0.7]])
    answers = single_label_answers(probabilities, ["a", "b", None], 0.5)
    assert answers.labels == ["a", None, None] and answers.abstained.tolist() == [False, True, True]
    assert answers.scores == [0.7, 0.4, 0.2]  # the best real label's, also where it abstained
    plain = DecisionRule("m:1", "single_label", ["a", "b", "c"], None, 0.5)
    kept, asked, override = plain.answer(probabilities[:2], [TextItem(model_name="m", text="t"),
                                                             TextItem(model_name="m", text="u", abstain=True)]) + \
        plain.answer(probabilities[1:2], [TextItem(model_name="m", text="v", threshold=0.3)])
    assert (kept.label, kept.abstained, kept.scores) == ("a", None, None)  # the original shape
    assert (asked.label, asked.abstained, [s.label for s in asked.scores or []]) == (None, True, ["a", "b", "c"])
    assert (override.label, override.abstained) == ("a", False)
    refusing = DecisionRule("m:2", "single_label", ["a", "b", None], None, None)
    answered = refusing.answer(probabilities, [TextItem(model_name="m", text=t) for t in "xyz"])
    assert [(a.label, a.abstained) for a in answered] == [("a", False), ("a", False), (None, True)]
    unlearned = DecisionRule("m:3", "single_label", ["a", "b"], None, None)
    assert unlearned.answer(probabilities[:1, :2], [TextItem(model_name="m", text="t", abstain=True)])[0].error \
        .startswith("abstain: m:3 has no learned abstention threshold")


def test_from_metadata_reads_what_training_stored() -> None:
    multi = DecisionRule.from_metadata("m:1", {"task": "multi_label", "thresholds": {"a": 0.3}}, ["b", "a"])
    assert multi.thresholds is not None and multi.thresholds.tolist() == [0.5, 0.3]
    old = DecisionRule.from_metadata("m:0", {"labels": ["a", "b"]}, ["a", "b"])  # before multi-label existed
    assert (old.task, old.abstention_threshold, old.refuses) == ("single_label", None, False)


def test_multi_label_metrics() -> None:
    expected = [["a", "b"], ["a"], [], ["b"]]
    predicted = [["a", "b"], ["b"], [], ["b"]]
    metrics = multi_label_metrics(expected, predicted, ["a", "b", "c"])
    assert metrics.accuracy == 0.75  # subset accuracy
    assert metrics.micro_f1 == pytest.approx(2 * 3 / (4 + 4), abs=1e-4)
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-4)  # c has no examples: left out
    assert (metrics.per_label["a"].recall, metrics.per_label["b"].precision) == (0.5, pytest.approx(0.6667))


def test_evaluation_scores_each_half_with_the_other_halfs_thresholds() -> None:
    rng = np.random.default_rng(0)
    positives = rng.random((200, 2)) < 0.3
    probabilities = np.clip(np.where(positives, 0.6, 0.3) + rng.normal(0, 0.08, (200, 2)), 0, 1)
    expected = [[label for label, on in zip("ab", row, strict=True) if on] for row in positives]
    evaluation = evaluate_multi_label(probabilities, ["a", "b"], expected, ["a", "b"])
    assert evaluation.thresholds is not None and 0.35 < evaluation.thresholds["a"] < 0.55
    assert evaluation.micro_f1 is not None and 0.85 < evaluation.micro_f1 <= 1


def test_multi_label_metrics_score_each_half_with_thresholds_fitted_on_the_other() -> None:
    """Alternate examples differ: scored with its own thresholds each half looks perfect (F1 1.0),
    scored with the other half's — what a new text meets — it does not. The metrics must say the latter."""
    even_probabilities, odd_probabilities = [0.9, 0.9, 0.5, 0.5], [0.6, 0.6, 0.2, 0.2]
    probabilities = np.asarray([[p] for pair in zip(even_probabilities, odd_probabilities, strict=True) for p in pair])
    expected = [["a"], ["a"], ["a"], ["a"], [], [], [], []]  # rows 0-3: positives of both halves
    targets = np.asarray([[bool(labels)] for labels in expected])
    same_rows = multi_label_sets(probabilities, ["a"], f1_thresholds(probabilities, targets))
    assert multi_label_metrics(expected, same_rows, ["a"]).micro_f1 == 1.0  # what scoring on the same rows says
    evaluation = evaluate_multi_label(probabilities, ["a"], expected, ["a"])
    halves = np.arange(8) % 2
    by_hand: list[list[str]] = [[] for _ in expected]
    for fitted_on in (0, 1):
        rows, others = np.flatnonzero(halves == fitted_on), np.flatnonzero(halves != fitted_on)
        thresholds = f1_thresholds(probabilities[rows], targets[rows])
        for row, chosen in zip(others, multi_label_sets(probabilities[others], ["a"], thresholds), strict=True):
            by_hand[row] = chosen
    assert evaluation.micro_f1 == multi_label_metrics(expected, by_hand, ["a"]).micro_f1
    assert evaluation.micro_f1 is not None and evaluation.micro_f1 < 0.8


def test_abstention_metrics_use_a_threshold_fitted_on_the_other_half() -> None:
    """Even examples confident, odd ones less so: a threshold fitted on the evens refuses the odds.
    Fitted on the same rows, the kept share would meet the coverage by construction."""
    confident, unsure = [0.95, 0.94, 0.93, 0.92, 0.91], [0.7, 0.69, 0.68, 0.67, 0.66]
    best = [p for pair in zip(confident, unsure, strict=True) for p in pair]
    probabilities = np.asarray([[p, 1 - p] for p in best])
    evaluation = evaluate_single_label(probabilities, ["a", "b"], ["a"] * 10, ["a", "b"], 0.8, 0)
    abstention = evaluation.abstention
    assert abstention is not None and abstention.in_scope_kept is not None
    same_rows = (np.asarray(best) >= conformal_threshold(np.asarray(best), 0.8)).mean()
    assert same_rows >= 0.8  # what scoring on the same rows says
    assert abstention.in_scope_kept <= 0.6, abstention


def test_abstention_metrics_on_in_scope_and_out_of_scope_texts() -> None:
    rng = np.random.default_rng(1)
    in_scope = rng.dirichlet([30, 1, 1], 60)  # confident
    foreign = rng.dirichlet([1, 1, 1], 40)  # unsure
    probabilities = np.vstack([in_scope, foreign])
    expected = ["a"] * 60 + [None] * 40
    evaluation = evaluate_single_label(probabilities, ["a", "b", "c"], expected, ["a", "b", "c"], 0.9, 0)
    abstention = evaluation.abstention
    assert abstention is not None and abstention.threshold is not None
    assert (probabilities[:60].max(axis=1) >= abstention.threshold).mean() >= 0.9
    assert abstention.in_scope_kept is not None and abstention.in_scope_kept >= 0.8
    assert abstention.out_of_scope_examples == 40 and abstention.out_of_scope_refused is not None
    assert abstention.out_of_scope_refused > 0.5
    assert evaluation.accuracy <= 0.6  # plain accuracy: every foreign text gets a label, wrongly


def test_the_confusion_matrix_counts_true_labels_by_answer_with_none_last_when_it_occurs() -> None:
    plain = confusion_matrix(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    assert (plain.labels, plain.counts, plain.none_of_these) == (["a", "b"], [[1, 1], [0, 1]], False)
    refusals = confusion_matrix(["a", None, None, "b"], ["a", None, "b", None], ["a", "b"])
    assert refusals.none_of_these and refusals.counts == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    probabilities = np.asarray([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]])
    evaluation = evaluate_single_label(probabilities, ["a", "b", None], ["a", None, "a"], ["a", "b"], 0.95, 2)
    assert evaluation.confusion == refusals.model_copy(update={"counts": [[1, 1, 0], [0, 0, 0], [0, 0, 1]]})
    assert evaluation.abstention is not None  # the confusion matrix comes with the abstention metrics


def test_a_multi_label_hold_out_keeps_every_label_in_training() -> None:
    targets = [("rare", "common")] * 2 + [("common",)] * 8 + [()] * 4
    examples = list(enumerate(targets))
    strata = multi_label_strata(targets)
    assert strata[:3] == ["rare", "rare", "common"] and strata[-1] == ""
    train, holdout = stratified_split(examples, strata, 0.5, seed=0)
    train, holdout = keep_every_label_in_training(train, holdout, lambda example: example[1])
    assert {label for _, target in train for label in target} == {"rare", "common"}
    assert holdout and len(train) + len(holdout) == len(examples)
