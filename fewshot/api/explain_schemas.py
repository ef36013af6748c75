"""The HTTP contract of explanations (POST /v1/explain): why a version answered what it did. The maths
is fewshot/learning/explanations.py; the route fewshot/api/explain.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from fewshot.api.inference_schemas import Prediction
from fewshot.api.schemas import ModelReference, NonBlankLabel, NonBlankText, OneLabelForm

MAX_EXPLAIN_TEXTS = 16
"""Texts in one explain request: each costs up to 2 × MAX_EXPLAIN_SPANS predictions."""
MAX_EXPLAIN_CHARS = 1_000_000
"""Characters predicted for one explain request, the whole texts and both rounds of occlusion variants
together: the work one request may ask of the inference service (~250,000 tokens; a 200-word text
explained word by word is ~160,000 characters)."""
MAX_NEAREST = 20

Method = Literal["both", "occlusion", "neighbors"]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "model_name": "intents", "texts": ["my card has still not arrived"], "method": "both", "top_k": 3}})

    model_name: ModelReference = Field(description="A model's name (its latest version) or name:version.")
    texts: list[NonBlankText] = Field(min_length=1, max_length=MAX_EXPLAIN_TEXTS)
    method: Method = Field(default="both", description=(
        "`occlusion`: each span's weight, how much the explained label's probability falls without it, and its "
        "rank (2N predictions for a text of N spans, in two batched rounds); `neighbors`: the training examples "
        "nearest the text; `both`."))
    granularity: Literal["word", "sentence"] = Field(default="word", description=(
        "Occlusion's spans: words, or sentences. A text of more than MAX_EXPLAIN_SPANS words is explained by "
        "sentences (its `granularity` says so); more sentences than that is a 400."))
    top_k: int = Field(strict=True, default=3, ge=1, le=MAX_NEAREST,
                       description=(
        "How many nearest training examples to list per text (in `nearest`, and again in `support`)."))
    label: NonBlankLabel | None = Field(default=None, description=(
        "Explain this label's probability (why not this label?) instead of the answered one."))
    abstain: bool = Field(default=False, description="As /v1/predict: the prediction explained may abstain.")
    threshold: float | None = Field(strict=True, default=None, ge=0, le=1, description="As /v1/predict.")

    @property
    def occludes(self) -> bool:
        return self.method in ("both", "occlusion")

    @property
    def neighbors(self) -> bool:
        return self.method in ("both", "neighbors")


class SpanWeight(BaseModel):
    start: int = Field(description="Character offset of the span in the text (Unicode code points).")
    end: int
    text: str
    weight: float = Field(description=(
        "The explained label's probability on the whole text minus on the text without this span: positive, "
        "the span carried the answer; negative, it pulled away from it."))
    rank: int = Field(description=(
        "1 for the span whose leaving out lowers the explained label most; then the others by how far the label "
        "falls when each is left out together with rank 1 (a second round of occlusion): the order in which the "
        "spans carried the answer, words that stand in for each other included. Ties keep text order."))


class NearExample(OneLabelForm):
    text: str
    label: str | None = Field(default=None, description="Its label in training (null: none of the labels).")
    labels: list[str] | None = Field(default=None, description="Multi-label versions: its labels in training.")
    similarity: float = Field(description="Cosine similarity of its embedding to the text's (the version's body).")
    example_id: str | None = Field(description=(
        "Its id in the model's example set now (fix or delete it there); null where the set no longer holds it."))


class Explanation(BaseModel):
    text: str
    prediction: Prediction = Field(description="The answer, as /v1/predict gives it.")
    label: str = Field(description=(
        "The label explained: `label` where asked for, else the answer's (the most probable label where it "
        "abstained, or a multi-label model's most probable)."))
    score: float = Field(description="Its probability on the whole text.")
    granularity: Literal["word", "sentence"] | None = Field(default=None, description="Occlusion: the spans'.")
    spans: list[SpanWeight] | None = Field(default=None, description="Occlusion: every span, in text order.")
    nearest: list[NearExample] | None = Field(default=None, description=(
        "Neighbors: the training examples nearest the text, whatever their label, most similar first; empty for "
        "a version that kept none (imported)."))
    support: list[NearExample] | None = Field(default=None, description=(
        "Neighbors: the training examples with the explained label nearest the text, most similar first: those "
        "that taught it this answer (a wrong label among them is the one to fix)."))

    @model_serializer(mode="wrap")
    def _method_fields_only(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = serialize(self)
        for key in ("granularity", "spans", "nearest", "support"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class ExplainResponse(BaseModel):
    explanations: list[Explanation] = Field(description="One per text, in input order.")
    model_version: str = Field(description="The version explained (every text's answer and spans are its).")

