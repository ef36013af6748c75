"""The inference service's interface: one item per text in, one result per item out.

The gateway sends items (not requests) so that BentoML's adaptive batching can merge the texts of
concurrent requests, whatever model each names. Plain pydantic: the gateway imports this without
the engine.
"""

from __future__ import annotations

from array import array

from pydantic import BaseModel, ConfigDict, Field


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Probability.")


class TextItem(BaseModel):
    model_name: str
    """A model reference: `name` or `name:version`."""
    text: str
    top_k: int | None = None
    threshold: float | None = None
    """Predict: replaces the version's learned thresholds (multi-label) or abstention threshold."""
    abstain: bool = False
    """Predict, single-label: answer no label where the best one's probability is below the threshold."""


class ItemPrediction(BaseModel):
    found: bool = True
    error: str | None = None
    """The item asked for what its model cannot do (e.g. `abstain` of a multi-label model): a 400."""
    text_refused: str | None = None
    """The text is longer than its version takes (fewshot/serving/long_texts.py `text_limit`): a 400
    naming the text."""
    label: str | None = ""
    score: float = 0.0
    scores: list[LabelScore] | None = None
    labels: list[str] | None = None
    """Multi-label: every label whose probability reaches its threshold."""
    abstained: bool | None = None
    """Set where abstention applied (asked for, or a version that refuses)."""
    reason: str | None = None
    """Where it abstained, why: none_of_these, out_of_scope or low_confidence (fewshot/serving/decisions.py)."""
    scope_score: float | None = None
    """Where abstention applied by the version's scope score: the score (fewshot/serving/scope.py)."""
    tokens: int = 0
    """The tokens the model read of the text (special tokens included; fewshot/serving/long_texts.py)."""
    truncated: bool = False
    """Some of the text was not read (it is longer than the window, and the version's `long_texts` cuts)."""


class ItemEmbedding(BaseModel):
    """One text's embedding on the internal hop: float32 values as raw bytes (machine order).

    Measured on 256 all-MiniLM-L6-v2-sized (384-d) vectors: building the items and taking them
    through BentoML's hop (dump, pickle, unpickle, validate) cost 65.7 µs per text as lists of
    Python floats, 5.4 µs as bytes. The gateway turns them into the public response's floats
    (`floats`, 10.8 µs), the same values that float32 `.tolist()` gives. In JSON (never used
    between our services, but possible) they are base64.
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    found: bool = True
    text_refused: str | None = None
    """The text is longer than its version takes (fewshot/serving/long_texts.py `text_limit`): a 400."""
    vector: bytes = b""
    tokens: int = 0
    """The tokens the model read (special tokens included; fewshot/serving/long_texts.py)."""
    truncated: bool = False

    def floats(self) -> list[float]:
        values = array("f")  # C float: float32 in the machine's byte order, as numpy's tobytes() wrote it
        values.frombytes(self.vector)
        return values.tolist()
