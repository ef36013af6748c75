"""The training, import and retrain requests (POST /v1/train, /v1/models/import) and their 202 answer.

Validation lives here, so that BentoML rejects bad input with a 400 before any handler runs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from fewshot.api.schemas import (
    LIMITS,
    NOT_BLANK_PATTERN,
    BaseModelName,
    Example,
    ModelName,
    NonBlankLabel,
    distinct,
    label_counts,
    one_form,
)
from fewshot.base_models import base_model_problem, is_local_path
from fewshot.records.jobs import JobKind, JobStatus
from fewshot.records.outcomes import DEFAULT_ABSTENTION_COVERAGE
from fewshot.timestamps import UtcTimestamp


def labels_among(evaluation: list[Example], known: set[str], whose: str) -> None:
    """Evaluation examples (eval_examples) may only have labels the model knows."""
    unknown = sorted(set(label_counts(evaluation)) - known)
    if unknown:
        raise ValueError(f"labels must be among {whose}; unknown: {', '.join(unknown[:10])}")

class LabelName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: NonBlankLabel = Field(description="The label, as predictions will name it.")
    description: NonBlankLabel | None = Field(default=None, description=(
        "What texts of it are about, in words (default: the name, `_` and `-` read as spaces)."))


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class TrainRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "model_name": "intents",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "examples": [
            {"text": "I still have not received my new card", "label": "card_arrival"},
            {"text": "When will my card arrive?", "label": "card_arrival"},
            {"text": "How do I top up with a bank transfer?", "label": "top_up"},
            {"text": "Can I add money to my account by card?", "label": "top_up"},
        ],
        "num_iterations": 20,
    }})

    model_name: ModelName = Field(description="Name the model is registered and served under.")
    base_model: BaseModelName | None = Field(
        default=None,
        description="Hugging Face id or local sentence-transformers directory; "
        "defaults to the DEFAULT_BASE_MODEL setting.",
    )
    mode: Literal["replace", "add"] = Field(
        default="replace", description="What `examples` do to the model's example set (GET /v1/models/{name}/"
        "examples): replace: they become the set, and the model is trained on them. add: they join the set (a text "
        "already in it is not added again; one with another label keeps the set's, said in `warnings`), and the "
        "model is trained on the whole set: then `examples` may name only one label.")
    labels: list[Annotated[LabelName, BeforeValidator(_named), WithJsonSchema({"oneOf": [
        {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN},
        {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN},
            "description": {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN}}}]})]] | None = Field(
        default=None, min_length=2, max_length=LIMITS.max_labels, description=(
            "Start from label names: each a name, or {name, description}. Sentences made from them (8 per label, "
            "source `template` in the example set) are trained on with `examples` (which may be few or none; their "
            "labels must be among these). Single-label only; without eval_examples, accuracy is null."))
    examples: list[Example] = Field(
        default_factory=list, max_length=LIMITS.max_train_examples, validate_default=True,
        description="Labelled examples, at least 2 labels (with `labels`: any, or none). Each has `label` (null: "
        "none of the labels), or each has `labels` (a list, possibly empty): then a multi-label model is trained.")
    num_iterations: int = Field(strict=True, default=20, gt=0, le=LIMITS.max_num_iterations,
                                description="SetFit pair-generation iterations.")
    learning_rate: float = Field(strict=True, default=2e-5, gt=0, le=1, description="Learning rate of the SetFit body.")
    batch_size: int = Field(strict=True, default=16, gt=0, le=LIMITS.max_train_batch_size,
                            description="Contrastive training batch size.")
    holdout_fraction: float | None = Field(strict=True,
        default=None,
        ge=0,
        lt=1,
        description="Share of each label's examples kept out of training to measure accuracy. "
        "Default: 0.2 when every label has at least 4 examples, else 0 (accuracy null). "
        "Not with eval_examples.",
    )
    strategy: Literal["setfit", "head", "auto"] = Field(
        default="setfit",
        description="setfit: fine-tune the body, then the head. head: frozen body, head only (seconds). "
        "auto: the head first, registered at once; then fine-tuning, registered only if it beats the head "
        "on the evaluation examples.",
    )
    eval_examples: list[Example] | None = Field(
        default=None, min_length=1, max_length=LIMITS.max_train_examples,
        description="Your own evaluation examples (labels among the training labels, in the same form; `label: "
        "null` ones measure refusals): scored instead of a hold-out, and all of `examples` is trained on.",
    )

    long_texts: Literal["auto", "truncate", "head_tail", "chunks"] = Field(
        default="auto", description=(
            "How the version reads a text longer than its base model's window (tokens). truncate: the first "
            "window. head_tail: its first quarter and its last three quarters. chunks: the whole text in "
            "overlapping windows (up to 32), their embeddings averaged. auto: the policy right on the most "
            "long examples out of fold, or truncate where no example is longer than the window. Predictions "
            "and embeddings say how many tokens of each text were read and whether it was `truncated`."))
    abstention_coverage: float | None = Field(strict=True,
        default=None, gt=0, le=1,
        description=f"Single-label: the share of in-scope texts the learned abstention threshold keeps "
        f"(default {DEFAULT_ABSTENTION_COVERAGE}); predictions with `abstain: true` refuse the texts below it.")

    @field_validator("examples")
    @classmethod
    def _at_least_two_labels(cls, examples: list[Example], info: ValidationInfo) -> list[Example]:
        if info.data.get("labels"):
            return examples  # checked against the label names: _label_names_cover_examples
        if not examples:
            raise ValueError("must not be empty: send labelled examples, or `labels` (label names) to start from")
        one_form(examples, examples[0].is_multi_label, "must all give `label` (one label, or null for none of them) "
                  "or all give `labels` (a list: a multi-label model), not both forms")
        labels = len(label_counts(examples))
        if labels < 2 and info.data.get("mode") != "add":  # with `add`, the whole set must have 2: checked on it
            raise ValueError("must contain at least 2 distinct labels (besides `label: null` examples)")
        if labels > LIMITS.max_labels:
            raise ValueError(f"must contain at most {LIMITS.max_labels} distinct labels (MAX_LABELS), not {labels}")
        return examples

    @field_validator("base_model")
    @classmethod
    def _safe_base_model(cls, base_model: str | None) -> str | None:
        if base_model is not None and (problem := base_model_problem(base_model, LIMITS.local_model_dirs)):
            raise ValueError(problem)
        return base_model

    @field_validator("holdout_fraction")
    @classmethod
    def _every_label_can_spare_one(cls, fraction: float | None, info: ValidationInfo) -> float | None:
        examples = info.data.get("examples")
        if fraction and examples:
            counts = label_counts(examples)
            too_few = sorted(label for label, n in counts.items() if n < 2)
            if too_few:
                raise ValueError(
                    "needs at least 2 examples of every label when > 0 (one to train on, one to "
                    f"evaluate); too few for: {', '.join(too_few[:10])}"
                )
        return fraction

    @field_validator("eval_examples")
    @classmethod
    def _evaluation_labels_are_known(cls, evaluation: list[Example] | None,
                                     info: ValidationInfo) -> list[Example] | None:
        examples = info.data.get("examples")
        if evaluation and examples:
            multi_label = examples[0].is_multi_label
            one_form(evaluation, multi_label, "must give `labels` (a list), as the training examples do" if multi_label
                      else "must give `label` (one label, or null), as the training examples do")
            labels_among(evaluation, set(label_counts(examples)), "the training examples' labels")
            if info.data.get("holdout_fraction"):
                raise ValueError("cannot be combined with holdout_fraction > 0: send one or the other")
        return evaluation

    @model_validator(mode="after")
    def _label_names_cover_examples(self) -> TrainRequest:
        if self.labels is None:
            return self
        names = [label.name for label in self.labels]
        repeated = sorted(name for name in set(names) if names.count(name) > 1)
        if repeated:
            raise ValueError(f"labels: names must be distinct; repeated: {', '.join(repeated[:10])}")
        if self.is_multi_label or any(example.is_multi_label for example in self.examples):
            raise ValueError("labels: label names start single-label models; send `label` in examples")
        for field, examples in (("examples", self.examples), ("eval_examples", self.eval_examples or [])):
            unknown = sorted(set(label_counts(examples)) - set(names))
            if unknown:
                raise ValueError(f"{field}: labels must be among `labels`; unknown: {', '.join(unknown[:10])}")
        return self

    @model_validator(mode="after")
    def _coverage_is_single_label(self) -> TrainRequest:
        if self.abstention_coverage is not None and self.is_multi_label:
            raise ValueError("abstention_coverage: is for single-label models; a multi-label model learns a "
                             "threshold per label instead (and answers `labels: []` when none reaches it)")
        return self

    @property
    def is_multi_label(self) -> bool:
        return bool(self.examples) and self.examples[0].is_multi_label

    @property
    def coverage(self) -> float:
        return self.abstention_coverage if self.abstention_coverage is not None else DEFAULT_ABSTENTION_COVERAGE


# A Hub revision: a branch, tag or commit id.
REVISION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")


class ImportRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "model_name": "support-intents",
        "source": "/models/incoming/my-setfit-model",
        "labels": ["billing", "cancel", "login"],
    }})

    model_name: ModelName = Field(description="Name the imported model is registered and served under.")
    source: BaseModelName = Field(
        description="A Hugging Face Hub id (downloaded with HF_TOKEN) or an absolute directory inside "
        "LOCAL_MODEL_DIRS holding a SetFit model (SetFitModel.save_pretrained's files).")
    revision: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=REVISION_PATTERN.pattern,
        description="Hub source only: the branch, tag or commit to download (default: the main branch).")
    labels: list[NonBlankLabel] | None = Field(
        default=None, min_length=2, max_length=LIMITS.max_labels,
        description="Names of the head's classes, in class order; required when the model has none "
        "(its config_setfit.json `labels`), and then as many as the head has classes.")
    eval_examples: list[Example] | None = Field(
        default=None, min_length=1, max_length=LIMITS.max_train_examples,
        description="Examples to score the model on (accuracy, per-label metrics); labels among its labels.")

    @field_validator("source")
    @classmethod
    def _safe_source(cls, source: str) -> str:
        if problem := base_model_problem(source, LIMITS.local_model_dirs):
            raise ValueError(problem)
        return source

    @field_validator("revision")
    @classmethod
    def _hub_revision(cls, revision: str | None, info: ValidationInfo) -> str | None:
        if revision is not None:
            if ".." in revision:
                raise ValueError("must not contain '..'")
            source = info.data.get("source")
            if source is not None and is_local_path(source):
                raise ValueError("is for a Hugging Face Hub source only, not a local directory")
        return revision

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        return distinct(labels)

    @field_validator("eval_examples")
    @classmethod
    def _evaluation_labels_are_named(cls, evaluation: list[Example] | None,
                                     info: ValidationInfo) -> list[Example] | None:
        if evaluation:
            one_form(evaluation, False, "must give `label` (one label, or null for none of them): imported models "
                                         "are single-label")
            labels = info.data.get("labels")
            if labels:
                labels_among(evaluation, set(labels), "`labels`")
        return evaluation


class TrainAccepted(BaseModel):
    job_id: str
    kind: JobKind = Field(default="train", description="train (POST /v1/train), import (POST /v1/models/import) or "
                                                     "retrain (POST /v1/models/{name}/retrain).")
    status: JobStatus
    model_name: str
    created_at: UtcTimestamp
    warnings: list[str] = Field(default_factory=list, description="About the examples, e.g. labels with very few.")
