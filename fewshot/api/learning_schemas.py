"""The HTTP contract of learning from users: what to label next (POST /v1/models/{name}/suggest),
corrections and confirmations (POST /v1/models/{name}/feedback) and the label audit (GET
/v1/models/{name}/suspects). The maths behind them is fewshot/learning."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fewshot.api.example_schemas import ExampleView
from fewshot.api.schemas import LIMITS, Example, NonBlankText, OneLabelForm

MAX_SUGGESTIONS = 200
MAX_SUSPECTS_PAGE = 1000

class SuggestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "texts": ["is my card on its way?", "can I pay in euros", "why was I charged twice"], "k": 2}})

    texts: list[NonBlankText] = Field(default_factory=list, max_length=LIMITS.max_pool_texts, description=(
        "The pool: unlabelled texts to choose from (MAX_POOL_TEXTS at most). Repeats count once; texts already "
        "in the example set are never suggested."))
    logged: bool = Field(default=False, description=(
        "Also choose from the texts the prediction log sampled from this model's /v1/predict traffic "
        "(PREDICTION_LOG_SAMPLE), newest first, up to MAX_POOL_TEXTS in all."))
    k: int = Field(strict=True, default=20, ge=1, le=MAX_SUGGESTIONS, description="How many texts to suggest.")

    @model_validator(mode="after")
    def _some_pool(self) -> SuggestRequest:
        if not self.texts and not self.logged:
            raise ValueError("texts: send the pool of unlabelled texts (or `logged: true` to use the prediction log)")
        return self

class Suggestion(OneLabelForm):
    text: str
    label: str | None = Field(default=None, description=(
        "The served version's guess (null: it abstained, none of its labels); accept it or correct it with "
        "POST /v1/models/{name}/feedback."))
    labels: list[str] | None = Field(default=None, description="Multi-label models: the labels it guesses.")
    score: float = Field(description=(
        "How unsure the model is, in [0, 1]: 1 where its two most probable labels tie (multi-label: where a "
        "label sits on its threshold) or where it abstained."))
    reason: Literal["uncertain", "abstained", "near_threshold"] = Field(description=(
        "`uncertain`: its two most probable labels are close; `abstained`: it answered none of its labels; "
        "`near_threshold`: multi-label, a label's probability is close to its threshold."))

class SuggestResponse(BaseModel):
    suggestions: list[Suggestion] = Field(description=(
        "At most `k` texts, most uncertain first, no two alike: of each of `k` groups of similar uncertain texts, "
        "the one most uncertain and most typical of the group."))
    model_version: str = Field(description="The version (name:version) whose answers ranked them.")
    pool: int = Field(description="Distinct texts considered (repeats and texts in the example set left out).")
    logged: int = Field(default=0, description="Of them, texts from the prediction log (`logged: true`).")
    already_labelled: int = Field(description="Texts of the pool that are in the example set.")

class FeedbackRequest(Example):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["label"]}, {"required": ["labels"]}],
        "example": {"text": "is my card on its way?", "label": "card_arrival"}})

class FeedbackResponse(BaseModel):
    example: ExampleView = Field(description="The example the set now holds for the text (`source: feedback` "
                                             "unless the set already held it with this label).")
    replaced: ExampleView | None = Field(default=None, description=(
        "The example the set held for this text with another label: replaced by this one."))
    duplicate: bool = Field(description="The set already held the text with this label: nothing changed.")
    total: int = Field(description="Examples in the set now.")

class SuspectsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=MAX_SUSPECTS_PAGE, description="Most suspects to return.")

class Suspect(OneLabelForm):
    id: str = Field(description="The example's id in the set.")
    text: str
    label: str | None = Field(default=None, description="Its label in the set (null: none of the labels).")
    labels: list[str] | None = Field(default=None, description="Multi-label sets: its labels in the set.")
    suggested_label: str | None = Field(default=None, description=(
        "Single-label: the label the evidence points to (null: none of the labels)."))
    suggested_labels: list[str] | None = Field(default=None, description="Multi-label: the label set it points to.")
    score: float = Field(description=(
        "`disagrees`: the suggested label's out-of-fold probability minus the given one's (0-1, higher: more "
        "suspect); `near_duplicate`: the two texts' cosine similarity."))
    reason: Literal["disagrees", "near_duplicate"] = Field(description=(
        "`disagrees`: a head fitted without this example (5-fold cross-validation) finds its label less likely "
        "than that label's examples typically are, and another label more likely; `near_duplicate`: another "
        "example says nearly the same thing with another label."))
    conflicts_with: str | None = Field(default=None, description="`near_duplicate`: the other example's id.")

class ThinLabel(BaseModel):
    label: str
    examples: int
    needed: int = Field(description="Examples a label needs to be audited (and for the fixed evaluation).")

class SuspectsResponse(BaseModel):
    suspects: list[Suspect] = Field(description="Most suspect first: disagreements by score, then near-duplicates.")
    thin_labels: list[ThinLabel] = Field(description="Labels with too few examples to audit: add some.")
    examples: int = Field(description="Examples audited (the whole set).")
    model_version: str = Field(description="The version whose body embedded them.")


class PredictionLogDeleted(BaseModel):
    deleted: int = Field(description="Logged texts forgotten.")
