"""What the API shows of a model and its versions.

Views: `fewshot.api.views` builds them from the store's versions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fewshot.backend_cache import ServingBackend
from fewshot.records.jobs import StrategyComparison
from fewshot.records.outcomes import Abstention, ConfusionMatrix, LabelMetrics, Promotion, Scope
from fewshot.timestamps import UtcTimestamp


class LongTexts(BaseModel):
    """How a version reads a text longer than its window (fewshot/serving/long_texts.py)."""

    policy: Literal["truncate", "head_tail", "chunks"] = Field(description=(
        "truncate: the first window of tokens; head_tail: its first quarter and last three quarters; chunks: "
        "overlapping windows (up to 32), their embeddings averaged."))
    requested: Literal["auto", "truncate", "head_tail", "chunks"] | None = Field(
        default=None, description="What the training request asked for; null: a version from before the choice.")
    window_tokens: int | None = Field(default=None, description="The base model's window: tokens per forward pass.")
    long_examples: int | None = Field(default=None, description="Training examples longer than the window.")
    scores: dict[str, float] | None = Field(default=None, description=(
        "auto, where examples were longer than the window: each policy's out-of-fold accuracy on them."))
    reason: str | None = Field(default=None, description="Why this policy.")


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
    long_texts: LongTexts = Field(description=(
        "How it reads a text longer than its window (`long_texts` of the training request); `truncate` for a "
        "version trained before the choice or imported."))
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
