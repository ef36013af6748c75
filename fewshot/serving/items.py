"""The inference service's interface: one item per text in, one result per item out.

The gateway sends items (not requests) so that BentoML's adaptive batching can merge the texts of
concurrent requests, whatever model each names. Plain pydantic: the gateway imports this without
the engine.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Probability.")


class TextItem(BaseModel):
    model_name: str
    """A model reference: `name` or `name:version`."""
    text: str
    top_k: int | None = None


class ItemPrediction(BaseModel):
    found: bool = True
    label: str = ""
    score: float = 0.0
    scores: list[LabelScore] | None = None


class ItemEmbedding(BaseModel):
    found: bool = True
    vector: list[float] = Field(default_factory=list)
