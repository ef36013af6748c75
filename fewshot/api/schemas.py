"""What every route's schemas share: model names and references, an example, the request limits,
the error body. Each resource's own requests and responses live beside it: training_schemas.py,
job_schemas.py, model_schemas.py, inference_schemas.py, example_schemas.py, learning_schemas.py.

Validation lives in the schemas, so that BentoML rejects bad input with a 400 before any handler runs.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from fewshot.records.outcomes import (
    Target,
)
from fewshot.settings import TEXT_CHARS_CEILING, get_settings

# Request limits are settings (docs/settings.md); read once, when the schemas are built.
LIMITS = get_settings()

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
MODEL_NAME_MAX_LENGTH = 63
MODEL_NAME_RULE = (
    f"must be 1-{MODEL_NAME_MAX_LENGTH} characters of lower-case letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit"
)


# A model reference: `name` (its latest version) or `name:version` (pinned); versions follow the same rule.
MODEL_REFERENCE_PATTERN = re.compile(
    rf"^{MODEL_NAME_PATTERN.pattern[1:-1]}(:{MODEL_NAME_PATTERN.pattern[1:-1]})?$")
MODEL_REFERENCE_MAX_LENGTH = 2 * MODEL_NAME_MAX_LENGTH + 1
MODEL_REFERENCE_RULE = (
    f"must be a model name or name:version; {MODEL_NAME_RULE.replace('must be', 'each is')}"
)


def is_valid_model_name(value: str) -> bool:
    return len(value) <= MODEL_NAME_MAX_LENGTH and MODEL_NAME_PATTERN.match(value) is not None


def is_valid_model_reference(value: str) -> bool:
    return len(value) <= MODEL_REFERENCE_MAX_LENGTH and all(map(is_valid_model_name, value.split(":", 1)))


def _check_model_reference(value: str) -> str:
    if not is_valid_model_reference(value):
        raise ValueError(MODEL_REFERENCE_RULE)
    return value


def _check_model_name(value: str) -> str:
    if not is_valid_model_name(value):
        raise ValueError(MODEL_NAME_RULE)
    return value


# Python's whitespace (what str.strip() removes), spelled out: regex engines disagree on `\s`.
WHITESPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = f"[^{WHITESPACE}]"  # at least one character that is not whitespace


def _check_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


# The JSON schemas document what the validators check, so that clients (and fuzzers) know the rules.
MODEL_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MODEL_NAME_MAX_LENGTH,
                     "pattern": MODEL_NAME_PATTERN.pattern}
ModelName = Annotated[str, AfterValidator(_check_model_name), WithJsonSchema(MODEL_NAME_SCHEMA)]
MODEL_REFERENCE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MODEL_REFERENCE_MAX_LENGTH,
                          "pattern": MODEL_REFERENCE_PATTERN.pattern}
ModelReference = Annotated[str, AfterValidator(_check_model_reference), WithJsonSchema(MODEL_REFERENCE_SCHEMA)]


def non_blank(max_length: int) -> Any:
    """A string of at most `max_length` characters that is not empty or only whitespace."""
    return Annotated[str, Field(max_length=max_length,
                                json_schema_extra={"minLength": 1, "pattern": NOT_BLANK_PATTERN}),
                     AfterValidator(_check_not_blank)]


NonBlankText = non_blank(LIMITS.max_text_chars or TEXT_CHARS_CEILING)
LABEL_CHARS = 10_000
"""Characters of a label (its name) when MAX_TEXT_CHARS is not set: a name, not a text to read."""
NonBlankLabel = non_blank(LIMITS.max_text_chars or LABEL_CHARS)
# A Hub id ("org/name", at most 96 characters on the Hub) or a local directory's absolute path,
# which Linux bounds at PATH_MAX (4096): not a text, so MAX_TEXT_CHARS does not apply to it.
BASE_MODEL_MAX_LENGTH = 4096
BaseModelName = non_blank(BASE_MODEL_MAX_LENGTH)


def distinct(values: list[str] | None) -> list[str] | None:
    if values is not None:
        repeated = sorted(value for value, n in Counter(values).items() if n > 1)
        if repeated:
            raise ValueError(f"must be distinct; repeated: {', '.join(repeated[:10])}")
    return values


class OneLabelForm(BaseModel):
    """Serialised in the one form it has: `label` (single-label, null included) or `labels` (a list,
    multi-label), never both; its subclasses declare the two fields. (An Example is stored in the job
    record and validated again by the trainer: it must come back in the form it was sent in.)"""

    @model_serializer(mode="wrap")
    def _one_form(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = serialize(self)
        data.pop("label" if getattr(self, "labels", None) is not None else "labels", None)
        return data


class Example(OneLabelForm):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["label"]}, {"required": ["labels"]}]})

    text: NonBlankText
    label: NonBlankLabel | None = Field(default=None, description=(
        "Its label. null: the text belongs to none of the labels (teaches a model what to refuse)."))
    # A list when sent (the schema says so: `labels: null` is no form of its own); None: not sent.
    labels: Annotated[Annotated[list[NonBlankLabel], AfterValidator(distinct)] | None,
                      WithJsonSchema({"type": "array", "items": {"type": "string", "minLength": 1},
                                      "maxItems": LIMITS.max_labels})] = Field(
        default=None, max_length=LIMITS.max_labels, description=(
            "Instead of `label`, for a multi-label model: every label of the text (distinct; [] for none)."))

    @model_validator(mode="after")
    def _label_or_labels(self) -> Example:
        # exactly one of the two keys, as the schema's oneOf says (found by the fuzz test: `label` with
        # `labels: null`, or `labels: null` alone, were accepted though the schema refuses them)
        sent = {"label", "labels"} & self.model_fields_set
        if sent == {"label", "labels"}:
            raise ValueError("send `label` (one label, or null) or `labels` (a list, multi-label), not both")
        if sent == {"labels"} and self.labels is None:
            raise ValueError("labels: must be a list ([] for none of the labels); for one label, or none of them, "
                             "send `label`")
        if not sent:
            raise ValueError("label: field required (one label, or null for none of them; or `labels`, a list, for "
                             "a multi-label model)")
        return self

    @property
    def is_multi_label(self) -> bool:
        return self.labels is not None

    @property
    def target(self) -> Target:
        """What the trainers fit and score: the label, None, or the labels as a tuple."""
        return tuple(self.labels) if self.labels is not None else self.label

    @property
    def named_labels(self) -> list[str]:
        """The labels it names (none for a `label: null` example)."""
        return list(self.labels) if self.labels is not None else [] if self.label is None else [self.label]


def label_counts(examples: list[Example]) -> Counter[str]:
    """Examples of each label (multi-label: examples having it); `label: null` ones are not counted."""
    return Counter(label for example in examples for label in example.named_labels)


def one_form(examples: list[Example], multi_label: bool, rule: str) -> None:
    mixed = [i for i, example in enumerate(examples) if example.is_multi_label != multi_label]
    if mixed:
        raise ValueError(f"{rule} (see item {mixed[0]})")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorResponse(BaseModel):
    error: str = Field(description="What is wrong, naming the field and the rule where there is one.")
    detail: Any = Field(default=None, description="Structured detail, e.g. each validation error.")
