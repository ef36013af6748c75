"""Learning from users: what to label next (suggest), corrections (feedback), suspect labels (suspects),
and forgetting the prediction log. The routes gather the answers (from the inference service and the
example set); the maths is fewshot/learning; the schemas are fewshot/api/learning_schemas.py; here the
served version's predictions become probability matrices, and the maths' row numbers examples again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from fewshot import store
from fewshot.api import errors
from fewshot.api.errors import documented
from fewshot.api.example_schemas import ExampleView, new_examples
from fewshot.api.examples import form_to_send
from fewshot.api.gateway import ExampleStoreDep, InferenceDep, PredictionLogDep, SamplerDep
from fewshot.api.inference import InferenceClient, TextRefused
from fewshot.api.learning_schemas import (
    FeedbackRequest,
    FeedbackResponse,
    PredictionLogDeleted,
    Suggestion,
    SuggestRequest,
    SuggestResponse,
    Suspect,
    SuspectsQuery,
    SuspectsResponse,
    ThinLabel,
)
from fewshot.api.schemas import is_valid_model_name
from fewshot.bentoml_fixes.openapi_document import query_parameters
from fewshot.learning.audit import MIN_LABEL_EXAMPLES, NONE_OF_THESE, Audit, audit, audit_multi_label
from fewshot.learning.selection import SHORTLIST_PER_PICK, rank_pool, shortlist
from fewshot.learning.selection import Suggestion as Picked
from fewshot.records.examples import SetRuleBroken, SetRules, StoredExample, UnknownLabel, WrongForm
from fewshot.serving.items import ItemPrediction
from fewshot.settings import get_settings
from fewshot.store import StoredModel

router = APIRouter()


@dataclass(frozen=True)
class Pool:
    texts: list[str]
    """What to rank: each text once, none in the example set."""
    already_labelled: int
    logged: int
    """Of `texts`, those only the prediction log gave."""


def gather_pool(sent: Sequence[str], logged: Sequence[str], labelled: Collection[str], max_texts: int) -> Pool:
    """The texts sent, then the logged ones (newest first) up to `max_texts` in all; repeats once, and
    texts of the example set left out (counted)."""
    sent_once = list(dict.fromkeys(sent))
    extra = [text for text in dict.fromkeys(logged) if text not in set(sent_once)][:max(0, max_texts - len(sent_once))]
    considered = sent_once + extra
    texts = [text for text in considered if text not in labelled]
    return Pool(texts=texts, already_labelled=len(considered) - len(texts),
                logged=sum(text not in labelled for text in extra))


def is_multi_label(version: StoredModel) -> bool:
    return version.metadata.get("task") == "multi_label"


def probability_matrix(version: StoredModel, answers: Sequence[ItemPrediction]) -> np.ndarray:
    """One row per answer, one column per label of the version (`scores` asked for every label)."""
    column = {label: index for index, label in enumerate(version.labels)}
    matrix = np.zeros((len(answers), len(column)))
    for row, answer in enumerate(answers):
        for scored in answer.scores or []:
            if scored.label in column:
                matrix[row, column[scored.label]] = scored.score
    return matrix


def thresholds_of(version: StoredModel) -> np.ndarray | None:
    """A multi-label version's threshold per label, in label order (0.5 where it learned none)."""
    if not is_multi_label(version):
        return None
    learned = version.metadata.get("thresholds") or {}
    return np.array([float(learned.get(label, 0.5)) for label in version.labels])


def suggestions_view(version: StoredModel, pool: Pool, answers: Sequence[ItemPrediction],
                     picked: Sequence[Picked]) -> SuggestResponse:
    multi = is_multi_label(version)
    return SuggestResponse(
        suggestions=[Suggestion(text=pool.texts[p.index], score=round(p.uncertainty, 4), reason=p.reason,
                                **({"labels": answers[p.index].labels or []} if multi else
                                   {"label": answers[p.index].label}))
                     for p in picked],
        model_version=version.tag, pool=len(pool.texts), already_labelled=pool.already_labelled, logged=pool.logged)


def audit_set(vectors: np.ndarray, examples: Sequence[StoredExample]) -> Audit:
    """The label audit of an example set (its rows embedded as `vectors`): by label, with NONE_OF_THESE
    for `label: null` examples, or by label set for a multi-label set."""
    if examples and examples[0].labels is not None:
        return audit_multi_label(vectors, [list(example.labels or []) for example in examples])
    return audit(vectors, [example.label if example.label is not None else NONE_OF_THESE for example in examples])


def suspects_view(version: StoredModel, examples: Sequence[StoredExample], found: Audit,
                  limit: int) -> SuspectsResponse:
    multi = bool(examples) and examples[0].labels is not None

    def suggested(value: str | tuple[str, ...]) -> dict[str, object]:
        if multi:
            return {"suggested_labels": list(value)}
        return {"suggested_label": None if value == NONE_OF_THESE else value}

    suspects = []
    for suspect in found.suspects[:limit]:
        example = examples[suspect.index]
        suspects.append(Suspect(
            id=example.id, text=example.text, score=round(suspect.score, 4), reason=suspect.why,
            **({"labels": example.labels} if multi else {"label": example.label}), **suggested(suspect.suggested),
            conflicts_with=examples[suspect.other_index].id if suspect.other_index is not None else None))
    return SuspectsResponse(
        suspects=suspects, examples=len(examples), model_version=version.tag,
        thin_labels=[ThinLabel(label=label or "(none of these)", examples=count, needed=MIN_LABEL_EXAMPLES)
                     for label, count in found.thin.items()])


@router.post("/v1/models/{model_name}/suggest", response_model=SuggestResponse, responses=documented(400, 404))
async def suggest(model_name: str, body: SuggestRequest, client: InferenceDep, sets: ExampleStoreDep,
                  logged_texts: PredictionLogDep, sampler: SamplerDep) -> SuggestResponse | JSONResponse:
    """The texts of a pool whose labels would teach the served version most: uncertain, no two alike, none
    already in the example set; each with the model's guess."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    settings = get_settings()
    version = await asyncio.to_thread(store.resolve, model_name)
    if version is None:
        return errors.unknown_model(model_name)
    labelled = [example.text for example in await asyncio.to_thread(sets.all, model_name)]
    if body.logged and sampler is not None:
        await asyncio.to_thread(sampler.flush)  # the texts predicted until now, not a second ago
    logged = await asyncio.to_thread(logged_texts.texts, model_name, settings.max_pool_texts) if body.logged else []
    if body.logged and not logged:
        off = settings.prediction_log_sample == 0
        return errors.invalid(f"logged: no texts of {model_name!r} are logged"
                              + (" (the prediction log is off: PREDICTION_LOG_SAMPLE is 0)" if off else ""))
    pool = gather_pool(body.texts, logged, set(labelled), settings.max_pool_texts)
    if not pool.texts:
        return errors.invalid(f"{'texts' if body.texts else 'logged'}: every text of the pool is already in the "
                              "example set")
    # The margin needs a single-label version's two best labels only (every label's scores of 10,000
    # texts were ~770,000 objects in the gateway); a multi-label one's closeness needs every label.
    top_k = min(len(version.labels), settings.max_labels) if is_multi_label(version) else 2
    try:
        answers = await client.answers(version.tag, pool.texts, top_k=top_k)
        if answers is None:
            return errors.unknown_model(version.tag)
        picked = await _picks(client, version, pool.texts, answers, labelled, body.k)
    except TextRefused as refused:  # a pool text longer than the version takes
        return errors.invalid(f"texts: a text of the pool is longer than version {version.tag} takes: {refused}")
    if picked is None:
        return errors.unknown_model(version.tag)
    return suggestions_view(version, pool, answers, picked)


async def _picks(client: InferenceClient, version: StoredModel, texts: list[str], answers: list[ItemPrediction],
                 labelled: list[str], k: int) -> list[Picked] | None:
    """rank_pool's picks, embedding only the pool's shortlist (and the set, mostly cached), widened
    fourfold while near-duplicates leave fewer than k picks; rows of the whole pool."""
    probabilities, thresholds = probability_matrix(version, answers), thresholds_of(version)
    abstained = np.array([bool(answer.abstained) for answer in answers])
    size = SHORTLIST_PER_PICK * k
    while True:
        rows = shortlist(probabilities, k, thresholds, abstained, size)
        vectors = await client.vectors(version, [texts[row] for row in rows] + labelled)
        if vectors is None:
            return None
        picked = await asyncio.to_thread(rank_pool, probabilities[rows], vectors[:len(rows)], k,
                                         vectors[len(rows):], thresholds, abstained[rows])
        if len(picked) == k or len(rows) == len(texts):
            return [replace(pick, index=int(rows[pick.index])) for pick in picked]
        size *= 4


@router.delete("/v1/models/{model_name}/prediction-log", response_model=PredictionLogDeleted,
               responses=documented(400, 404))  # 404: a path the router matches to no route (a name with a newline)
def delete_prediction_log(model_name: str, logged: PredictionLogDep,
                          sampler: SamplerDep) -> PredictionLogDeleted | JSONResponse:
    """Forget the texts the prediction log kept of this model's traffic (PREDICTION_LOG_SAMPLE)."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    if sampler is not None:
        sampler.flush()  # what was predicted before this is forgotten too, not written just after it
    return PredictionLogDeleted(deleted=logged.drop(model_name))


@router.post("/v1/models/{model_name}/feedback", response_model=FeedbackResponse, responses=documented(400, 404))
def feedback(model_name: str, body: FeedbackRequest, sets: ExampleStoreDep) -> FeedbackResponse | JSONResponse:
    """The right label for a text (the model's answer confirmed or corrected, or null: none of the labels):
    into the example set as `source: feedback`, replacing what the set held for the text."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    version = store.resolve(model_name)
    if version is None and not sets.count(model_name):
        return errors.unknown_model(model_name)
    # Checked by the store inside its write, against the set as it is then: the set's form (an empty
    # set's: the version's) and its labels or the version's.
    rules = SetRules(known_labels=frozenset(version.labels if version else ()),
                     multi_label_if_empty=is_multi_label(version) if version else None)
    field = "labels" if body.is_multi_label else "label"
    try:
        outcome = sets.add(model_name, new_examples([body]), "feedback", overrule=True, rules=rules)
    except WrongForm as wrong:
        return errors.invalid(f"label: {model_name!r} is {form_to_send(wrong.multi_label)}")
    except UnknownLabel as unknown:
        return errors.invalid(f"{field}: {unknown.label!r} is not a label of {model_name!r} (its labels: "
                              f"{', '.join(unknown.known)}); a new label is added with "
                              f"POST /v1/models/{model_name}/examples")
    except SetRuleBroken as broken:  # no other rule is asked of feedback; never a 500 if one is added
        return errors.invalid(f"{field}: {broken}")
    example: StoredExample = (outcome.added or outcome.duplicates)[0]
    return FeedbackResponse(example=ExampleView.of(example), duplicate=not outcome.added, total=outcome.total,
                            replaced=ExampleView.of(outcome.replaced[0]) if outcome.replaced else None)


@router.get("/v1/models/{model_name}/suspects", response_model=SuspectsResponse, responses=documented(400, 404),
            openapi_extra={"parameters": query_parameters(SuspectsQuery)})
async def suspects(model_name: str, request: Request, client: InferenceDep,
                   sets: ExampleStoreDep) -> SuspectsResponse | JSONResponse:
    """Examples of the set whose label looks wrong, most suspect first, each with the label the evidence
    points to; and labels with too few examples to tell."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    query = errors.validated_query(SuspectsQuery, request.query_params)
    if isinstance(query, JSONResponse):
        return query
    examples = await asyncio.to_thread(sets.all, model_name)
    version = await asyncio.to_thread(store.resolve, model_name)
    if version is None:
        return errors.error_response(404, f"model_name: {model_name!r} has no version to audit its examples "
                                          f"with{'; train it first' if examples else ''}")
    if not examples:
        return errors.error_response(404, f"model_name: {model_name!r} has no example set")
    try:
        vectors = await client.vectors(version, [example.text for example in examples])
    except TextRefused as refused:
        return errors.invalid(f"model_name: example {examples[refused.index].text[:40]!r}… is longer than version "
                              f"{version.tag} takes: {refused}")
    if vectors is None:
        return errors.unknown_model(version.tag)
    found = await asyncio.to_thread(audit_set, vectors, examples)
    return suspects_view(version, examples, found, query.limit)
