"""Both versions of a retrain answer the same texts: the evidence a promotion decides on when the
served version's training set cannot be refitted per fold (trainers/promotion.py, `unseen`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewshot.records.embedding_cache import EmbeddingCache
from fewshot.records.outcomes import Target, target_labels
from fewshot.serving.decisions import DEFAULT_THRESHOLD
from fewshot.serving.labels import best_labels, column_labels
from fewshot.serving.long_texts import TRUNCATE
from fewshot.store import StoredModel
from trainers.heads import load_safe_head
from trainers.long_texts import embed_texts
from trainers.promotion import PairedScores
from trainers.training import TrainedClassifier, embed, version_body_with


def version_probabilities(version: StoredModel, texts: Sequence[str],
                          same_body_embeddings: EmbeddingCache | None = None) -> tuple[np.ndarray, list[str | None]]:
    """`version`'s probabilities of `texts` and the label of each column. Its head is read from its safe
    copy, never its pickle. `same_body_embeddings`: the texts embedded by the very body `version` has,
    so that its body is not loaded again."""
    head = load_safe_head(version.path)
    if same_body_embeddings is not None and all(text in same_body_embeddings for text in texts):
        probabilities = np.asarray(head.predict_proba(np.stack([same_body_embeddings[text] for text in texts])))
    else:
        model = version_body_with(version.path, head)
        probabilities = head.predict_proba(embed_texts(model, list(texts), version.metadata.get("long_texts")
                                                       or TRUNCATE))
    if isinstance(probabilities, list):  # one-vs-rest heads may answer one array per label
        probabilities = np.stack(probabilities, axis=1)
    return np.asarray(probabilities), column_labels(head, version.labels, refuses=version.refuses)


def paired_on(texts: Sequence[tuple[str, Target]], served: tuple[np.ndarray, list[str | None]],
              new: tuple[np.ndarray, list[str | None]], multi_label: bool,
              served_thresholds: dict[str, float] | None = None,
              new_thresholds: dict[str, float] | None = None) -> PairedScores:
    """Right or not, and the probability of the right answer, of both versions on each text.
    Multi-label: right when the text's labels are exactly those over each version's thresholds; the
    probability is the mean, over the labels either version knows, of that given to the right decision."""
    targets = [target for _, target in texts]
    outcomes = []
    for (probabilities, columns), thresholds in ((served, served_thresholds), (new, new_thresholds)):
        if multi_label:
            outcomes.append(_multi_label_outcome(probabilities, columns, targets, thresholds or {}))
        else:
            answers, _ = best_labels(probabilities, columns)
            index = {label: i for i, label in enumerate(columns)}
            probability = np.array([probabilities[row, index[target]] if target in index else 0.0
                                    for row, target in enumerate(targets)])
            outcomes.append((np.array([a == t for a, t in zip(answers, targets, strict=True)]), probability, answers))
    (served_right, served_probability, served_answers), (new_right, new_probability, new_answers) = outcomes
    return PairedScores("unseen_texts", targets, served_right, new_right, served_probability, new_probability,
                        served_answers, new_answers)


def _multi_label_outcome(probabilities: np.ndarray, columns: list[str | None], targets: list[Target],
                         thresholds: dict[str, float]) -> tuple[np.ndarray, np.ndarray, list[Target]]:
    over = np.array([[probabilities[row, i] >= thresholds.get(str(label), DEFAULT_THRESHOLD)
                      for i, label in enumerate(columns)] for row in range(len(targets))])
    answers: list[Target] = [tuple(sorted(str(columns[i]) for i in np.flatnonzero(row))) for row in over]
    right = np.array([set(answer or ()) == set(target_labels(target)) for answer, target in zip(answers, targets,
                                                                                                 strict=True)])
    wanted = np.array([[label in target_labels(target) for label in columns] for target in targets])
    probability = np.where(wanted, probabilities, 1 - probabilities).mean(axis=1) if len(columns) else \
        np.zeros(len(targets))
    return right, probability, answers


def new_version_probabilities(trained: TrainedClassifier, texts: Sequence[str],
                              refuses: bool) -> tuple[np.ndarray, list[str | None]]:
    """The just-trained version's probabilities of `texts` (its embeddings of them are cached)."""
    cache = trained.embeddings if trained.embeddings is not None else {}
    probabilities = np.asarray(trained.model.model_head.predict_proba(
        embed(trained.model, list(texts), cache, trained.long_texts_policy)))
    return probabilities, column_labels(trained.model.model_head, trained.labels, refuses=refuses)
