"""Why a version answered what it did: which spans of a text carried the answer (occlusion), and
which training examples the text lies nearest (neighbours).

Occlusion asks the served model itself: each span (a word, or a sentence) is left out in turn, and
its weight is how much the explained label's probability falls without it (negative: the span
pulled away from that label). A second round leaves the heaviest span out with each other span in
turn, and ranks the spans by how fast leaving them out lowers the label (`ranks`). A text of N spans
costs 2N predictions, each round sent as one request's worth of texts, which the inference service
batches like any other: it works for every head, backend and decision rule, because it only reads
probabilities. Measured against integrated gradients through
the torch body and head, and against leaving out random words (bench/explain.py, docs/benchmarks.md).

The neighbours are one product of the text's embedding with the version's training embeddings
(those its scope score reads, or its trainer cached): the examples that taught it the answer.

Pure: the gateway gathers the probabilities and embeddings; no HTTP, no ML stack.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fewshot.learning.selection import normalized

Granularity = Literal["word", "sentence"]

WORD = re.compile(r"\w+(?:['’]\w+)*")
"""A word: letters and digits, with inner apostrophes (don't, card's); punctuation is never a span."""
SENTENCE = re.compile(r"[^.!?。！？\n]+(?:[.!?。！？]+|$)")
"""A sentence: up to and with its closing punctuation, or a line."""


CLOSING = set(",.;:!?)]}%…。！？、")


@dataclass(frozen=True)
class Span:
    start: int
    """Character offset in the text (Python string indices: code points)."""
    end: int

    def of(self, text: str) -> str:
        return text[self.start:self.end]


def spans_of(text: str, granularity: Granularity) -> list[Span]:
    """The text's words or sentences, in order (a sentence without its surrounding whitespace)."""
    pattern = WORD if granularity == "word" else SENTENCE
    spans = []
    for match in pattern.finditer(text):
        piece = match.group()
        start = match.start() + len(piece) - len(piece.lstrip())
        end = match.end() - (len(piece) - len(piece.rstrip()))
        if end > start and any(character.isalnum() for character in text[start:end]):
            spans.append(Span(start, end))
    return spans


def without(text: str, spans: Sequence[Span]) -> str:
    """The text with `spans` left out, the whitespace around each gap closed to one space."""
    kept, position = [], 0
    for span in sorted(spans, key=lambda span: span.start):
        kept.append(text[position:span.start])
        position = span.end
    kept.append(text[position:])
    joined = kept[0]
    for piece in (rest.lstrip() for rest in kept[1:]):
        # "card hasn't , why" reads as a typo to a tokenizer: no space before closing punctuation
        space = " " if joined.strip() and piece and piece[0] not in CLOSING else ""
        joined = joined.rstrip() + space + piece
    return joined.strip()


def occlusion_variants(text: str, spans: Sequence[Span]) -> list[str]:
    """The texts to predict for an occlusion: one per span, each without it (the whole text is predicted beside)."""
    return [without(text, [span]) for span in spans]


def occlusion_weights(score: float, variant_scores: Sequence[float]) -> list[float]:
    """Each span's weight: the explained label's probability on the whole text minus without the span."""
    return [float(score) - float(left) for left in variant_scores]


def heaviest(weights: Sequence[float]) -> int:
    """The span whose leaving out lowers the label most (ties: the first)."""
    return max(range(len(weights)), key=lambda i: (weights[i], -i))


def second_round_variants(text: str, spans: Sequence[Span], top: int) -> list[str]:
    """The text without its heaviest span (`top`) and each other span in turn, in span order."""
    return [without(text, [spans[top], span]) for i, span in enumerate(spans) if i != top]


def ranks(weights: Sequence[float], top: int | None = None, together: Sequence[float] = ()) -> list[int]:
    """Each span's rank (1: first) in the order in which leaving spans out lowers the label fastest: the
    heaviest alone first, then the others by how far the label falls with it (`together`: the second
    round's probabilities, in span order without `top`; lowest first). Without a second round (`top`
    None), by weight alone. Ties keep text order.

    Why two rounds: words that can stand in for each other ("How many" in a question of number) each
    weigh little alone, and a ranking by single weights misses them when several words are left out.
    Measured on trec6 8-shot (bench/explain.py): the fall with the top 3 words left out, 0.053 by single
    weights against 0.058 by integrated gradients; 0.067 with the second round."""
    if top is None:
        order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))
    else:
        others = [i for i in range(len(weights)) if i != top]
        left = dict(zip(others, together, strict=True))
        order = [top, *sorted(others, key=lambda i: (left[i], i))]
    rank = [0] * len(weights)
    for position, index in enumerate(order, start=1):
        rank[index] = position
    return rank


def cosine_similarities(query: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each row of `points`' cosine similarity to `query` (one vector)."""
    if not len(points):
        return np.empty(0, dtype=np.float32)
    return normalized(points) @ normalized(query.reshape(1, -1))[0]


def most_similar(similarities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k positions of the highest similarities, best first, with their similarity (k above them: all)."""
    if not len(similarities) or k <= 0:
        return []
    k = min(k, len(similarities))
    best = np.argpartition(-similarities, k - 1)[:k]
    best = best[np.argsort(-similarities[best], kind="stable")]
    return [(int(row), float(similarities[row])) for row in best]


def spans_within(text: str, granularity: Granularity, cap: int) -> tuple[Granularity, list[Span]] | None:
    """The spans to leave out of `text`: its words (where asked for) while there are at most `cap`, else
    its sentences; None where even its sentences are more than `cap`."""
    if granularity == "word":
        words = spans_of(text, "word")
        if len(words) <= cap:
            return "word", words
    sentences = spans_of(text, "sentence")
    return ("sentence", sentences) if len(sentences) <= cap else None
