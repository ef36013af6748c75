"""How a batch of the inference service is cut: by model, then into length-aware forward passes.

A batch merges the texts of many requests (BentoML's adaptive batching); each model's share runs
on that model (`positions_by_model`), in passes cut so that padding costs little (`plan_sub_batches`):
a transformer pads every text of a forward pass to the longest one, so one pass over 64 texts
of mixed length spends most of its work on padding. Sorting by token length and cutting the
sorted run into passes of at most `max_tokens` padded tokens keeps padding small and bounds the
memory of any one pass (the idea of TEI's `max-batch-tokens`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol


class HasModel(Protocol):
    model_name: str


def positions_by_model(items: Sequence[HasModel]) -> dict[str, list[int]]:
    """The batch positions of each model's items, in batch order."""
    positions: defaultdict[str, list[int]] = defaultdict(list)
    for position, item in enumerate(items):
        positions[item.model_name].append(position)
    return positions


def plan_sub_batches(token_lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Positions of the texts for each forward pass, shortest texts first.

    Each pass holds texts of similar length and at most `max_tokens` padded tokens
    (texts × longest text); a text longer than `max_tokens` on its own gets a pass to itself.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    passes: list[list[int]] = []
    current: list[int] = []
    for position in sorted(range(len(token_lengths)), key=token_lengths.__getitem__):
        # Ascending order: the text being added is the longest of the pass so far.
        if current and (len(current) + 1) * max(token_lengths[position], 1) > max_tokens:
            passes.append(current)
            current = []
        current.append(position)
    if current:
        passes.append(current)
    return passes
