"""Request, response and error schemas of every route: the HTTP contract.

Validation lives here, so that BentoML rejects bad input with a 400 before any handler runs.
Responses about jobs and models are views: `fewshot.api.views` builds them from the records.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from fewshot.backend_cache import ServingBackend
from fewshot.base_models import base_model_problem, is_local_path
from fewshot.records.jobs import JobKind, JobStatus, StrategyComparison
from fewshot.records.outcomes import (
    DEFAULT_ABSTENTION_COVERAGE,
    Abstention,
    ConfusionMatrix,
    LabelMetrics,
    Promotion,
    Scope,
    Target,
)
from fewshot.serving.items import LabelScore, TextItem
from fewshot.settings import get_settings
from fewshot.timestamps import UtcTimestamp

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
NonBlankText = Annotated[
    str,
    Field(max_length=LIMITS.max_text_chars, json_schema_extra={"minLength": 1, "pattern": NOT_BLANK_PATTERN}),
    AfterValidator(_check_not_blank),
]
# A Hub id ("org/name", at most 96 characters on the Hub) or a local directory's absolute path,
# which Linux bounds at PATH_MAX (4096): not a text, so MAX_TEXT_CHARS does not apply to it.
BASE_MODEL_MAX_LENGTH = 4096
BaseModelName = Annotated[
    str,
    Field(max_length=BASE_MODEL_MAX_LENGTH, json_schema_extra={"minLength": 1, "pattern": NOT_BLANK_PATTERN}),
    AfterValidator(_check_not_blank),
]


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
    label: NonBlankText | None = Field(default=None, description=(
        "Its label. null: the text belongs to none of the labels (teaches a model what to refuse)."))
    # A list when sent (the schema says so: `labels: null` is no form of its own); None: not sent.
    labels: Annotated[Annotated[list[NonBlankText], AfterValidator(distinct)] | None,
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


def _labels_among(evaluation: list[Example], known: set[str], whose: str) -> None:
    """Evaluation examples (eval_examples) may only have labels the model knows."""
    unknown = sorted(set(label_counts(evaluation)) - known)
    if unknown:
        raise ValueError(f"labels must be among {whose}; unknown: {', '.join(unknown[:10])}")


def one_form(examples: list[Example], multi_label: bool, rule: str) -> None:
    mixed = [i for i, example in enumerate(examples) if example.is_multi_label != multi_label]
    if mixed:
        raise ValueError(f"{rule} (see item {mixed[0]})")


class LabelName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: NonBlankText = Field(description="The label, as predictions will name it.")
    description: NonBlankText | None = Field(default=None, description=(
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
            _labels_among(evaluation, set(label_counts(examples)), "the training examples' labels")
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


MAX_EMBEDDING_DIMENSIONS = 65_536

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
    labels: list[NonBlankText] | None = Field(
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
                _labels_among(evaluation, set(labels), "`labels`")
        return evaluation


class TrainAccepted(BaseModel):
    job_id: str
    kind: JobKind = Field(default="train", description="train (POST /v1/train), import (POST /v1/models/import) or "
                                                     "retrain (POST /v1/models/{name}/retrain).")
    status: JobStatus
    model_name: str
    created_at: UtcTimestamp
    warnings: list[str] = Field(default_factory=list, description="About the examples, e.g. labels with very few.")


class JobView(BaseModel):
    job_id: str
    kind: JobKind = Field(default="train", description="train (POST /v1/train), import (POST /v1/models/import) or "
                                                     "retrain (POST /v1/models/{name}/retrain).")
    status: JobStatus
    model_name: str
    created_at: UtcTimestamp
    started_at: UtcTimestamp | None = None
    finished_at: UtcTimestamp | None = None
    error: str | None = None
    model_version: str | None = Field(default=None, description="Store version, once completed.")
    attempts: int = Field(default=0, description="How many times a trainer started this job.")
    note: str | None = Field(default=None, description="What happened to the job besides its status.")
    progress: float | None = Field(default=None, ge=0, le=1,
                                   description="Share of fine-tuning steps done (0–1) once training started; "
                                               "1 when completed.")
    step: int | None = Field(default=None, description="Fine-tuning steps done.")
    total_steps: int | None = Field(default=None, description="Fine-tuning steps in all.")
    cancel_requested: bool = Field(default=False, description="Cancelled while running: the trainer stops "
                                                              "at its next step and the job ends `cancelled`.")
    warnings: list[str] = Field(default_factory=list, description="About the examples, e.g. labels with very few.")
    comparison: StrategyComparison | None = Field(default=None, description="strategy auto: which model won.")
    promotion: Promotion | None = Field(default=None, description=(
        "A retrain: whether its version replaced the served one (`promoted`), and why; when not, the version is "
        "kept (reachable as name:version) and not served."))


MAX_JOBS_PAGE = 500


class JobListQuery(BaseModel):
    """GET /v1/jobs query parameters."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    model_name: ModelName | None = None
    limit: int = Field(default=50, ge=1, le=MAX_JOBS_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=64,
                               description="`next_cursor` of the previous page.")


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last.")


class ModelView(BaseModel):
    model_name: str
    model_version: str
    tag: str = Field(description="name:version: pins this version in predict and embeddings.")
    base_model: str = Field(description="The base model it was trained from; for an imported version, its source.")
    created_at: UtcTimestamp
    task: Literal["single_label", "multi_label"] = Field(
        default="single_label", description="single_label: one label per text; multi_label: a set of labels.")
    accuracy: float | None = Field(description=(
        "Accuracy on the evaluation examples (multi-label: subset accuracy, the share of texts whose predicted "
        "label set is exactly right); null without them."))
    micro_f1: float | None = Field(default=None, description="Multi-label: F1 over every (text, label) decision.")
    macro_f1: float | None = Field(default=None, description=(
        "Multi-label: the mean of the per-label F1 over the labels with evaluation examples."))
    thresholds: dict[str, float] | None = Field(default=None, description=(
        "Multi-label: each label's threshold, learned on the evaluation examples: the one maximising its F1, shrunk "
        "toward the one maximising F1 over all labels the fewer positive examples it has (that one alone for a "
        "label without any; 0.5 when no label has any)."))
    abstention: Abstention | None = Field(default=None, description=(
        "Single-label: the top-probability abstention threshold and what abstaining by it did on the evaluation "
        "examples; what `abstain: true` uses for a version without `scope` (trained before scope scores)."))
    scope: Scope | None = Field(default=None, description=(
        "Single-label: how the version tells foreign texts apart (`abstain: true` in predict): the scope score, its "
        "threshold, what set it and what it refused on the evaluation examples. Null for a version trained before "
        "scope scores (it abstains by `abstention.threshold` until retrained), a multi-label or imported one."))
    training_duration_seconds: float | None = Field(description="Null for an imported version.")
    num_examples: int | None = Field(description="Examples received, hold-out included; null for an imported version.")
    eval_num_examples: int = Field(description="Evaluation examples accuracy was measured on.")
    labels: list[str]
    job_id: str | None = None
    strategy: Literal["setfit", "head", "imported"] = Field(
        default="setfit", description="How this version was made: fine-tuned, head only, or imported.")
    source: str | None = Field(default=None, description="imported: the Hub id or directory it came from.")
    revision: str | None = Field(default=None, description="imported from the Hub: the commit downloaded.")
    label_metrics: dict[str, LabelMetrics] | None = Field(
        default=None, description="Per label, on the evaluation examples; null without them.")
    eval_source: Literal["holdout", "eval_examples"] | None = Field(
        default=None, description="Where the evaluation examples came from.")
    confusion_matrix: ConfusionMatrix | None = Field(default=None, description=(
        "Single-label: the evaluation examples by true label (rows) and answer (columns), the answers `accuracy` "
        "scored; null without evaluation examples, for a multi-label version (see `label_metrics`), or a version "
        "trained before it was kept."))
    comparison: StrategyComparison | None = Field(
        default=None, description="strategy auto, on the fine-tuned version it registered: both scores.")
    held: str | None = Field(default=None, description=(
        "Why this version is not served (a retrain that scored worse than the served version, `promote: "
        "if_better`); null for a version that is, or was, served. `name` serves the newest version not held."))
    promotion: Promotion | None = Field(default=None, description="A retrained version: the comparison that "
                                                                   "decided whether it is served.")
    examples_digest: str | None = Field(default=None, description=(
        "A hash of the examples it was trained on (texts and labels, hold-out included): equal to the example "
        "set's `digest` (GET /v1/models/{name}/examples) when it was trained on the set as it is now. Null for "
        "an imported version or one trained before it was kept."))
    backend: ServingBackend | None = Field(
        default=None, description="What serves this version (INFERENCE_BACKEND, INFERENCE_QUANTIZE), as its last "
        "load in the inference service found: torch, or an ONNX Runtime / OpenVINO export, and `error` when an "
        "export failed and torch serves it instead. Null until the version is first loaded (first request).")


class ModelVersions(BaseModel):
    model_name: str
    versions: list[ModelView] = Field(description="Newest first; `model_name` serves the first one that is not `held`.")


class ModelList(BaseModel):
    models: list[ModelVersions] = Field(description="Most recently trained first.")


class ModelsDeleted(BaseModel):
    deleted: list[str] = Field(description="The name:version tags deleted.")
    examples_deleted: int = Field(default=0, description=(
        "Deleting a whole model deletes its example set too: how many examples it held."))


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
        if self.is_openai:  # OpenAI's response reports tokens (`usage`): counted only for it
            return [TextItem(model_name=self.reference, text=text, count_tokens=True) for text in self.all_texts()]
        return [TextItem(model_name=self.reference, text=text) for text in self.all_texts()]


class EmbeddingsResponse(BaseModel):
    embeddings: list[list[float]]


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


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorResponse(BaseModel):
    error: str = Field(description="What is wrong, naming the field and the rule where there is one.")
    detail: Any = Field(default=None, description="Structured detail, e.g. each validation error.")
