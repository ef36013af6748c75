"""How a version reads a text longer than its body's window (`long_texts`, chosen per version).

- `truncate`: the first window of tokens (what sentence-transformers, TEI and Infinity do, silently);
- `head_tail`: the first quarter of the window and the last three quarters: Sun et al. 2019 ("How to
  Fine-Tune BERT for Text Classification?", IMDb: head 128 + tail 382 tokens, 5.42% error against
  5.63% for the head alone) found the end of a long review says most;
- `chunks`: the whole text, in windows that overlap by an eighth; its embedding is the
  token-weighted mean of the windows' embeddings (normalised again where the body normalises).

A text that fits the window is read whole by every policy, so they differ on long texts only (and
`auto`, at training, compares them on those: trainers/long_texts.py). The policies work on
strings: a text is cut at its tokens' character offsets into the strings the body then embeds as
any other text, so the same plan serves the numpy path, sentence-transformers and training, and a
version's head sees at serving what it was fitted on. Pure numpy and `tokenizers`: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

TRUNCATE, HEAD_TAIL, CHUNKS = "truncate", "head_tail", "chunks"
POLICIES = (TRUNCATE, HEAD_TAIL, CHUNKS)
"""In order of cost: where `auto` finds two equally good, it keeps the cheaper."""
AUTO = "auto"
HEAD_SHARE = 0.25
"""head_tail: the share of the window given to the head (Sun et al.'s 128 of 510)."""
CHUNK_OVERLAP = 0.125
"""chunks: the share of a window repeated in the next one, so no sentence is only ever seen cut."""
MAX_CHUNKS = 32
"""chunks: windows read per text at most (the rest is cut, and the text said `truncated`): bounds a
text's cost at 32 windows (MiniLM: ~7,000 tokens; an 8,192-token body: ~230,000)."""
CHARS_PER_TOKEN = 8
"""A version takes texts of up to this many characters per token it can read (`text_limit`): English
averages ~4.5 characters per token of these tokenizers, so a text this long fills what the version
reads in any language, and a longer one is mostly left unread."""
MIN_TEXT_CHARS = 10_000
"""`text_limit` is never below this (the limit before it followed the window)."""
SEPARATOR = " … "
"""head_tail: between the head and the tail, where the middle was left out."""


def window_of(body: Any) -> int | None:
    """A sentence-transformers body's window (`max_seq_length`) in tokens; None where it has none: unset,
    or infinite (a body whose tokenizer states no maximum: sentence-transformers then says inf)."""
    window = getattr(body, "max_seq_length", None)
    if not isinstance(window, int | float) or not math.isfinite(window) or window < 1:
        return None
    return int(window)


@dataclass(frozen=True)
class Reading:
    """How a list of texts is read: the strings the body embeds (`segments`, a text itself when it
    fits), which text each belongs to and how much it weighs in that text's embedding; per text,
    the tokens read (special tokens included, as in a forward pass) and whether any were left out."""

    segments: list[str]
    owners: np.ndarray
    weights: np.ndarray
    tokens: list[int]
    truncated: list[bool]

    @property
    def one_segment_each(self) -> bool:
        return len(self.segments) == len(self.tokens)

    def texts_as_sent(self, texts: Sequence[str]) -> bool:
        """Every segment is its text itself: the body reads `texts` as it would without a policy."""
        return self.one_segment_each and all(segment is text for segment, text in zip(self.segments, texts,
                                                                                       strict=True))

    def pool(self, segment_vectors: np.ndarray, renormalize: bool) -> np.ndarray:
        """One row per text: its segments' token-weighted mean (the segment's own row where it has
        one); `renormalize` where the body's rows are unit vectors (a Normalize module), which a
        mean of several is not."""
        if self.one_segment_each:
            return segment_vectors
        texts = len(self.tokens)
        summed = np.zeros((texts, segment_vectors.shape[1]), dtype=np.float64)
        np.add.at(summed, self.owners, segment_vectors * self.weights[:, None])
        totals = np.bincount(self.owners, weights=self.weights, minlength=texts)
        rows = (summed / np.maximum(totals, 1e-12)[:, None]).astype(np.float32)
        if renormalize:
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows


class LongTextReader:
    """Plans the `Reading` of texts for one body: its tokenizer (a copy, untruncated), its window
    (tokens per forward pass, special tokens included) and a version's policy."""

    def __init__(self, tokenizer: Tokenizer, window: int, policy: str, lower_case: bool = False) -> None:
        if policy not in POLICIES:
            raise ValueError(f"long_texts must be one of {', '.join(POLICIES)}, not {policy!r}")
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        processor = self._tokenizer.post_processor
        self.special_tokens = processor.num_special_tokens_to_add(False) if processor is not None else 0
        self.window = window
        self.budget = max(window - self.special_tokens, 1)
        """Tokens of the text itself in one window."""
        self.policy = policy
        self._lower_case = lower_case

    @classmethod
    def for_body(cls, body: Any, policy: str) -> LongTextReader | None:
        """A sentence-transformers body's reader for `policy` (its Rust tokenizer, window and lower-casing);
        None where its tokenizer is not a fast one or it has no window."""
        window = window_of(body)
        tokenizer = getattr(body.tokenizer, "backend_tokenizer", None) if callable(body.tokenizer) else None
        if tokenizer is None or window is None:
            return None
        return cls(tokenizer, window, policy, bool(getattr(body[0], "do_lower_case", False)))

    def read(self, texts: Sequence[str]) -> Reading:
        if self._lower_case:
            texts = [text.lower() for text in texts]
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        segments: list[str] = []
        owners: list[int] = []
        weights: list[float] = []
        tokens: list[int] = []
        truncated: list[bool] = []
        for index, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            offsets = encoding.offsets
            count = len(offsets)
            if count <= self.budget or self.policy == TRUNCATE:
                # the body's own truncation cuts it where `truncate` would: the text goes as it is
                pieces = [(text, count)]
                read, cut = min(count, self.budget), count > self.budget
            elif self.policy == HEAD_TAIL:
                head = int(self.budget * HEAD_SHARE)
                tail = self.budget - head - len(self._tokenizer.encode(SEPARATOR, add_special_tokens=False).ids)
                joined = text[:offsets[head - 1][1]] + SEPARATOR + text[offsets[count - tail][0]:]
                pieces = [(joined, self.budget)]
                read, cut = self.budget, True
            else:
                pieces, read = self._chunks(text, offsets)
                cut = read < count
            for piece, weight in pieces:
                segments.append(piece)
                owners.append(index)
                weights.append(float(weight))
            tokens.append(read + self.special_tokens * len(pieces))
            truncated.append(cut)
        return Reading(segments, np.asarray(owners, dtype=np.int64), np.asarray(weights, dtype=np.float64),
                       tokens, truncated)

    def _chunks(self, text: str, offsets: list[tuple[int, int]]) -> tuple[list[tuple[str, int]], int]:
        """Windows of `budget` tokens, each starting `stride` after the last, the last one ending with
        the text (it starts earlier instead of running short); at most MAX_CHUNKS (then the rest is
        not read). Also the tokens read."""
        count = len(offsets)
        stride = max(1, self.budget - int(self.budget * CHUNK_OVERLAP))
        starts = list(range(0, count - self.budget, stride))
        if len(starts) < MAX_CHUNKS:
            starts.append(count - self.budget)
            read = count
        else:
            starts = starts[:MAX_CHUNKS]
            read = starts[-1] + self.budget
        pieces = [(text[offsets[start][0]:offsets[start + self.budget - 1][1]], self.budget) for start in starts]
        return pieces, read


def text_limit(window: int | None, policy: str, configured: int | None = None) -> int | None:
    """Characters of one text a version takes: MAX_TEXT_CHARS where set (`configured`); else
    CHARS_PER_TOKEN per token it can read of a text (its window; MAX_CHUNKS windows with `chunks`),
    at least MIN_TEXT_CHARS. None: no limit of its own (a body without a window)."""
    if configured is not None:
        return configured
    if window is None:
        return None
    return max(MIN_TEXT_CHARS, CHARS_PER_TOKEN * window * (MAX_CHUNKS if policy == CHUNKS else 1))


def refusal(characters: int, limit: int, window: int | None, policy: str, configured: bool) -> str:
    """Why a text of `characters` is refused, naming the limit and where it comes from."""
    if configured:
        return f"{characters:,} characters is more than MAX_TEXT_CHARS={limit:,}"
    hint = "" if policy == CHUNKS else " (a version trained with long_texts=chunks reads more of a text)"
    return (f"{characters:,} characters is more than this version takes: {limit:,} ({CHARS_PER_TOKEN} characters "
            f"per token it reads of a text: its window of {window:,} tokens, long_texts={policy}; "
            f"MAX_TEXT_CHARS sets another limit){hint}")
