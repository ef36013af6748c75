"""What to label next and which labels look wrong (fewshot/learning), on synthetic embeddings."""

from __future__ import annotations

import numpy as np

from fewshot.learning.audit import (
    MIN_LABEL_EXAMPLES,
    NONE_OF_THESE,
    audit,
    audit_multi_label,
    fold_of,
    near_duplicates,
    thin_labels,
)
from fewshot.learning.selection import (
    NEAR_DUPLICATE_DISTANCE,
    SHORTLIST_PER_PICK,
    margin_uncertainty,
    normalized,
    rank_pool,
    select,
    shortlist,
    threshold_uncertainty,
    typicality,
)


def clusters(count_per: int, centres: int, dim: int = 16, spread: float = 0.15,
             seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Points around `centres` well-separated unit directions; labels c0, c1, …"""
    rng = np.random.default_rng(seed)
    axes = np.eye(dim)[:centres]
    points = np.concatenate([axes[c] + spread * rng.standard_normal((count_per, dim)) for c in range(centres)])
    return points, [f"c{c}" for c in range(centres) for _ in range(count_per)]


def test_margin_is_one_where_the_top_two_tie_and_zero_where_one_label_is_certain() -> None:
    probabilities = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    assert np.allclose(margin_uncertainty(probabilities), [1.0, 0.0, 0.7])


def test_threshold_uncertainty_is_closeness_of_the_nearest_label_to_its_threshold() -> None:
    probabilities = np.array([[0.3, 0.99], [0.0, 1.0], [0.15, 0.5]])
    thresholds = np.array([0.3, 0.5])
    assert np.allclose(threshold_uncertainty(probabilities, thresholds), [1.0, 0.0, 1.0])
    assert np.allclose(threshold_uncertainty(np.array([[0.0, 1.0], [0.15, 0.75]]), thresholds), [0.0, 0.5])


def test_uncertainty_alone_picks_near_copies_and_diversity_spreads_the_batch() -> None:
    rng = np.random.default_rng(1)
    # 30 near-copies of one confusing text (uncertainty ~0.95), and 30 texts spread out (0.8).
    copies = np.tile(rng.standard_normal(16), (30, 1)) + 0.001 * rng.standard_normal((30, 16))
    spread = rng.standard_normal((30, 16))
    embeddings = np.concatenate([copies, spread])
    uncertainty = np.concatenate([np.full(30, 0.95), np.full(30, 0.8)])
    picked = [s.index for s in select(uncertainty, embeddings, 5)]
    assert picked[0] < 30  # the most uncertain first
    assert sum(index < 30 for index in picked) == 1  # its copies never again
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for a in picked:
        for b in picked:
            assert a == b or 1 - unit[a] @ unit[b] >= NEAR_DUPLICATE_DISTANCE
    without_diversity = [s.index for s in select(uncertainty, embeddings, 5, diverse=False)]
    assert sum(index < 30 for index in without_diversity) == 1  # near-duplicates are never both suggested


def test_texts_like_labelled_ones_are_never_suggested_and_abstained_ones_rank_first() -> None:
    embeddings, _ = clusters(10, 3)
    labelled = embeddings[:1] + 1e-4
    uncertainty = np.full(30, 0.5)
    uncertainty[0] = 1.0
    suggestions = select(uncertainty, embeddings, 30, labelled=labelled)
    assert 0 not in [s.index for s in suggestions]
    abstained = np.zeros(30, dtype=bool)
    abstained[25] = True
    first = select(np.full(30, 0.2), embeddings, 1, abstained=abstained, diverse=False)[0]
    assert (first.index, first.reason, first.uncertainty) == (25, "abstained", 1.0)
    batch = select(np.full(30, 0.2), embeddings, 3, abstained=abstained)
    assert batch[0].index == 25 and batch[0].reason == "abstained"  # the most uncertain of the batch first


def test_a_pool_gives_at_most_its_distinct_texts_and_one_answer() -> None:
    embeddings = np.repeat(np.eye(4), 3, axis=0)  # 4 distinct texts, each 3 times
    probabilities = np.full((12, 2), 0.5)
    first = rank_pool(probabilities, embeddings, 10)
    assert len(first) == 4
    assert [s.index for s in first] == [s.index for s in rank_pool(probabilities, embeddings, 10)]
    multi = rank_pool(probabilities, embeddings, 2, thresholds=np.array([0.5, 0.5]))
    assert [s.reason for s in multi] == ["near_threshold", "near_threshold"]
    assert rank_pool(probabilities[:0], embeddings[:0], 3) == []


def test_folds_spread_every_label_evenly() -> None:
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 3
    folds = fold_of(len(labels), labels, folds=5)
    for label in "ab":
        counts = np.bincount(folds[[i for i, x in enumerate(labels) if x == label]], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert len(set(folds[15:].tolist())) == 3  # a small label's examples in different folds


def test_flipped_labels_are_the_top_suspects_with_their_true_label_suggested() -> None:
    embeddings, labels = clusters(12, 5, seed=2)
    noisy = list(labels)
    flipped = {3: "c1", 20: "c4", 40: "c0"}
    for row, label in flipped.items():
        noisy[row] = label
    found = audit(embeddings, noisy)
    top = found.suspects[:len(flipped)]
    assert {s.index for s in top} == set(flipped)
    assert all(s.suggested == labels[s.index] and s.why == "disagrees" and s.score > 0 for s in top)
    assert found.thin == {}


def test_a_clean_set_has_few_suspects_and_thin_labels_are_reported_not_audited() -> None:
    embeddings, labels = clusters(12, 4, seed=3)
    found = audit(embeddings, labels)
    assert len(found.suspects) <= 1
    thin_embeddings = np.concatenate([embeddings, np.eye(16)[10:12]])
    thin = audit(thin_embeddings, [*labels, "rare", "rare"])
    assert thin.thin == {"rare": 2}
    assert thin_labels(["x"] * MIN_LABEL_EXAMPLES) == {}
    assert all(s.index < len(labels) for s in thin.suspects)


def test_none_of_these_examples_are_a_class_of_their_own() -> None:
    embeddings, labels = clusters(10, 3, seed=4)
    labels = [NONE_OF_THESE if label == "c2" else label for label in labels]
    labels[0] = NONE_OF_THESE  # a c0 text marked as none of the labels
    suspects = audit(embeddings, labels).suspects
    assert suspects[0].index == 0 and suspects[0].suggested == "c0"


def test_near_duplicates_with_different_labels_are_both_suspects() -> None:
    embeddings = np.array([[1.0, 0.0, 0.0], [0.999, 0.01, 0.0], [0.0, 1.0, 0.0]])
    found = near_duplicates(embeddings, ["a", "b", "b"])
    assert {(s.index, s.suggested, s.other_index) for s in found} == {(0, "b", 1), (1, "a", 0)}
    assert near_duplicates(embeddings, ["a", "a", "b"]) == []


def test_a_multi_label_set_gets_the_turned_label_suggested() -> None:
    embeddings, labels = clusters(12, 4, seed=5)
    label_sets = [[label] + (["extra"] if label == "c3" else []) for label in labels]
    label_sets[5] = ["c0", "extra"]  # a c0 text wrongly given `extra`
    found = audit_multi_label(embeddings, label_sets)
    assert found.suspects[0].index == 5
    assert found.suspects[0].suggested == ("c0",)


def test_a_pool_is_the_sent_texts_then_the_logged_ones_each_once_and_none_labelled() -> None:
    from fewshot.api.learning import gather_pool

    pool = gather_pool(["a", "b", "a", "x"], ["c", "b", "d", "e"], {"x", "d"}, max_texts=5)
    assert pool.texts == ["a", "b", "c"] and pool.already_labelled == 2 and pool.logged == 1
    assert gather_pool([], ["c", "d"], set(), max_texts=1).texts == ["c"]


def test_of_each_group_the_typical_uncertain_text_is_suggested_not_its_outlier() -> None:
    rng = np.random.default_rng(7)
    centre = rng.standard_normal(16)
    group = centre + 0.05 * rng.standard_normal((12, 16))  # a tight group of similar texts
    outlier = centre + 1.2 * rng.standard_normal(16)  # a little more uncertain, but like nothing else
    embeddings = np.vstack([group, outlier])
    uncertainty = np.append(np.full(12, 0.8), 0.85)
    typical = typicality(normalized(embeddings))
    assert typical[:12].min() > typical[12]
    assert select(uncertainty, embeddings, 1)[0].index != 12
    assert select(uncertainty, embeddings, 1, diverse=False)[0].index == 12


def test_ranking_the_shortlist_answers_as_ranking_the_whole_pool() -> None:
    """Only the shortlist is embedded for a suggestion: it must not change what is suggested."""
    generator = np.random.default_rng(7)
    centres = generator.normal(size=(12, 32))
    points = centres[generator.integers(12, size=3000)] + generator.normal(scale=0.6, size=(3000, 32))
    logits = generator.normal(size=(3000, 6)) * generator.uniform(0.2, 4, size=(3000, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labelled = points[:50] + generator.normal(scale=0.01, size=(50, 32))  # near copies: never suggested
    abstained = generator.random(3000) < 0.002
    for k in (1, 5, 20):
        whole = rank_pool(probabilities, points, k, labelled, abstained=abstained)
        rows = shortlist(probabilities, k, abstained=abstained)
        assert len(rows) == SHORTLIST_PER_PICK * k and list(rows) == sorted(rows)
        assert set(np.flatnonzero(abstained)) <= set(rows.tolist())  # refused texts rank as fully uncertain
        short = rank_pool(probabilities[rows], points[rows], k, labelled, abstained=abstained[rows])
        assert [(int(rows[s.index]), s.uncertainty) for s in short] == [(s.index, s.uncertainty) for s in whole]
