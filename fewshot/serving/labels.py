"""How a trained SetFit model's outputs map back to the user's label strings."""

from __future__ import annotations

from typing import Any

import numpy as np


def column_labels(head: Any, labels: list[str], refuses: bool = False) -> list[str | None]:
    """The label of each `predict_proba` column of `head` (a SetFit model's head), in column order.

    The head is trained on label indices (`labels` is the sorted label list; a version trained with
    "none of these" examples has one more class, index len(labels), whose column is None); sklearn
    heads order their columns by `classes_`, the differentiable head by index.
    """
    named: list[str | None] = [*labels, None] if refuses else list(labels)
    classes = getattr(head, "classes_", None)
    column_ids = [int(c) for c in classes] if classes is not None else list(range(len(named)))
    return [named[i] for i in column_ids]


def best_labels(probabilities: np.ndarray, columns: list[str | None]) -> tuple[list[str | None], list[float]]:
    """The most probable label of each row and its probability."""
    best = probabilities.argmax(axis=1)
    scores = probabilities[np.arange(len(best)), best]
    return [columns[i] for i in best], [float(s) for s in scores]


def top_labels(probabilities: np.ndarray, columns: list[str], k: int) -> list[list[tuple[str, float]]]:
    """The `k` most probable labels of each row with their probabilities, most probable first."""
    if k <= 0:
        return [[] for _ in range(len(probabilities))]
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(columns[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order, strict=True)]
