"""Predictions and embeddings (POST /v1/predict, /v1/embeddings): requests, answers, and OpenAI's
embeddings shape beside ours.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from fewshot.api.schemas import LIMITS, ModelReference, NonBlankText
from fewshot.serving.items import LabelScore, TextItem

MAX_EMBEDDING_DIMENSIONS = 65_536


class TextsRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "model_name": "intents", "texts": ["my card has not come yet"],
    }})

    model_name: ModelReference = Field(description="A model's name (its latest version) or name:version.")
    texts: list[NonBlankText] = Field(min_length=1, max_length=LIMITS.max_texts_per_request)

    def items(self) -> list[TextItem]:
        """One item per text for the inference service, which batches items across requests."""
        return [TextItem(model_name=self.model_name, text=text) for text in self.texts]


class PredictRequest(TextsRequest):
    top_k: int | None = Field(strict=True, default=None, ge=1, le=LIMITS.max_labels,
                              description="Also return the k most probable labels of each text, in `scores`.")
    threshold: float | None = Field(strict=True, default=None, ge=0, le=1, description=(
        "Multi-label: predict the labels whose probability reaches this, instead of each label's learned threshold. "
        "Single-label: abstain below this instead of the learned abstention threshold (implies `abstain`)."))
    abstain: bool = Field(default=False, description=(
        "Single-label: answer `label: null`, `abstained: true` for a text that is none of the version's labels: "
        "its scope score (similarity to the nearest training example) is below the version's `scope.threshold`; "
        "a version trained before scope scores uses its top probability and `abstention.threshold`. Versions "
        "trained with `label: null` examples always abstain."))

    def items(self) -> list[TextItem]:
        return [TextItem(model_name=self.model_name, text=text, top_k=self.top_k, threshold=self.threshold,
                         abstain=self.abstain) for text in self.texts]


class Prediction(BaseModel):
    text: str
    label: str | None = Field(description=(
        "The most probable label; null where the version abstained (the text is none of its labels)."))
    score: float = Field(description="Probability of the most probable label (also where it abstained).")
    labels: list[str] | None = Field(default=None, description=(
        "Multi-label models only: every label whose probability reaches its threshold, most probable first; "
        "may be empty."))
    abstained: bool | None = Field(default=None, description=(
        "Present where abstention applied (`abstain`, `threshold`, or a version trained with none-of-these "
        "examples): whether it refused the text."))
    reason: Literal["out_of_scope", "none_of_these", "low_confidence"] | None = Field(default=None, description=(
        "Where it abstained, why: `out_of_scope`, its scope score is below the version's `scope.threshold` (far "
        "from every training example); `none_of_these`, the `label: null` examples' class is the most probable; "
        "`low_confidence`, the top probability is below `threshold` (or a version trained before scope scores: its "
        "`abstention.threshold`)."))
    scope_score: float | None = Field(default=None, description=(
        "Present where the version abstained by its scope score: the cosine similarity to the nearest training "
        "example, lowered where a `label: null` example is nearer; compared with its `scope.threshold`."))
    scores: list[LabelScore] | None = Field(default=None, description=(
        "The top_k labels, most probable first; every label for a multi-label model or an abstained answer "
        "(top_k of them when given). Absent otherwise."))
    tokens: int = Field(description=(
        "Tokens of the text the model read (its tokenizer's, special tokens included): all of them, or what "
        "the version's `long_texts` policy read of a text longer than its window."))
    truncated: bool = Field(description=(
        "Whether some of the text was not read: it is longer than the model's window and the version's "
        "`long_texts` is `truncate` or `head_tail` (or `chunks` beyond its last window)."))

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A single-label prediction keeps its original shape: no `scores`, `labels`, `abstained` (...) keys.
        data = serialize(self)
        for key in ("scores", "labels", "abstained", "reason", "scope_score"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class PredictResponse(BaseModel):
    predictions: list[Prediction]


OpenAIInput = NonBlankText | Annotated[list[NonBlankText], Field(min_length=1, max_length=LIMITS.max_texts_per_request)]


class OpenAIEmbeddingsBody(BaseModel):
    """POST /v1/embeddings in OpenAI's shape, as the `openai` client and everything built on it send it."""

    model: ModelReference = Field(description="A model's name (its latest version) or name:version.")
    input: OpenAIInput = Field(description="A text, or a list of texts.")
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None, description="float (default): lists of numbers; base64: each vector's float32 "
        "little-endian bytes, base64-encoded (what the openai client asks for when numpy is installed).")
    dimensions: int | None = Field(strict=True, default=None, ge=1, le=MAX_EMBEDDING_DIMENSIONS, description=(
        "Keep the first n components and re-normalise to unit length; at most the model's size."))
    user: str | None = Field(default=None, max_length=256, description="Accepted and ignored.")


OPENAI_FIELDS = tuple(OpenAIEmbeddingsBody.model_fields)


def _one_text_as_list(value: Any) -> Any:
    """OpenAI's `input` may be one text: validated as a list of one (errors then say `input[0]`)."""
    return [value] if isinstance(value, str) else value


def _both_shapes(schema: dict[str, Any]) -> None:
    """The OpenAPI document shows the two request shapes EmbeddingsRequest accepts, as oneOf."""
    shapes = [model.model_json_schema() for model in (TextsRequest, OpenAIEmbeddingsBody)]
    schema.clear()
    schema.update({"title": "EmbeddingsRequest", "oneOf": shapes,
                   "example": {"model_name": "intents", "texts": ["my card has not come yet"]}})


class EmbeddingsRequest(BaseModel):
    """Either this API's shape (model_name, texts; answered with `embeddings`) or OpenAI's (model,
    input, encoding_format, dimensions, user; answered in OpenAI's shape), never fields of both."""

    model_config = ConfigDict(json_schema_extra=_both_shapes)

    model_name: ModelReference | None = None
    texts: list[NonBlankText] | None = Field(default=None, min_length=1, max_length=LIMITS.max_texts_per_request)
    model: ModelReference | None = None
    input: Annotated[list[NonBlankText] | None, BeforeValidator(_one_text_as_list)] = Field(
        default=None, min_length=1, max_length=LIMITS.max_texts_per_request)
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(strict=True, default=None, ge=1, le=MAX_EMBEDDING_DIMENSIONS)
    user: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _one_shape(self) -> EmbeddingsRequest:
        openai = [name for name in OPENAI_FIELDS if getattr(self, name) is not None]
        ours = [name for name in ("model_name", "texts") if getattr(self, name) is not None]
        if openai and ours:
            raise ValueError(f"send this API's model_name and texts, or OpenAI's model and input, not fields of "
                             f"both (got {', '.join(ours + openai)})")
        required = ("model", "input") if openai else ("model_name", "texts")
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: field required" + (
                "" if openai else " (or OpenAI's shape: model and input)"))
        return self

    @property
    def is_openai(self) -> bool:
        return self.model is not None

    @property
    def reference(self) -> str:
        return self.model if self.model is not None else self.model_name  # type: ignore[return-value]

    @property
    def field(self) -> str:
        """The field naming the model, for error messages."""
        return "model" if self.is_openai else "model_name"

    def all_texts(self) -> list[str]:
        return self.texts if self.texts is not None else self.input or []

    def items(self) -> list[TextItem]:
        return [TextItem(model_name=self.reference, text=text) for text in self.all_texts()]


class EmbeddingsResponse(BaseModel):
    embeddings: list[list[float]]
    tokens: list[int] = Field(description="Per text: the tokens the model read (see `Prediction.tokens`).")
    truncated: list[bool] = Field(description="Per text: whether some of it was not read (see `Prediction.truncated`).")


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Numbers, or base64 of float32 little-endian bytes.")


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the model read (its tokenizer's, special tokens included, "
                                           "after truncation to its maximum length).")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    """The answer to an OpenAI-shaped embeddings request."""

    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage
