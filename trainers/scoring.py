"""A stored version scored on a new version's evaluation examples, as the new one was: what a
retrain's promotion rule compares (trainers/promotion.py)."""

from __future__ import annotations

import numpy as np

from fewshot.serving.labels import best_labels, column_labels
from fewshot.store import StoredModel
from trainers.embedding_cache import EmbeddingCache
from trainers.heads import load_safe_head
from trainers.holdout import Evaluation, evaluate
from trainers.thresholds import evaluate_multi_label
from trainers.training import Split, version_body_with


def score_version(version: StoredModel, split: Split, same_body_embeddings: EmbeddingCache | None = None) -> Evaluation:
    """Accuracy (multi-label: micro F1 with thresholds learned as a new version's are) and per-label
    metrics of `version` on `split`'s evaluation examples, over `split`'s labels (an answer the split
    no longer has a label for counts as none). Its head is read from its safe copy, never its pickle.
    `same_body_embeddings`: the evaluation texts embedded by the very body `version` has (a head
    retrain from it), so that its body is not loaded again."""
    texts = [text for text, _ in split.evaluation]
    head = load_safe_head(version.path)
    if same_body_embeddings is not None and all(text in same_body_embeddings for text in texts):
        probabilities = np.asarray(head.predict_proba(np.stack([same_body_embeddings[text] for text in texts])))
    else:
        model = version_body_with(version.path, head)
        probabilities = np.asarray(model.predict_proba(texts, as_numpy=True, show_progress_bar=False))
    if isinstance(probabilities, list):
        probabilities = np.stack(probabilities, axis=1)
    columns = column_labels(head, version.labels, refuses=version.refuses)
    expected = [target for _, target in split.evaluation]
    if split.multi_label:
        known = [label if label in split.labels else None for label in columns]
        kept = [i for i, label in enumerate(known) if label is not None]
        return evaluate_multi_label(probabilities[:, kept], [known[i] for i in kept], expected,  # type: ignore[misc]
                                    split.labels)
    predicted, _ = best_labels(probabilities, columns)
    return evaluate(expected, [label if label in split.labels else None for label in predicted], split.labels)
