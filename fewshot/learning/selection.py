"""Which unlabelled texts would teach a model most: uncertain ones, typical ones, and no two alike.

Batch active learning. Uncertainty alone (margin sampling) fills a batch with near-copies of the
one confusing phrasing, which teach no more than one of them; spreading alone (k-center greedy,
also `uncertainty × distance`, which we measured first) spends the labels on outliers: on
banking77 it did worse than random texts (bench/active_learning.py). So, as Cluster-Margin
(Citovsky et al., 2021) does: the `CANDIDATES_PER_PICK × k` most uncertain texts are clustered into
`k` groups in the served body's embedding space, and one text of each group is suggested: the one
with the largest uncertainty × typicality (its mean similarity to its nearest candidates; as
TypiClust, Hacohen et al. 2022, prefers typical texts when labels are few). The benchmark chose
these over taking each group's most uncertain text and over 10 candidates per pick (banking77 and
trec6 both ended ahead of pure margin at every round). Texts closer than NEAR_DUPLICATE_DISTANCE to
a labelled or an already suggested one are never suggested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Reason = Literal["uncertain", "abstained", "near_threshold"]

NEAR_DUPLICATE_DISTANCE = 0.05
"""Cosine distance under which two texts count as one (MiniLM: rephrasings of one sentence that
differ in a word or in punctuation are ~0.01–0.04 apart, different intents rarely under 0.15)."""


@dataclass(frozen=True)
class Suggestion:
    index: int
    """Row of the pool."""
    uncertainty: float
    """In [0, 1]: 1 where the model cannot tell its top two labels (or a label's threshold) apart."""
    reason: Reason


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """Single-label: 1 − (best − second best probability), per row."""
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities))
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def threshold_uncertainty(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Multi-label: how close the label nearest its threshold is to it, per row, in [0, 1] (1: on
    it; 0: every label at 0 or 1). Distances are relative to the room on that side of the threshold."""
    thresholds = np.clip(thresholds, 1e-6, 1 - 1e-6)
    room = np.where(probabilities < thresholds, thresholds, 1.0 - thresholds)
    closeness = 1.0 - np.abs(probabilities - thresholds) / room
    return np.clip(closeness.max(axis=1), 0.0, 1.0)


def normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _nearest_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Cosine distance from each of `points` to its nearest among `others` (unit rows); 1 if none."""
    if len(others) == 0:
        return np.ones(len(points), dtype=np.float32)
    nearest = np.full(len(points), np.inf, dtype=np.float32)
    for start in range(0, len(others), 2048):  # bounded memory for large labelled sets
        similarity = points @ others[start:start + 2048].T
        nearest = np.minimum(nearest, 1.0 - similarity.max(axis=1))
    return np.clip(nearest, 0.0, 2.0)


CANDIDATES_PER_PICK = 5
"""The most uncertain `k × this` texts are clustered into `k` groups, one pick each."""
NEIGHBOURS = 10
"""Typicality: the mean cosine similarity of a candidate to this many nearest other candidates."""


def typicality(points: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """How typical each unit row is of its neighbourhood among `points`: the mean cosine similarity to
    its nearest `neighbours` others (clipped to a small positive floor)."""
    count = min(neighbours, len(points) - 1)
    if count < 1:
        return np.ones(len(points))
    typical = np.empty(len(points))
    for start in range(0, len(points), 1024):
        similarity = points[start:start + 1024] @ points.T
        typical[start:start + 1024] = np.sort(similarity, axis=1)[:, -count - 1:-1].mean(axis=1)
    return np.clip(typical, 1e-6, None)


def kmeans(points: np.ndarray, clusters: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """Each row's cluster (k-means++ start, Lloyd iterations, cosine on unit rows)."""
    generator = np.random.default_rng(seed)
    centres = [points[generator.integers(len(points))]]
    nearest = 1.0 - points @ centres[0]
    for _ in range(1, clusters):
        weights = np.clip(nearest, 0.0, None) ** 2
        total = weights.sum()
        pick = generator.choice(len(points), p=weights / total) if total > 0 else generator.integers(len(points))
        centres.append(points[pick])
        nearest = np.minimum(nearest, 1.0 - points @ points[pick])
    centre_matrix = np.stack(centres)
    assignment = np.zeros(len(points), dtype=np.int64)
    for _ in range(iterations):
        assignment = np.argmax(points @ centre_matrix.T, axis=1)
        for cluster in range(clusters):
            members = points[assignment == cluster]
            if len(members):
                mean = members.mean(axis=0)
                centre_matrix[cluster] = mean / max(np.linalg.norm(mean), 1e-12)
    return assignment


def select(uncertainty: np.ndarray, embeddings: np.ndarray, k: int, labelled: np.ndarray | None = None,
           diverse: bool = True, abstained: np.ndarray | None = None,
           reason: Reason = "uncertain") -> list[Suggestion]:
    """Up to `k` rows of the pool to label next, most uncertain first.

    `uncertainty`: per row, in [0, 1] (margin_uncertainty, threshold_uncertainty). `embeddings`: the
    pool's, one row each; `labelled`: the example set's (never suggested, nor texts within
    NEAR_DUPLICATE_DISTANCE of them). `abstained`: rows the model refuses (none of its labels); they
    rank as fully uncertain. `diverse=False` is pure uncertainty ranking (the benchmark's baseline),
    still without near-duplicates. Fewer than `k` come back when the pool has fewer distinct texts.
    """
    count = len(uncertainty)
    if count == 0 or k <= 0:
        return []
    points = normalized(embeddings)
    refused = np.zeros(count, dtype=bool) if abstained is None else np.asarray(abstained, dtype=bool)
    score_of = np.where(refused, 1.0, np.clip(uncertainty, 0.0, 1.0)).astype(np.float64)
    known = normalized(labelled) if labelled is not None and len(labelled) else \
        np.empty((0, points.shape[1]), dtype=np.float32)
    eligible = np.flatnonzero(_nearest_distance(points, known) >= NEAR_DUPLICATE_DISTANCE)
    # Most uncertain first; ties broken by pool order, so that one pool always gives one answer.
    ranked = eligible[np.argsort(-score_of[eligible], kind="stable")]
    if diverse and len(ranked) > k:
        candidates = ranked[:CANDIDATES_PER_PICK * k]
        groups = kmeans(points[candidates], min(k, len(candidates)))
        # Of each group, the text most uncertain and most typical of the group's neighbourhood (an
        # outlier teaches the model about itself only); those first, most uncertain first, then the
        # rest in order of uncertainty (when near-duplicates leave too few).
        value = score_of[candidates] * typicality(points[candidates])
        firsts = [int(candidates[members[np.argmax(value[members])]])
                  for members in (np.flatnonzero(groups == group) for group in np.unique(groups))]
        firsts.sort(key=lambda row: (-score_of[row], row))
        first_set = set(firsts)
        ranked = np.array(firsts + [int(row) for row in ranked if int(row) not in first_set], dtype=np.int64)
    chosen: list[Suggestion] = []
    picked: list[int] = []
    for row in ranked:
        if len(chosen) == k:
            break
        if picked and (1.0 - points[picked] @ points[row]).min() < NEAR_DUPLICATE_DISTANCE:
            continue
        picked.append(int(row))
        chosen.append(Suggestion(index=int(row), uncertainty=float(score_of[row]),
                                 reason="abstained" if refused[row] else reason))
    return sorted(chosen, key=lambda suggestion: (-suggestion.uncertainty, suggestion.index))


SHORTLIST_PER_PICK = 4 * CANDIDATES_PER_PICK
"""`shortlist`'s size per pick: four times the candidates, so that near-duplicates of labelled texts
may take three in four of the most uncertain and still leave `select` the candidates it clusters."""


def uncertainty_of(probabilities: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Per row, in [0, 1]: closeness to a multi-label version's `thresholds`, else the margin's."""
    return margin_uncertainty(probabilities) if thresholds is None else \
        threshold_uncertainty(probabilities, thresholds)


def shortlist(probabilities: np.ndarray, k: int, thresholds: np.ndarray | None = None,
              abstained: np.ndarray | None = None, size: int | None = None) -> np.ndarray:
    """The rows, in pool order, that `rank_pool` can choose from: the `size` (default
    SHORTLIST_PER_PICK × k) most uncertain, abstained ones first. Only these need embedding: on a
    pool of 10,000 the embeddings of all of them doubled the body's work of a suggestion, for
    rows that never reach the candidates. `rank_pool` on the shortlist answers as on the whole pool
    whenever near-duplicates leave it CANDIDATES_PER_PICK × k candidates."""
    score = np.clip(uncertainty_of(probabilities, thresholds), 0.0, 1.0)
    if abstained is not None:
        score = np.where(np.asarray(abstained, dtype=bool), 1.0, score)
    ranked = np.argsort(-score, kind="stable")
    return np.sort(ranked[:size if size is not None else SHORTLIST_PER_PICK * k])


def rank_pool(probabilities: np.ndarray, embeddings: np.ndarray, k: int, labelled: np.ndarray | None = None,
              thresholds: np.ndarray | None = None, abstained: np.ndarray | None = None,
              diverse: bool = True) -> list[Suggestion]:
    """The texts of a pool to label next: `probabilities` are the served version's (one column per
    label), `thresholds` a multi-label version's per label (then closeness to them is the
    uncertainty, else the margin between the two most probable labels)."""
    return select(uncertainty_of(probabilities, thresholds), embeddings, k, labelled, diverse, abstained,
                  reason="uncertain" if thresholds is None else "near_threshold")
