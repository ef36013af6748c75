"""The HTTP contract of a model's example set (/v1/models/{name}/examples) and of retraining from it
(/v1/models/{name}/retrain). Examples are validated as /v1/train's are (`fewshot.api.schemas.Example`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from fewshot.api.schemas import LIMITS, Example, NonBlankLabel, OneLabelForm, distinct, one_form
from fewshot.records.examples import ExampleSource, NewExample, StoredExample
from fewshot.records.outcomes import fixed_evaluation
from fewshot.timestamps import UtcTimestamp

MAX_EXAMPLES_PAGE = 1000
MAX_DELETE_IDS = 1000
EXAMPLE_ID = Annotated[str, Field(min_length=1, max_length=64)]


def new_examples(examples: list[Example]) -> list[NewExample]:
    """The API's examples as the example store takes them."""
    return [NewExample(example.text, example.label if example.labels is None else None,
                       tuple(example.labels) if example.labels is not None else None) for example in examples]


class AddExamplesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"examples": [
        {"text": "My card still has not arrived", "label": "card_arrival"},
        {"text": "Can I top up by bank transfer?", "label": "top_up"},
    ]}})

    examples: list[Example] = Field(
        min_length=1, max_length=LIMITS.max_train_examples,
        description="Labelled examples, as /v1/train takes them: each with `label` (null: none of the labels), or "
        "each with `labels` (a multi-label set). A text already in the set is reported, not added again.")

    @field_validator("examples")
    @classmethod
    def _one_form_only(cls, examples: list[Example]) -> list[Example]:
        one_form(examples, examples[0].is_multi_label, "must all give `label` (one label, or null) or all give "
                  "`labels` (a list: a multi-label set), not both forms")
        return examples


class ExampleView(OneLabelForm):
    id: str = Field(description="Its id in the set: DELETE /v1/models/{name}/examples/{id}.")
    text: str
    label: str | None = Field(default=None, description="Its label (null: none of the labels).")
    labels: list[str] | None = Field(default=None, description="Multi-label sets: every label of the text.")
    source: ExampleSource = Field(description="How it came: `train` (POST /v1/train), `added` (POST "
                                              "…/examples), `feedback`, `import`.")
    added_at: UtcTimestamp

    @classmethod
    def of(cls, example: StoredExample) -> ExampleView:
        return cls.model_validate(example.model_dump())


class ExampleConflict(OneLabelForm):
    """A text sent with another label than the set holds: the set keeps its own (`existing`)."""

    existing: ExampleView
    label: str | None = Field(default=None, description="The label sent (not stored).")
    labels: list[str] | None = Field(default=None, description="Multi-label: the labels sent (not stored).")


class ExamplesAdded(BaseModel):
    added: list[ExampleView] = Field(description="The examples added, in the order sent.")
    duplicates: list[ExampleView] = Field(description=(
        "Texts already in the set (or sent twice) with the same label: the set's example for each; not added."))
    conflicts: list[ExampleConflict] = Field(description=(
        "Texts the set holds with another label: not changed. To relabel one, delete it and add it again."))
    total: int = Field(description="Examples in the set now.")


class ExampleListQuery(BaseModel):
    """GET /v1/models/{name}/examples query parameters."""

    model_config = ConfigDict(extra="forbid")

    label: NonBlankLabel | None = Field(default=None, description="Only examples with this label.")
    limit: int = Field(default=100, ge=1, le=MAX_EXAMPLES_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=64,
                               description="`next_cursor` of the previous page.")


class ExampleList(BaseModel):
    examples: list[ExampleView] = Field(description="In the order they were added.")
    total: int = Field(description="Examples in the set (with `label`: those with it).")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")
    digest: str = Field(description="A hash of the whole set's texts and labels: a version whose `examples_digest` "
                                    "equals it was trained on exactly this set.")


class DeleteExamplesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"ids": ["3f2a9c1e8b7d4a60"]}})

    ids: Annotated[list[EXAMPLE_ID], AfterValidator(distinct)] = Field(
        min_length=1, max_length=MAX_DELETE_IDS, description="Ids of examples of this model's set (distinct).")


class ExamplesDeleted(BaseModel):
    deleted: list[str] = Field(description="Ids removed from the set.")
    not_found: list[str] = Field(description="Ids not in this model's set (never, or deleted before).")
    total: int = Field(description="Examples in the set now.")


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"strategy": "head"}})

    strategy: Literal["head", "continue", "full", "auto"] = Field(
        default="head", description="head: a new head on the served version's body (seconds; its embeddings of "
        "unchanged texts are cached). continue: the served version's body fine-tuned further on the whole set "
        "(a quarter of its iterations by default). full: fine-tuned from the base model. auto: head at once, then "
        "full, kept if better (as /v1/train's auto).")
    promote: Literal["if_better", "always"] = Field(
        default="if_better", description="if_better: the new version is served only if it scores no worse than "
        "the served one on the set's fixed evaluation examples, overall and per label; otherwise it is kept, "
        "not served, and the job says why. always: served in any case.")
    num_iterations: int | None = Field(strict=True, default=None, gt=0, le=LIMITS.max_num_iterations, description=(
        "SetFit pair-generation iterations of continue, full and auto; default: the served version's (continue: a "
        "quarter of them)."))
    abstention_coverage: float | None = Field(strict=True, default=None, gt=0, le=1, description="As in /v1/train.")


CONTINUE_ITERATIONS_SHARE = 4
"""`continue` fine-tunes a body already tuned on most of the set: a quarter of its iterations."""
TRAINING_STRATEGY = {"head": "head", "continue": "setfit", "full": "setfit", "auto": "auto"}


def training_request(model_name: str, examples: list[StoredExample], served: dict[str, Any] | None,
                     retrain: RetrainRequest) -> dict[str, Any]:
    """A /v1/train request (to validate as one) training `model_name` on its set: the set's fixed
    evaluation part (fewshot/records/outcomes.py) as `eval_examples`, the served version's base model and
    settings as far as `retrain` does not say otherwise."""
    served = served or {}
    train, evaluation = fixed_evaluation([(example.text, example.target) for example in examples],
                                         always_train={example.text for example in examples
                                                       if example.source == "feedback"})
    request: dict[str, Any] = {"model_name": model_name, "strategy": TRAINING_STRATEGY[retrain.strategy],
                               "examples": [examples[i].as_training_example() for i in train],
                               "holdout_fraction": 0}
    if evaluation:
        request.update(eval_examples=[examples[i].as_training_example() for i in evaluation])
        del request["holdout_fraction"]
    if served.get("strategy") != "imported" and served.get("base_model"):
        request["base_model"] = served["base_model"]
    for field in ("num_iterations", "learning_rate", "batch_size"):
        if served.get(field) is not None:
            request[field] = served[field]
    if retrain.strategy == "continue" and "num_iterations" in request:
        request["num_iterations"] = max(1, request["num_iterations"] // CONTINUE_ITERATIONS_SHARE)
    if retrain.num_iterations is not None:
        request["num_iterations"] = retrain.num_iterations
    if retrain.abstention_coverage is not None:
        request["abstention_coverage"] = retrain.abstention_coverage
    return request
