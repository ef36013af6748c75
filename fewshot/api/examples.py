"""A model's example set: list it a page at a time, add to it, delete from it.

The set's rules (one form, MAX_LABELS, MAX_TRAIN_EXAMPLES) are checked by the store inside its write
(fewshot/records/examples.py): checked here first, two requests at once could each pass and together
mix the set's forms or pass its caps. This room turns a broken rule into the 400 that names it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from fewshot import store
from fewshot.api import errors
from fewshot.api.errors import documented
from fewshot.api.example_schemas import (
    AddExamplesRequest,
    DeleteExamplesRequest,
    ExampleConflict,
    ExampleList,
    ExampleListQuery,
    ExamplesAdded,
    ExamplesDeleted,
    ExampleView,
    new_examples,
)
from fewshot.api.gateway import ExampleStoreDep
from fewshot.api.schemas import is_valid_model_name
from fewshot.bentoml_fixes.openapi_document import query_parameters
from fewshot.records.examples import (
    AddOutcome,
    SetFull,
    SetRuleBroken,
    SetRules,
    TooManyLabels,
    UnknownExampleCursor,
    WrongForm,
)
from fewshot.settings import get_settings

router = APIRouter()


def form_to_send(multi_label: bool) -> str:
    """What a set (or model) of this form is, and what to send it."""
    return "multi-label: send `labels` (a list)" if multi_label else "single-label: send `label` (one label, or null)"


@router.get("/v1/models/{model_name}/examples", response_model=ExampleList, responses=documented(400, 404),
            openapi_extra={"parameters": query_parameters(ExampleListQuery)})
def list_examples(model_name: str, request: Request, sets: ExampleStoreDep) -> ExampleList | JSONResponse:
    """The examples the model is trained from, in the order they were added, a page at a time."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    query = errors.validated_query(ExampleListQuery, request.query_params)
    if isinstance(query, JSONResponse):
        return query
    state = sets.state(model_name)  # the stored count and digest: no page reads the whole set
    if not state.count and store.resolve(model_name) is None:
        return errors.unknown_model(model_name)
    try:
        page = sets.page(model_name, query.limit + 1, label=query.label, after=query.cursor)
    except UnknownExampleCursor:
        return errors.invalid("cursor: no example with this id in the set (deleted meanwhile?); start again "
                              "without cursor")
    shown = page[:query.limit]
    total = state.count if query.label is None else state.labels.get(query.label, 0)
    return ExampleList(examples=[ExampleView.of(example) for example in shown], total=total,
                       next_cursor=shown[-1].id if len(page) > query.limit else None, digest=state.digest)


# 404: a path the router matches to no route (a name with a newline), as on every route with a name in its path
@router.post("/v1/models/{model_name}/examples", response_model=ExamplesAdded, responses=documented(400, 404))
def add_examples(model_name: str, body: AddExamplesRequest, sets: ExampleStoreDep) -> ExamplesAdded | JSONResponse:
    """Add examples to the model's set (made if it has none); POST /v1/models/{name}/retrain trains on it."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    settings = get_settings()
    rules = SetRules(max_labels=settings.max_labels, max_examples=settings.max_train_examples)
    try:
        outcome = sets.add(model_name, new_examples(body.examples), "added", rules=rules)
    except WrongForm as wrong:
        return errors.invalid(f"examples: the example set of {model_name!r} is {form_to_send(wrong.multi_label)}")
    except TooManyLabels as labels:
        return errors.invalid(f"examples: the set would have {labels.labels} labels, more than MAX_LABELS="
                              f"{labels.limit}")
    except SetFull as full:
        return errors.invalid(f"examples: the set holds {full.held} examples; with {full.sent} more it could "
                              f"exceed MAX_TRAIN_EXAMPLES={full.limit}: delete some first")
    except SetRuleBroken as broken:  # no other rule is asked here; never a 500 if one is added
        return errors.invalid(f"examples: {broken}")
    return added_view(outcome)


def added_view(outcome: AddOutcome) -> ExamplesAdded:
    return ExamplesAdded(added=[ExampleView.of(e) for e in outcome.added],
                         duplicates=[ExampleView.of(e) for e in outcome.duplicates],
                         conflicts=[ExampleConflict(existing=ExampleView.of(c.existing), label=c.label,
                                                    labels=c.labels) for c in outcome.conflicts],
                         total=outcome.total)


@router.delete("/v1/models/{model_name}/examples/{example_id}", response_model=ExamplesDeleted,
               responses=documented(400, 404))
def delete_example(model_name: str, example_id: str, sets: ExampleStoreDep) -> ExamplesDeleted | JSONResponse:
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    deleted = sets.delete(model_name, [example_id])
    if not deleted:
        return errors.error_response(404, f"example_id: no example {example_id!r} in the set of {model_name!r}")
    return ExamplesDeleted(deleted=deleted, not_found=[], total=sets.count(model_name))


@router.post("/v1/models/{model_name}/delete-examples", response_model=ExamplesDeleted,
             responses=documented(400, 404))  # 404: the router's, for a name with a newline
def delete_examples(model_name: str, body: DeleteExamplesRequest,
                    sets: ExampleStoreDep) -> ExamplesDeleted | JSONResponse:
    """Delete many examples of the set at once, by id."""
    if not is_valid_model_name(model_name):
        return errors.invalid_model_name()
    deleted = sets.delete(model_name, body.ids)
    return ExamplesDeleted(deleted=deleted, not_found=[i for i in body.ids if i not in set(deleted)],
                           total=sets.count(model_name))
