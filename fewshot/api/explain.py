"""Why a version answered what it did (POST /v1/explain): the answer, the spans that carried it
(occlusion), and the training examples nearest the text: of any label, and of the explained one
(neighbours; its `support`: where a wrong label that taught the answer shows itself).

Everything is asked of the inference service like any other prediction: the whole texts, the first
round's occlusion variants and the texts' embeddings go out together, so the coalescer merges them
into the same calls as concurrent /v1/predict traffic, through the version's served backend; then
the second round's variants, which need the first round's heaviest span. The maths is
fewshot/learning/explanations.py; the schemas fewshot/api/explain_schemas.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter
from starlette.responses import JSONResponse

from fewshot import store
from fewshot.api import errors
from fewshot.api.errors import documented
from fewshot.api.explain_schemas import (
    MAX_EXPLAIN_CHARS,
    ExplainRequest,
    ExplainResponse,
    Explanation,
    NearExample,
    SpanWeight,
)
from fewshot.api.gateway import ExampleStoreDep, InferenceDep
from fewshot.api.inference import InferenceClient, TextRefused, prediction_answer
from fewshot.api.inference_schemas import PredictRequest
from fewshot.learning.explanations import (
    Granularity,
    Span,
    cosine_similarities,
    heaviest,
    most_similar,
    occlusion_variants,
    occlusion_weights,
    ranks,
    second_round_variants,
    spans_within,
)
from fewshot.serving.items import ItemPrediction, TextItem
from fewshot.serving.scope import ScopeIndex
from fewshot.settings import get_settings
from fewshot.store import StoredModel

router = APIRouter()

Target = str | tuple[str, ...] | None


@dataclass(frozen=True)
class TrainingPoints:
    """A version's training examples and their embeddings by its body, row by row."""

    texts: list[str]
    targets: list[Target]
    vectors: np.ndarray

    def rows_with(self, label: str) -> np.ndarray:
        """The rows whose training label is `label` (or, multi-label, whose labels include it)."""
        return np.array([row for row, target in enumerate(self.targets)
                         if target == label or (isinstance(target, tuple) and label in target)], dtype=np.int64)


NO_POINTS = TrainingPoints([], [], np.empty((0, 0), dtype=np.float32))
KEPT_VERSIONS = 4
"""Versions whose training points the gateway keeps in memory (banking77's 616 MiniLM rows: ~1 MB)."""
_kept: OrderedDict[str, TrainingPoints] = OrderedDict()


@dataclass(frozen=True)
class Plan:
    """What occlusion's first round asks of one text: its spans and the variants without each."""

    granularity: Granularity | None = None
    spans: tuple[Span, ...] = ()
    variants: tuple[str, ...] = ()


@router.post("/v1/explain", response_model=ExplainResponse, responses=documented(400, 404, 503))
async def explain(body: ExplainRequest, client: InferenceDep, sets: ExampleStoreDep) -> ExplainResponse | JSONResponse:
    """Why the model answered what it did: for each text, the answer as /v1/predict gives it, how much each
    word (or sentence) carried the explained label (occlusion), and the training examples nearest it."""
    version = await asyncio.to_thread(store.resolve, body.model_name)
    if version is None:
        return errors.unknown_model(body.model_name)
    if body.label is not None and body.label not in version.labels:
        return errors.invalid(f"label: {body.label!r} is not a label of {version.tag} (its labels: "
                              f"{', '.join(version.labels)})")
    plans = plan_occlusion(body)
    if isinstance(plans, JSONResponse):
        return plans
    every_label = len(version.labels)
    wholes = [TextItem(model_name=version.tag, text=text, top_k=every_label, threshold=body.threshold,
                       abstain=body.abstain) for text in body.texts]
    variants = [variant for plan in plans for variant in plan.variants]
    try:
        # all at once: the inference calls, and the set's ids read while they run
        answers, variant_answers, embedded, points, in_set = await asyncio.gather(
            client.predict(wholes),
            client.answers(version.tag, variants, top_k=every_label) if variants else _nothing(),
            client.embed([TextItem(model_name=version.tag, text=text) for text in body.texts])
            if body.neighbors else _nothing(),
            training_points(client, version) if body.neighbors else _nothing(),
            asyncio.to_thread(sets.all, version.name) if body.neighbors else _nothing())
    except TextRefused as refused:  # a variant is part of its text: the text is longer than the version takes
        owner = list(itertools.chain.from_iterable([i] * len(plan.variants) for i, plan in enumerate(plans)))
        return errors.invalid(f"texts[{owner[refused.index]}]: {refused}")
    shown = prediction_answer(PredictRequest.model_construct(model_name=version.tag, texts=list(body.texts)),
                              [_as_predict_shows(answer, version) for answer in answers])
    if isinstance(shown, JSONResponse):
        return shown
    if (variants and variant_answers is None) or (body.neighbors and points is None) \
            or not all(item.found for item in embedded or []):
        return errors.unknown_model(version.tag)  # deleted while it was explained
    ids = {example.text: example.id for example in in_set or []}
    labels = [body.label or answer.label or (answer.scores or [])[0].label for answer in answers]
    weights = first_round(plans, answers, labels, variant_answers or []) if body.occludes else []
    rounds = await second_round(client, version.tag, every_label, body.texts, plans, labels, weights) \
        if body.occludes else []
    if rounds is None:
        return errors.unknown_model(version.tag)
    explanations = []
    for index, (text, answer, prediction, plan, label) in enumerate(zip(body.texts, answers, shown.predictions, plans,
                                                                        labels, strict=True)):
        explanation = Explanation(text=text, prediction=prediction, label=label,
                                  score=round(score_of(answer, label), 6))
        if body.occludes:
            explanation.granularity = plan.granularity
            explanation.spans = [SpanWeight(start=span.start, end=span.end, text=span.of(text), weight=round(weight, 6),
                                            rank=rank)
                                 for span, weight, rank in zip(plan.spans, weights[index], rounds[index], strict=True)]
        if body.neighbors:
            # one product for both lists
            similarities = cosine_similarities(np.frombuffer(embedded[index].vector, dtype=np.float32), points.vectors)
            explanation.nearest = [near_example(points, row, similarity, ids)
                                   for row, similarity in most_similar(similarities, body.top_k)]
            rows = points.rows_with(label)
            explanation.support = [near_example(points, int(rows[row]), similarity, ids)
                                   for row, similarity in most_similar(similarities[rows], body.top_k)]
        explanations.append(explanation)
    return ExplainResponse(explanations=explanations, model_version=version.tag)


def first_round(plans: Sequence[Plan], answers: Sequence[ItemPrediction], labels: Sequence[str],
                variant_answers: Sequence[ItemPrediction]) -> list[list[float]]:
    """Each text's span weights: its label's probability on the whole text minus without each span."""
    left = iter(variant_answers)
    return [occlusion_weights(score_of(answer, label), [score_of(next(left), label) for _ in plan.variants])
            for plan, answer, label in zip(plans, answers, labels, strict=True)]


async def second_round(client: InferenceClient, tag: str, every_label: int, texts: Sequence[str],
                       plans: Sequence[Plan], labels: Sequence[str],
                       weights: Sequence[list[float]]) -> list[list[int]] | None:
    """Each text's span ranks (fewshot/learning/explanations.py `ranks`): its heaviest span left out with each
    other in turn, every text's variants asked together; a text of two spans or fewer ranks by weight alone.
    None: the version was deleted meanwhile."""
    tops = [heaviest(weighed) if len(plan.spans) > 2 else None for plan, weighed in zip(plans, weights, strict=True)]
    variants = [second_round_variants(text, plan.spans, top) if top is not None else []
                for text, plan, top in zip(texts, plans, tops, strict=True)]
    flat = [variant for per_text in variants for variant in per_text]
    answers = await client.answers(tag, flat, top_k=every_label) if flat else []
    if answers is None:
        return None
    left = iter(answers)
    return [ranks(weighed, top, [score_of(next(left), label) for _ in per_text])
            for weighed, top, per_text, label in zip(weights, tops, variants, labels, strict=True)]


def plan_occlusion(body: ExplainRequest) -> list[Plan] | JSONResponse:
    """Each text's spans and variants (none for `neighbors`), or the 400 naming the limit a text is over."""
    if not body.occludes:
        return [Plan() for _ in body.texts]
    cap = get_settings().max_explain_spans
    plans, work = [], 0
    for index, text in enumerate(body.texts):
        chosen = spans_within(text, body.granularity, cap)
        if chosen is None:
            return errors.invalid(f"texts[{index}]: it has more than MAX_EXPLAIN_SPANS={cap} sentences, the most "
                                  "spans an explanation leaves out of one text; send a shorter text")
        granularity, spans = chosen
        variants = occlusion_variants(text, spans)
        plans.append(Plan(granularity, tuple(spans), tuple(variants)))
        work += len(text) + 2 * sum(map(len, variants))  # the second round's variants are shorter still
    if work > MAX_EXPLAIN_CHARS:
        return errors.invalid(f"texts: explaining them predicts {work:,} characters (each text, and each twice "
                              f"per span left out), over the limit of {MAX_EXPLAIN_CHARS:,} per request; send "
                              "fewer or shorter texts, or `granularity: sentence`")
    return plans


def score_of(answer: ItemPrediction, label: str) -> float:
    """`label`'s probability in an answer that ranked every label."""
    return next((scored.score for scored in answer.scores or [] if scored.label == label), 0.0)


def _as_predict_shows(answer: ItemPrediction, version: StoredModel) -> ItemPrediction:
    """The answer as /v1/predict shows it without top_k: every label's score only where it abstained, or for
    a multi-label model (they were asked for here to read the explained label's)."""
    if answer.abstained or version.metadata.get("task") == "multi_label":
        return answer
    return answer.model_copy(update={"scores": None})


def near_example(points: TrainingPoints, row: int, similarity: float, ids: dict[str, str]) -> NearExample:
    text, target = points.texts[row], points.targets[row]
    return NearExample(text=text, label=None if isinstance(target, tuple) else target,
                       labels=list(target) if isinstance(target, tuple) else None,
                       similarity=round(similarity, 4), example_id=ids.get(text))


async def training_points(client: InferenceClient, version: StoredModel) -> TrainingPoints | None:
    """The version's training examples and their embeddings: from its scope index where that lines up with
    them (one file, no inference), else those its trainer cached, the rest embedded now; kept for the next
    request. None: deleted meanwhile."""
    if (kept := _kept.get(version.tag)) is not None:
        _kept.move_to_end(version.tag)
        return kept
    examples = await asyncio.to_thread(version.training_examples)
    if not examples:
        return NO_POINTS  # an import: trained elsewhere
    texts, targets = [text for text, _ in examples], [target for _, target in examples]
    vectors = await asyncio.to_thread(scope_vectors, version, targets)
    if vectors is None:
        try:
            vectors = await client.vectors(version, texts)
        except TextRefused:  # not for a text it trained on; never a 500 if a limit was lowered since
            return NO_POINTS
        if vectors is None:
            return None
    points = TrainingPoints(texts, targets, np.asarray(vectors, dtype=np.float32))
    _kept[version.tag] = points
    while len(_kept) > KEPT_VERSIONS:
        _kept.popitem(last=False)
    return points


def scope_vectors(version: StoredModel, targets: Sequence[Target]) -> np.ndarray | None:
    """The training examples' embeddings from the version's scope index (its labelled examples', then its
    `label: null` ones', each in training order); None where it has none or it does not line up."""
    index = ScopeIndex.load(version.path)
    labelled = np.array([target is not None for target in targets], dtype=bool)
    if index is None or len(index.in_scope) != labelled.sum() or len(index.negatives) != (~labelled).sum():
        return None
    vectors = np.empty((len(targets), index.in_scope.shape[1]), dtype=np.float32)
    vectors[labelled], vectors[~labelled] = index.in_scope, index.negatives
    return vectors


async def _nothing() -> None:
    return None
