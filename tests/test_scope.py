"""The out-of-scope score and its calibration (fewshot/serving/scope.py, trainers/scope.py) and the
decision rule that abstains by it (fewshot/serving/decisions.py), on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot.serving.decisions import DecisionRule
from fewshot.serving.items import TextItem
from fewshot.serving.scope import SCOPE_FILE, ScopeIndex
from trainers.scope import fit_scope


def unit(*rows: list[float]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_the_score_is_the_cosine_similarity_to_the_nearest_training_example() -> None:
    index = ScopeIndex.of(np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]))  # scaled: the score is cosine
    scores = index.scores(np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]]))
    assert scores == pytest.approx([1.0, np.sqrt(0.5), 0.0], abs=1e-6)


def test_a_none_of_these_example_lowers_the_score_only_where_it_is_nearer() -> None:
    plain = ScopeIndex.of(unit([1, 0, 0]))
    negative = ScopeIndex.of(unit([1, 0, 0]), unit([0, 1, 0]))
    near_the_negative, near_the_label = unit([0.6, 0.8, 0]), unit([0.8, 0.6, 0])
    assert negative.scores(near_the_negative)[0] == pytest.approx(0.6 - (0.8 - 0.6))
    assert negative.scores(near_the_label) == pytest.approx(plain.scores(near_the_label))


def test_the_index_is_saved_and_read_back_without_pickle(tmp_path) -> None:
    index = ScopeIndex.of(unit([1, 0], [0, 1]), unit([1, 1]))
    index.save(tmp_path)
    with np.load(tmp_path / SCOPE_FILE, allow_pickle=False) as saved:  # plain arrays, no objects
        assert set(saved.files) == {"in_scope", "negatives"}
    loaded = ScopeIndex.load(tmp_path)
    assert loaded is not None and np.array_equal(loaded.in_scope, index.in_scope)
    assert np.array_equal(loaded.negatives, index.negatives)
    assert ScopeIndex.load(tmp_path / "elsewhere") is None  # a version from before scope scores


def clusters(labels: int, per_label: int, seed: int = 0, spread: float = 0.3) -> tuple[np.ndarray, list[str]]:
    """Points around one random direction per label, in 32 dimensions."""
    generator = np.random.default_rng(seed)
    centres = generator.standard_normal((labels, 32))
    points = np.concatenate([centre + spread * generator.standard_normal((per_label, 32)) for centre in centres])
    return points.astype(np.float32), [f"l{i}" for i in range(labels) for _ in range(per_label)]


def test_a_frozen_body_is_calibrated_on_every_in_scope_example_and_keeps_the_coverage_on_new_ones() -> None:
    points, labels = clusters(5, 40)
    train, evaluation = points[::2], points[1::2]  # each label's points interleaved: the same distribution
    index, scope = fit_scope(train, labels[::2], evaluation[:50], labels[1::2][:50], 0.9, body_saw_training=False)
    assert scope.calibration == "cross_fitted" and scope.calibration_examples == 100 + 50
    assert scope.threshold is not None and scope.none_of_these_examples == 0 and scope.out_of_scope_refused is None
    new = index.scores(evaluation[50:])
    assert np.mean(new >= scope.threshold) >= 0.9 - 0.05
    foreign = index.scores(np.random.default_rng(9).standard_normal((50, 32)))
    assert np.mean(foreign < scope.threshold) > 0.9


def test_a_fine_tuned_body_is_calibrated_on_its_evaluation_examples_alone() -> None:
    points, labels = clusters(4, 20)
    _, tuned = fit_scope(points[::2], labels[::2], points[1::2], labels[1::2], 0.95, body_saw_training=True)
    assert tuned.calibration == "evaluation" and tuned.calibration_examples == 40
    _, untested = fit_scope(points[::2], labels[::2], points[:0], [], 0.95, body_saw_training=True)
    assert untested.calibration == "training" and untested.calibration_examples == 40  # and says it is optimistic


def test_none_of_these_examples_shape_the_score_and_measure_the_refusals() -> None:
    points, labels = clusters(3, 20)
    foreign = np.random.default_rng(5).standard_normal((6, 32)).astype(np.float32)
    train = np.concatenate([points, foreign[:4]])
    train_labels: list[str | None] = [*labels, None, None, None, None]
    evaluation = np.concatenate([points[:6] + 0.01, foreign[4:] + 0.01])
    index, scope = fit_scope(train, train_labels, evaluation, ["l0"] * 6 + [None, None], 0.9, False)
    assert scope.none_of_these_examples == 4 and len(index.negatives) == 4 and len(index.in_scope) == 60
    assert scope.calibration_examples == 60 + 6  # `label: null` examples never calibrate
    assert scope.out_of_scope_examples == 2
    # both held-out `label: null` texts are random directions, far under the threshold: both refused
    assert max(index.scores(evaluation[6:])) < scope.threshold and scope.out_of_scope_refused == 1.0
    # one of them in a cluster instead (a text wrongly marked "none of these"): it is kept, half are refused
    inside = np.concatenate([evaluation[:7], points[7:8] + 0.01])
    index, kept_one = fit_scope(train, train_labels, inside, ["l0"] * 6 + [None, None], 0.9, False)
    assert index.scores(inside[7:])[0] >= kept_one.threshold and kept_one.out_of_scope_refused == 0.5


def rule(threshold: float | None, columns: list[str | None] | None = None) -> DecisionRule:
    metadata = {"abstention": {"threshold": 0.6}, "scope": {"threshold": threshold}}
    return DecisionRule.from_metadata("m:1", metadata, columns or ["a", "b"], ScopeIndex.of(unit([1, 0], [0, 1])))


PROBABILITIES = np.array([[0.9, 0.1], [0.55, 0.45]])
EMBEDDINGS = unit([1, 1], [1, 0.05])  # far from both examples (0.71), near "a"'s (~1.0)


def test_abstain_refuses_by_the_scope_score_and_says_why() -> None:
    scoped = rule(0.9)
    items = [TextItem(model_name="m", text=t, abstain=True) for t in "xy"]
    assert scoped.reads_embeddings(items) and not scoped.reads_embeddings([TextItem(model_name="m", text="x")])
    far, near = scoped.answer(PROBABILITIES, items, EMBEDDINGS)
    # the far text had a confident top probability and is refused; the near one, unsure, is kept
    assert (far.label, far.abstained, far.reason) == (None, True, "out_of_scope")
    assert far.scope_score == pytest.approx(np.sqrt(0.5), abs=1e-5) and far.scope_score < 0.9
    assert (near.label, near.abstained, near.reason) == ("a", False, None) and near.scope_score > 0.9


def test_an_explicit_threshold_is_on_the_top_probability_and_reads_no_embeddings() -> None:
    scoped = rule(0.9)
    items = [TextItem(model_name="m", text=t, threshold=0.7) for t in "xy"]
    assert not scoped.reads_embeddings(items)
    confident, unsure = scoped.answer(PROBABILITIES, items)
    assert (confident.label, confident.abstained, confident.scope_score) == ("a", False, None)
    assert (unsure.label, unsure.reason, unsure.scope_score) == (None, "low_confidence", None)


def test_a_version_from_before_scope_scores_abstains_by_its_top_probability() -> None:
    old = DecisionRule.from_metadata("m:0", {"abstention": {"threshold": 0.6}}, ["a", "b"])
    items = [TextItem(model_name="m", text=t, abstain=True) for t in "xy"]
    assert not old.scoped and not old.reads_embeddings(items)
    confident, unsure = old.answer(PROBABILITIES, items)
    assert (confident.label, unsure.label, unsure.reason, unsure.scope_score) == ("a", None, "low_confidence", None)


def test_a_refusing_version_always_abstains_by_its_class_and_its_scope() -> None:
    refusing = rule(0.9, ["a", "b", None])
    probabilities = np.array([[0.2, 0.1, 0.7], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1]])
    answers = refusing.answer(probabilities, [TextItem(model_name="m", text=t) for t in "xyz"],
                              unit([1, 0.05], [1, 0.05], [1, 1]))
    assert [(a.label, a.reason) for a in answers] == [(None, "none_of_these"), ("a", None), (None, "out_of_scope")]
