"""From the served version's answers to the learning routes' answers (suggest, feedback, suspects):
turning predictions into probability matrices, and the maths' row numbers back into examples.

The gateway gathers the answers (from the inference service and the example set); the maths is
fewshot/learning; the schemas are fewshot/api/learning_schemas.py.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from fewshot.api.learning_schemas import Suggestion, SuggestResponse, Suspect, SuspectsResponse, ThinLabel
from fewshot.learning.audit import MIN_LABEL_EXAMPLES, NONE_OF_THESE, Audit, audit, audit_multi_label
from fewshot.learning.selection import Suggestion as Picked
from fewshot.records.examples import StoredExample
from fewshot.serving.items import ItemPrediction
from fewshot.store import StoredModel


@dataclass(frozen=True)
class Pool:
    texts: list[str]
    """What to rank: each text once, none in the example set."""
    already_labelled: int
    logged: int
    """Of `texts`, those only the prediction log gave."""


def gather_pool(sent: Sequence[str], logged: Sequence[str], labelled: Collection[str], max_texts: int) -> Pool:
    """The texts sent, then the logged ones (newest first) up to `max_texts` in all; repeats once, and
    texts of the example set left out (counted)."""
    sent_once = list(dict.fromkeys(sent))
    extra = [text for text in dict.fromkeys(logged) if text not in set(sent_once)][:max(0, max_texts - len(sent_once))]
    considered = sent_once + extra
    texts = [text for text in considered if text not in labelled]
    return Pool(texts=texts, already_labelled=len(considered) - len(texts),
                logged=sum(text not in labelled for text in extra))


def is_multi_label(version: StoredModel) -> bool:
    return version.metadata.get("task") == "multi_label"


def probability_matrix(version: StoredModel, answers: Sequence[ItemPrediction]) -> np.ndarray:
    """One row per answer, one column per label of the version (`scores` asked for every label)."""
    column = {label: index for index, label in enumerate(version.labels)}
    matrix = np.zeros((len(answers), len(column)))
    for row, answer in enumerate(answers):
        for scored in answer.scores or []:
            if scored.label in column:
                matrix[row, column[scored.label]] = scored.score
    return matrix


def thresholds_of(version: StoredModel) -> np.ndarray | None:
    """A multi-label version's threshold per label, in label order (0.5 where it learned none)."""
    if not is_multi_label(version):
        return None
    learned = version.metadata.get("thresholds") or {}
    return np.array([float(learned.get(label, 0.5)) for label in version.labels])


def suggestions_view(version: StoredModel, pool: Pool, answers: Sequence[ItemPrediction],
                     picked: Sequence[Picked]) -> SuggestResponse:
    multi = is_multi_label(version)
    return SuggestResponse(
        suggestions=[Suggestion(text=pool.texts[p.index], score=round(p.uncertainty, 4), reason=p.reason,
                                **({"labels": answers[p.index].labels or []} if multi else
                                   {"label": answers[p.index].label}))
                     for p in picked],
        model_version=version.tag, pool=len(pool.texts), already_labelled=pool.already_labelled, logged=pool.logged)


def audit_set(vectors: np.ndarray, examples: Sequence[StoredExample]) -> Audit:
    """The label audit of an example set (its rows embedded as `vectors`): by label, with NONE_OF_THESE
    for `label: null` examples, or by label set for a multi-label set."""
    if examples and examples[0].labels is not None:
        return audit_multi_label(vectors, [list(example.labels or []) for example in examples])
    return audit(vectors, [example.label if example.label is not None else NONE_OF_THESE for example in examples])


def suspects_view(version: StoredModel, examples: Sequence[StoredExample], found: Audit,
                  limit: int) -> SuspectsResponse:
    multi = bool(examples) and examples[0].labels is not None

    def suggested(value: str | tuple[str, ...]) -> dict[str, object]:
        if multi:
            return {"suggested_labels": list(value)}
        return {"suggested_label": None if value == NONE_OF_THESE else value}

    suspects = []
    for suspect in found.suspects[:limit]:
        example = examples[suspect.index]
        suspects.append(Suspect(
            id=example.id, text=example.text, score=round(suspect.score, 4), reason=suspect.why,
            **({"labels": example.labels} if multi else {"label": example.label}), **suggested(suspect.suggested),
            conflicts_with=examples[suspect.other_index].id if suspect.other_index is not None else None))
    return SuspectsResponse(
        suspects=suspects, examples=len(examples), model_version=version.tag,
        thin_labels=[ThinLabel(label=label or "(none of these)", examples=count, needed=MIN_LABEL_EXAMPLES)
                     for label, count in found.thin.items()])
