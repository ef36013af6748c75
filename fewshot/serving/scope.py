"""How far a text lies from everything a version was trained on: its out-of-scope score.

A version's head answers the most probable of *its* labels; how probable says little about a text
that is none of them (a foreign text often lands far from every label and still gets a confident
answer). Distance in the body's embedding space says it directly. Measured on Banking77-OOS (50
intents × 8 shots, bench/results/out-of-scope-20261204T135539Z), out-of-scope texts were told apart
from in-scope ones with AUROC 0.9998 (out of domain) by the cosine similarity to the nearest
training example, against 0.987 by the head's top probability; a class-conditional Mahalanobis
distance did no better than that nearest neighbour and costs a covariance, so the score is:

    scope score = s_in − max(0, s_none − s_in)

s_in: the cosine similarity to the nearest in-scope training example; s_none: to the nearest
`label: null` one (known negatives: a text nearer one of them than any in-scope example is pushed
down by the difference, so negatives sharpen the score instead of only adding a class). Higher is
more in scope; a version abstains below its calibrated threshold (trainers/scope.py).

The training embeddings (unit rows, float32) are kept in the version's files (SCOPE_FILE, numpy's
own format, read without pickle): a matrix product per batch, ~1.5–4 µs per text for 400 of them.
Pure numpy: the serving paths with and without torch share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fewshot.learning.selection import normalized

SCOPE_FILE = "fewshot_scope.npz"
"""In a version's files: the unit-length embeddings of its training examples, in scope and not."""
KNN = "knn"
"""The score's name in a version's metadata (`scope.score`)."""


@dataclass(frozen=True)
class ScopeIndex:
    """A version's training embeddings, as its scope score reads them."""

    in_scope: np.ndarray
    """Unit rows: the embeddings of the examples with a label."""
    negatives: np.ndarray
    """Unit rows: the embeddings of the `label: null` examples (none: shape (0, d))."""

    @classmethod
    def of(cls, in_scope: np.ndarray, negatives: np.ndarray | None = None) -> ScopeIndex:
        in_scope = normalized(in_scope)
        empty = np.empty((0, in_scope.shape[1]), dtype=np.float32)
        return cls(in_scope, empty if negatives is None or not len(negatives) else normalized(negatives))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Each embedding's scope score (module docstring); -1 nearest similarity without in-scope examples."""
        queries = normalized(embeddings)
        nearest = _nearest(queries, self.in_scope)
        if len(self.negatives):
            nearest = nearest - np.maximum(0.0, _nearest(queries, self.negatives) - nearest)
        return nearest

    def save(self, directory: Path) -> None:
        np.savez(directory / SCOPE_FILE, in_scope=self.in_scope, negatives=self.negatives)

    @classmethod
    def load(cls, directory: Path) -> ScopeIndex | None:
        """The index a version stored; None for a version without one (trained before scores, or multi-label)."""
        path = directory / SCOPE_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:  # a downloaded model never runs code when loaded
            return cls(*(np.asarray(saved[part], dtype=np.float32) for part in ("in_scope", "negatives")))


def _nearest(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    if not len(points):
        return np.full(len(queries), -1.0, dtype=np.float32)
    return (queries @ points.T).max(axis=1)
