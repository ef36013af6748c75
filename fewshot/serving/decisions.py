"""From a version's probabilities to its answers: the most probable label (single-label), every
label over its threshold (multi-label), or none of them (abstention).

Pure numpy and pydantic. The trainers score a version with these same functions, so the metrics a
version reports are those of the answers it serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fewshot.serving.items import ItemPrediction, LabelScore, TextItem
from fewshot.serving.labels import top_labels
from fewshot.serving.scope import ScopeIndex

Task = Literal["single_label", "multi_label"]
SINGLE_LABEL: Task = "single_label"
MULTI_LABEL: Task = "multi_label"
DEFAULT_THRESHOLD = 0.5
"""A multi-label version's thresholds when nothing could be learned (no evaluation examples, or
none with any label: trainers/thresholds.py), and SetFit's own."""

Column = str | None
"""A probability column's label; None is the "none of these" column of a single-label version
trained with `label: null` examples."""


def multi_label_sets(probabilities: np.ndarray, columns: Sequence[str], thresholds: np.ndarray) -> list[list[str]]:
    """Per row, the labels whose probability reaches their threshold, most probable first.
    `thresholds`: one per column, or one per row and column."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    over = probabilities >= thresholds
    return [[columns[i] for i in row if chosen[i]] for row, chosen in zip(order, over, strict=True)]


@dataclass(frozen=True)
class SingleLabelAnswers:
    labels: list[str | None]
    """The answer: the most probable real label, or None where the version abstained."""
    scores: list[float]
    """The most probable real label's probability (also where it abstained)."""
    abstained: np.ndarray
    none_of_these: np.ndarray
    """Where the "none of these" column is the most probable (a version trained with `label: null` examples)."""


def single_label_answers(probabilities: np.ndarray, columns: Sequence[Column],
                         thresholds: float | np.ndarray | None) -> SingleLabelAnswers:
    """The most probable real label of each row, or an abstention: where the "none of these"
    column is the most probable, or the best real label's probability is below `thresholds`
    (one, or one per row; NaN or None: no threshold)."""
    real = [i for i, column in enumerate(columns) if column is not None]
    best_real = np.asarray(real)[probabilities[:, real].argmax(axis=1)]
    scores = probabilities[np.arange(len(probabilities)), best_real]
    none_of_these = np.zeros(len(probabilities), dtype=bool)
    if len(real) < len(columns):
        none_of_these = probabilities.argmax(axis=1) != best_real
    abstained = none_of_these.copy()
    if thresholds is not None:
        with np.errstate(invalid="ignore"):
            abstained |= scores < np.asarray(thresholds, dtype=np.float64)  # NaN compares False
    answers = [None if refused else columns[i] for i, refused in zip(best_real, abstained, strict=True)]
    return SingleLabelAnswers(answers, [float(s) for s in scores], abstained, none_of_these)


@dataclass(frozen=True)
class DecisionRule:
    """How one version answers, from what training stored in its metadata."""

    name: str
    task: Task
    columns: list[Column]
    thresholds: np.ndarray | None
    """Multi-label: each column's threshold."""
    abstention_threshold: float | None
    """Single-label, a version without a scope: the top probability below which it abstains (when asked
    to, or always if it refuses)."""
    scope: ScopeIndex | None = None
    """Single-label: its training embeddings, for the scope score (fewshot/serving/scope.py)."""
    scope_threshold: float | None = None
    """The scope score below which it abstains; where set, it replaces `abstention_threshold`."""

    @property
    def scoped(self) -> bool:
        """Abstains by its scope score (versions trained since it exists), not its top probability."""
        return self.scope is not None and self.scope_threshold is not None

    @property
    def refuses(self) -> bool:
        """Trained with "none of these" examples: always abstains where they say so."""
        return None in self.columns

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], columns: list[Column],
                      scope: ScopeIndex | None = None) -> DecisionRule:
        """`scope`: the index the version stored (ScopeIndex.load), None for one that has none."""
        task: Task = metadata.get("task", SINGLE_LABEL)  # versions from before multi-label are single-label
        if task == MULTI_LABEL:
            learned = metadata.get("thresholds") or {}
            thresholds = np.asarray([learned.get(column, DEFAULT_THRESHOLD) for column in columns])
            return cls(name, task, columns, thresholds, None)
        abstention = metadata.get("abstention") or {}
        # a version from before the scope score keeps abstaining by its top probability until retrained
        return cls(name, task, columns, None, abstention.get("threshold"), scope,
                   (metadata.get("scope") or {}).get("threshold"))

    def reads_embeddings(self, items: Sequence[TextItem]) -> bool:
        """Whether answering `items` needs the body's embeddings too (some abstain by the scope score)."""
        return self.task == SINGLE_LABEL and self.scoped and any(self._by_scope(item) for item in items)

    def answer(self, probabilities: np.ndarray, items: Sequence[TextItem],
               embeddings: np.ndarray | None = None) -> list[ItemPrediction]:
        """`embeddings`: the body's, of the same texts, where `reads_embeddings` says they are needed."""
        if self.task == MULTI_LABEL:
            return self._multi_label(probabilities, items)
        return self._single_label(probabilities, items, embeddings)

    def _abstains(self, item: TextItem) -> bool:
        return self.refuses or item.abstain or item.threshold is not None

    def _by_scope(self, item: TextItem) -> bool:
        """An explicit `threshold` is on the top probability: it replaces the learned rule, scope included."""
        return self.scoped and self._abstains(item) and item.threshold is None

    def _ranked(self, probabilities: np.ndarray, items: Sequence[TextItem], everything: np.ndarray
                ) -> list[list[LabelScore] | None]:
        """Each row's `scores`: its top_k labels, else all of them where `everything` says so, else None.
        Requests in one batch may ask for different k: ranked once for the largest, cut per item."""
        real = [i for i, column in enumerate(self.columns) if column is not None]
        wanted = [item.top_k or (len(real) if whole else 0) for item, whole in zip(items, everything, strict=True)]
        ranked = top_labels(probabilities[:, real], [self.columns[i] for i in real], max(wanted, default=0))
        return [[LabelScore(label=label, score=score) for label, score in row[:k]] if k else None
                for row, k in zip(ranked, wanted, strict=True)]

    def _multi_label(self, probabilities: np.ndarray, items: Sequence[TextItem]) -> list[ItemPrediction]:
        assert self.thresholds is not None
        if any(item.abstain for item in items):
            return [ItemPrediction(error=f"abstain: is for single-label models; {self.name} is multi-label, and "
                                         "answers `labels: []` for a text where no label reaches its threshold")
                    if item.abstain else ItemPrediction() for item in items]
        thresholds = np.stack([np.full(len(self.columns), item.threshold) if item.threshold is not None
                               else self.thresholds for item in items])
        chosen = multi_label_sets(probabilities, self.columns, thresholds)  # type: ignore[arg-type]
        best = probabilities.argmax(axis=1)
        scores = self._ranked(probabilities, items, np.ones(len(items), dtype=bool))
        return [ItemPrediction(label=self.columns[i], score=float(row[i]), labels=labels, scores=ranked)
                for i, row, labels, ranked in zip(best, probabilities, chosen, scores, strict=True)]

    def _single_label(self, probabilities: np.ndarray, items: Sequence[TextItem],
                      embeddings: np.ndarray | None) -> list[ItemPrediction]:
        abstaining = np.asarray([self._abstains(item) for item in items])
        by_scope = np.asarray([self._by_scope(item) for item in items])
        cannot = f"abstain: {self.name} has no learned abstention threshold (it had no evaluation examples); pass " \
                 "`threshold`"
        errors = [cannot if item.abstain and item.threshold is None and self.abstention_threshold is None
                  and not self.scoped and not self.refuses else None for item in items]
        thresholds = np.asarray([
            item.threshold if item.threshold is not None else
            self.abstention_threshold if wanted and not scoped and self.abstention_threshold is not None else np.nan
            for item, wanted, scoped in zip(items, abstaining, by_scope, strict=True)], dtype=np.float64)
        answers = single_label_answers(probabilities, self.columns, thresholds)
        scope_scores = np.full(len(items), np.nan)
        foreign = np.zeros(len(items), dtype=bool)
        if by_scope.any():
            assert self.scope is not None and self.scope_threshold is not None and embeddings is not None
            scope_scores[by_scope] = self.scope.scores(embeddings[by_scope])
            foreign = scope_scores < self.scope_threshold  # NaN (not by scope) compares False
        abstained = answers.abstained | foreign
        reasons = np.where(answers.none_of_these, "none_of_these",
                           np.where(foreign, "out_of_scope", np.where(abstained, "low_confidence", "")))
        labels = [None if refused else label for label, refused in zip(answers.labels, abstained, strict=True)]
        ranked_scores = self._ranked(probabilities, items, abstained)
        return [ItemPrediction(error=error) if error else
                ItemPrediction(label=label, score=score, scores=ranked, abstained=bool(refused) if wanted else None,
                               reason=str(reason) or None,
                               scope_score=round(float(scope), 6) if not np.isnan(scope) else None)
                for label, score, ranked, refused, wanted, error, reason, scope in zip(
                    labels, answers.scores, ranked_scores, abstained, abstaining, errors, reasons, scope_scores,
                    strict=True)]
