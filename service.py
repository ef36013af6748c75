"""fewshot: train SetFit classifiers over HTTP and serve their predictions and embeddings.

    client ─HTTP─▶ Gateway (this file's `Gateway`)             Trainer (Huey consumer, trainers/)
                   auth · validation · /v1 routes ─enqueue─▶ queue ─▶ SetFit · register in store
                   predict/embeddings ─to_async─▶ Inference (batchable; grouped by model; GPU)

Only wiring lives here: the services, their resources, routes and middleware. The parts they are
wired from: fewshot/api (the HTTP contract: schemas, errors, auth, views), fewshot/serving (the
inference engine), fewshot/bentoml_fixes (every BentoML workaround), trainers/ (jobs, queue,
training), and the shared fewshot/store.py and fewshot/settings.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from bentoml.validators import ContentType
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse, Response

from fewshot import bentoml_fixes, store
from fewshot.api import errors
from fewshot.api.auth import APIKeyMiddleware
from fewshot.api.body_limit import RequestBodyLimitMiddleware
from fewshot.api.errors import describe_validation_errors, documented, responds
from fewshot.api.example_schemas import (
    AddExamplesRequest,
    DeleteExamplesRequest,
    ExampleConflict,
    ExampleList,
    ExampleListQuery,
    ExamplesAdded,
    ExamplesDeleted,
    ExampleView,
    RetrainRequest,
    new_examples,
    training_request,
)
from fewshot.api.learning import (
    audit_set,
    gather_pool,
    is_multi_label,
    probability_matrix,
    suggestions_view,
    suspects_view,
    thresholds_of,
)
from fewshot.api.learning_schemas import (
    FeedbackRequest,
    FeedbackResponse,
    PredictionLogDeleted,
    SuggestRequest,
    SuggestResponse,
    SuspectsQuery,
    SuspectsResponse,
)
from fewshot.api.openai_compat import openai_response
from fewshot.api.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    HealthResponse,
    ImportRequest,
    JobList,
    JobListQuery,
    JobView,
    ModelList,
    ModelsDeleted,
    ModelView,
    OpenAIEmbeddingsResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    TrainAccepted,
    TrainRequest,
    is_valid_model_name,
    is_valid_model_reference,
)
from fewshot.api.views import accepted_view, job_view, model_versions, model_view
from fewshot.bentoml_fixes.dependency_clients import keep_sessions_open, once_more_if_disconnected
from fewshot.bentoml_fixes.openapi_document import query_parameters
from fewshot.bentoml_fixes.readiness import dependencies_ready
from fewshot.learning.selection import SHORTLIST_PER_PICK, rank_pool, shortlist
from fewshot.learning.selection import Suggestion as Picked
from fewshot.model_archive import ARCHIVE_MEDIA_TYPE, archive_name, write_archive_file
from fewshot.records import embedding_cache
from fewshot.records.examples import (
    SetFull,
    SetRuleBroken,
    SetRules,
    StoredExample,
    TooManyLabels,
    UnknownExampleCursor,
    UnknownLabel,
    WrongForm,
    set_digest,
)
from fewshot.records.jobs import (
    JobRecord,
    NotCancellable,
    QueueFull,
    RetrainPlan,
    SetNotTrainable,
    UnknownCursor,
    count_by_status,
)
from fewshot.records.stores import example_sets, jobs, prediction_log
from fewshot.serving.coalesce import Coalescer
from fewshot.serving.items import ItemEmbedding, ItemPrediction, TextItem
from fewshot.settings import apply_process_environment, get_settings
from fewshot.store import StoredModel
from trainers.tasks import (
    cancel_job,
    submit_import,
    submit_retrain,
    submit_training,
)

settings = get_settings()
logger = logging.getLogger("fewshot.gateway")

REQUEST_TIMEOUT_SECONDS = 300
# Items (texts) from concurrent requests per batch. The latency bound (MAX_LATENCY_MS, also the
# gateway's, below) is by default far above any real batch: requests queue behind busy batches
# instead of failing with 503; lowered, BentoML's dispatcher sheds what would wait longer.
BATCH = {"batchable": True, "max_batch_size": settings.max_batch_size, "max_latency_ms": settings.max_latency_ms}
# A fixed content type spares BentoML from deriving it from the JSON schema on every response.
Predictions = Annotated[list[ItemPrediction], ContentType("application/json")]
Embeddings = Annotated[list[ItemEmbedding], ContentType("application/json")]


def form_to_send(multi_label: bool) -> str:
    """What a set (or model) of this form is, and what to send it."""
    return "multi-label: send `labels` (a list)" if multi_label else "single-label: send `label` (one label, or null)"


def queued(ctx: bentoml.Context, submit: Callable[[], JobRecord]) -> TrainAccepted | JSONResponse:
    """202 with the job `submit` recorded and queued, or 429 when the queue is full."""
    try:
        record = submit()
    except QueueFull as full:
        return errors.queue_full(ctx, str(full))
    ctx.response.status_code = 202
    return accepted_view(record)


@bentoml.service(name="fewshot-inference", workers=1, resources={"gpu": 1},
                 traffic={"timeout": REQUEST_TIMEOUT_SECONDS})
class Inference:
    """Holds the loaded models; merges texts of concurrent requests into one batch per model."""

    def __init__(self) -> None:
        from fewshot import metrics
        from fewshot.serving.model_cache import ModelCache
        from fewshot.serving.model_loading import InferenceRuntime, single_threaded_numpy

        single_threaded_numpy()
        runtime = InferenceRuntime.resolve(settings.inference_dtype, settings.max_batch_tokens,
                                           trust_remote_code=settings.trust_remote_code,
                                           backend=settings.inference_backend, quantize=settings.inference_quantize,
                                           threads=settings.inference_threads, pipeline=settings.inference_pipeline)
        self.models = ModelCache.for_runtime(runtime, settings.model_refresh_seconds, settings.max_loaded_models,
                                             on_load=lambda tag: metrics.MODEL_LOADS.inc(),
                                             on_evict=lambda name: metrics.MODEL_EVICTIONS.inc())
        self.batch_texts = metrics.INFERENCE_BATCH_TEXTS
        self.texts_computed = metrics.INFERENCE_TEXTS

    @bentoml.api(**BATCH)
    def predict(self, items: list[TextItem]) -> Predictions:
        from fewshot.serving.engine import predict_items

        self.batch_texts.labels("predict").observe(len(items))
        return predict_items(self.models, items, self._count_texts("predict"))

    @bentoml.api(**BATCH)
    def embed(self, items: list[TextItem]) -> Embeddings:
        from fewshot.serving.engine import embed_items

        self.batch_texts.labels("embeddings").observe(len(items))
        return embed_items(self.models, items, self._count_texts("embeddings"))

    def _count_texts(self, route: str) -> Callable[[str, str, int], None]:
        """fewshot_inference_texts_total{route, backend, pipeline}: which backend and path really answered."""
        return lambda backend, pipeline, texts: self.texts_computed.labels(route, backend, pipeline).inc(texts)

    @bentoml.api
    def refresh_models(self, names: list[str]) -> None:
        """Re-read these models from the store now (after a deletion)."""
        self.models.refresh(set(names))

    @bentoml.on_shutdown
    def stop_refreshing(self) -> None:
        self.models.stop()


@bentoml.service(name="fewshot-trainer", workers=1)
class EmbeddedTrainer:
    """Runs the Huey consumer (`python -m trainers.consumer`) beside the server and supervises it."""

    def __init__(self) -> None:
        from trainers.supervisor import ChildSupervisor

        self.consumer = ChildSupervisor.for_module("trainers.consumer", name="trainer")
        self.consumer.start()

    def __is_ready__(self) -> bool:
        # The gateway's /readyz asks this service's: not ready while the consumer is down
        # (between a crash and its restart), so a health check sees a dead trainer.
        return self.consumer.alive()

    @bentoml.on_shutdown
    def stop_consumer(self) -> None:
        self.consumer.stop()


routes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.asgi_app(routes, path="/")
@bentoml.service(name="fewshot", http={"port": 8000}, traffic={"timeout": REQUEST_TIMEOUT_SECONDS})
class Gateway:
    inference = bentoml.depends(Inference)
    if settings.embedded_trainer:
        trainer = bentoml.depends(EmbeddedTrainer)

    def __init__(self) -> None:
        self.dependencies = [self.inference, self.trainer] if settings.embedded_trainer else [self.inference]
        for dependency in self.dependencies:
            keep_sessions_open(dependency, timeout_seconds=REQUEST_TIMEOUT_SECONDS)
        # Concurrent requests share calls to the inference service (see fewshot.serving.coalesce);
        # one that has waited MAX_LATENCY_MS for a call is answered 503 (with one gateway worker,
        # requests queue here rather than in BentoML's dispatcher, so this is where load is shed).
        shed = {"max_wait_seconds": settings.max_latency_ms / 1000,
                "waited_too_long": lambda: ServiceUnavailable("too many requests are waiting; retry shortly")}
        self.predict_items = Coalescer(self._send_predict, max_items=settings.max_batch_size, **shed)
        self.embed_items = Coalescer(self._send_embed, max_items=settings.max_batch_size, **shed)
        self.sampler = None  # PREDICTION_LOG_SAMPLE: a share of predicted texts kept as a pool to suggest from
        if settings.prediction_log_sample > 0:
            from fewshot import metrics
            from fewshot.api.prediction_sampling import PredictionSampler

            self.sampler = PredictionSampler(prediction_log, settings.prediction_log_sample,
                                             settings.prediction_log_max_texts, settings.prediction_log_days,
                                             on_dropped=metrics.PREDICTION_LOG_DROPPED.inc)

    @bentoml.on_shutdown
    def stop_sampling(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    async def _send_predict(self, items: list[TextItem]) -> list[ItemPrediction]:
        return await once_more_if_disconnected(lambda: self.inference.to_async.predict(items), "inference")

    async def _send_embed(self, items: list[TextItem]) -> list[ItemEmbedding]:
        return await once_more_if_disconnected(lambda: self.inference.to_async.embed(items), "inference")

    async def __is_ready__(self) -> bool:
        return await dependencies_ready(self.dependencies)

    async def _answers(self, version: str, texts: list[str], **options: object) -> list[ItemPrediction] | None:
        """The version's predictions for any number of texts, a request's worth at a time (None: deleted meanwhile)."""
        size, answers = settings.max_texts_per_request, []
        for start in range(0, len(texts), size):
            answers += await self.predict_items([TextItem(model_name=version, text=text, **options)
                                                 for text in texts[start:start + size]])
        return answers if all(answer.found for answer in answers) else None

    async def _vectors(self, version: StoredModel, texts: list[str]) -> np.ndarray | None:
        """The version's embeddings of `texts`: those its trainer cached (the texts it was trained and
        evaluated on), the rest from the inference service a request's worth at a time (None: deleted
        meanwhile)."""
        cached = await asyncio.to_thread(embedding_cache.read, version.name, version.version) if texts else {}
        missing = list(dict.fromkeys(text for text in texts if text not in cached))
        size = settings.max_texts_per_request
        for start in range(0, len(missing), size):
            chunk = missing[start:start + size]
            results = await self.embed_items([TextItem(model_name=version.tag, text=text) for text in chunk])
            if not all(result.found for result in results):
                return None
            cached.update((text, np.frombuffer(result.vector, dtype=np.float32))
                          for text, result in zip(chunk, results, strict=True))
        return np.stack([cached[text] for text in texts]) if texts else np.empty((0, 0), dtype=np.float32)

    @bentoml.api(route="/v1/train")
    @responds(400, 415, 429, success=202)
    def train(self, request: TrainRequest, /, ctx: bentoml.Context) -> TrainAccepted:
        """Queue a training job; poll GET /v1/jobs/{job_id} for its outcome. The examples become the
        model's example set (`mode: add`: they join it, and the whole set is trained on)."""
        try:
            return queued(ctx, lambda: submit_training(request, max_queued=settings.max_queued_jobs))
        except SetNotTrainable as invalid:
            return errors.invalid_in(ctx, f"{invalid}: {describe_validation_errors(invalid.errors)}")
        except WrongForm as wrong:
            return errors.invalid_in(ctx, f"examples: the example set of {request.model_name!r} is "
                                          f"{form_to_send(wrong.multi_label)}")
        except SetRuleBroken as broken:  # MAX_LABELS, MAX_TRAIN_EXAMPLES: checked in the store's write
            return errors.invalid_in(ctx, f"examples: {broken} (MAX_LABELS, MAX_TRAIN_EXAMPLES)")

    @bentoml.api(route="/v1/models/import")
    @responds(400, 415, 429, success=202)
    def import_model(self, request: ImportRequest, /, ctx: bentoml.Context) -> TrainAccepted:
        """Queue an import job for a SetFit model from the Hub or LOCAL_MODEL_DIRS; poll GET /v1/jobs/{job_id}."""
        return queued(ctx, lambda: submit_import(request, max_queued=settings.max_queued_jobs))

    @bentoml.api(route="/v1/predict")
    @responds(400, 404, 415, 503)
    async def predict(self, request: PredictRequest, /) -> PredictResponse:
        """Label and probability of each text, in input order; a multi-label model's labels over their
        thresholds; no label (abstained) for a text that is none of them."""
        results = await self.predict_items(request.items())
        if not all(result.found for result in results):
            return errors.unknown_model(request.model_name)
        if refused := next((result.error for result in results if result.error), None):
            return errors.invalid(refused)  # asked what this version cannot do (e.g. abstain, multi-label)
        if self.sampler is not None:
            self.sampler.offer(request.model_name, request.texts)
        return PredictResponse(predictions=[
            Prediction(text=text, label=result.label, score=result.score, labels=result.labels,
                       abstained=result.abstained, reason=result.reason, scope_score=result.scope_score,
                       scores=result.scores)
            for text, result in zip(request.texts, results, strict=True)
        ])

    @bentoml.api(route="/v1/embeddings")
    @responds(400, 404, 415, 503, also=(OpenAIEmbeddingsResponse,))
    async def embeddings(self, request: EmbeddingsRequest, /) -> EmbeddingsResponse:
        """Sentence embeddings from the model's fine-tuned body, in input order. Also takes OpenAI's
        request (model, input, encoding_format, dimensions) and answers it in OpenAI's shape."""
        results = await self.embed_items(request.items())
        if not all(result.found for result in results):
            return errors.unknown_model(request.reference, request.field)
        if request.is_openai:
            return openai_response(request, results)
        return EmbeddingsResponse(embeddings=[result.floats() for result in results])

    @routes.get("/health", response_model=HealthResponse)
    def health(self) -> HealthResponse:
        return HealthResponse()

    @routes.get("/v1/jobs", response_model=JobList, responses=documented(400),
                openapi_extra={"parameters": query_parameters(JobListQuery)})
    def list_jobs(self, request: Request) -> JobList | JSONResponse:
        """Jobs newest first, optionally of one status and model, a bounded page at a time."""
        query = errors.validated_query(JobListQuery, request.query_params)
        if isinstance(query, JSONResponse):
            return query
        try:
            # One more than asked: whether there is a next page, without a count.
            page = jobs.page(query.limit + 1, status=query.status, model_name=query.model_name, after=query.cursor)
        except UnknownCursor:
            return errors.invalid("cursor: no job with this id (it may have expired); start again without cursor")
        shown = page[:query.limit]
        return JobList(jobs=[job_view(record) for record in shown],
                       next_cursor=shown[-1].job_id if len(page) > query.limit else None)

    @routes.get("/v1/jobs/{job_id}", response_model=JobView, responses=documented(404))
    def get_job(self, job_id: str) -> JobView | JSONResponse:
        record = jobs.get(job_id)
        return job_view(record) if record else errors.unknown_job(job_id)

    @routes.post("/v1/jobs/{job_id}/cancel", response_model=JobView, responses=documented(404, 409))
    def cancel_job(self, job_id: str) -> JobView | JSONResponse:
        """A pending job ends `cancelled` at once; a running one at its trainer's next step."""
        try:
            record = cancel_job(job_id)
        except NotCancellable as finished:
            return errors.conflict(str(finished))
        return job_view(record) if record else errors.unknown_job(job_id)

    @routes.get("/v1/models", response_model=ModelList)
    def list_models(self) -> ModelList:
        return ModelList(models=[model_versions(name, listed) for name, listed in store.all_models().items()])

    @routes.get("/v1/models/{model_name}", response_model=ModelView, responses=documented(400, 404))
    def get_model(self, model_name: str) -> ModelView | JSONResponse:
        """The latest version of a model, or the version `name:version` names."""
        if not is_valid_model_reference(model_name):
            return errors.invalid_model_reference()
        stored = store.resolve(model_name)
        return model_view(stored) if stored else errors.unknown_model(model_name)

    @routes.get("/v1/models/{model_name}/download", response_class=FileResponse, responses={
        200: {"content": {ARCHIVE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
              "description": "The version's SetFit directory with its model card, as name-version.tar.gz."},
        **documented(400, 404)})
    async def download_model(self, model_name: str) -> Response:
        """The latest version of a model, or `name:version`, as a .tar.gz that SetFitModel.from_pretrained loads."""
        if not is_valid_model_reference(model_name):
            return errors.invalid_model_reference()
        stored = await asyncio.to_thread(store.resolve, model_name)
        if stored is None:
            return errors.unknown_model(model_name)
        try:
            archive = await asyncio.to_thread(write_archive_file, stored)
        except FileNotFoundError:  # deleted while it was being read
            return errors.unknown_model(model_name)
        return FileResponse(archive, media_type=ARCHIVE_MEDIA_TYPE, filename=archive_name(stored),
                            background=BackgroundTask(archive.unlink, missing_ok=True))

    @routes.delete("/v1/models/{model_name}", response_model=ModelsDeleted, responses=documented(400, 404))
    async def delete_model(self, model_name: str) -> ModelsDeleted | JSONResponse:
        """Every version of a model and its example set, or one version (`name:version`); deleting the
        latest version serves the previous."""
        if not is_valid_model_reference(model_name):
            return errors.invalid_model_reference()
        deleted = await asyncio.to_thread(store.delete, model_name)
        name, version = store.split_reference(model_name)
        examples_deleted = await asyncio.to_thread(example_sets.drop, name) if version is None else 0
        if version is None:
            await asyncio.to_thread(prediction_log.drop, name)
        if not deleted:
            if examples_deleted:
                return ModelsDeleted(deleted=[], examples_deleted=examples_deleted)
            return errors.unknown_model(model_name)
        try:  # at once on this host; elsewhere within MODEL_REFRESH_SECONDS
            await self.inference.to_async.refresh_models([name])
        except Exception:
            logger.warning("deleted %s, but the inference service could not drop it now; it will within "
                           "MODEL_REFRESH_SECONDS", ", ".join(deleted), exc_info=True)
        return ModelsDeleted(deleted=deleted, examples_deleted=examples_deleted)

    # --- a model's example set, and retraining from it ------------------------------------------------

    @routes.get("/v1/models/{model_name}/examples", response_model=ExampleList, responses=documented(400, 404),
                openapi_extra={"parameters": query_parameters(ExampleListQuery)})
    def list_examples(self, model_name: str, request: Request) -> ExampleList | JSONResponse:
        """The examples the model is trained from, in the order they were added, a page at a time."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        query = errors.validated_query(ExampleListQuery, request.query_params)
        if isinstance(query, JSONResponse):
            return query
        state = example_sets.state(model_name)  # the stored count and digest: no page reads the whole set
        if not state.count and store.resolve(model_name) is None:
            return errors.unknown_model(model_name)
        try:
            page = example_sets.page(model_name, query.limit + 1, label=query.label, after=query.cursor)
        except UnknownExampleCursor:
            return errors.invalid("cursor: no example with this id in the set (deleted meanwhile?); start again "
                                  "without cursor")
        shown = page[:query.limit]
        total = state.count if query.label is None else state.labels.get(query.label, 0)
        return ExampleList(examples=[ExampleView.of(example) for example in shown], total=total,
                           next_cursor=shown[-1].id if len(page) > query.limit else None, digest=state.digest)

    # 404: a path the router matches to no route (a name with a newline), as on every route with a name in its path
    @routes.post("/v1/models/{model_name}/examples", response_model=ExamplesAdded, responses=documented(400, 404))
    def add_examples(self, model_name: str, body: AddExamplesRequest) -> ExamplesAdded | JSONResponse:
        """Add examples to the model's set (made if it has none); POST /v1/models/{name}/retrain trains on it."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        # The set's rules are checked by the store inside its write: checked here first, two requests at
        # once could each pass and together mix the set's forms or pass its caps.
        rules = SetRules(max_labels=settings.max_labels, max_examples=settings.max_train_examples)
        try:
            outcome = example_sets.add(model_name, new_examples(body.examples), "added", rules=rules)
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
        return ExamplesAdded(added=[ExampleView.of(e) for e in outcome.added],
                             duplicates=[ExampleView.of(e) for e in outcome.duplicates],
                             conflicts=[ExampleConflict(existing=ExampleView.of(c.existing), label=c.label,
                                                        labels=c.labels) for c in outcome.conflicts],
                             total=outcome.total)

    @routes.delete("/v1/models/{model_name}/examples/{example_id}", response_model=ExamplesDeleted,
                   responses=documented(400, 404))
    def delete_example(self, model_name: str, example_id: str) -> ExamplesDeleted | JSONResponse:
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        deleted = example_sets.delete(model_name, [example_id])
        if not deleted:
            return errors.error_response(404, f"example_id: no example {example_id!r} in the set of {model_name!r}")
        return ExamplesDeleted(deleted=deleted, not_found=[], total=example_sets.count(model_name))

    @routes.post("/v1/models/{model_name}/delete-examples", response_model=ExamplesDeleted,
                 responses=documented(400, 404))  # 404: the router's, for a name with a newline
    def delete_examples(self, model_name: str, body: DeleteExamplesRequest) -> ExamplesDeleted | JSONResponse:
        """Delete many examples of the set at once, by id."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        deleted = example_sets.delete(model_name, body.ids)
        return ExamplesDeleted(deleted=deleted, not_found=[i for i in body.ids if i not in set(deleted)],
                               total=example_sets.count(model_name))

    @routes.post("/v1/models/{model_name}/retrain", status_code=202, response_model=TrainAccepted,
                 responses=documented(400, 404, 429))
    def retrain(self, model_name: str, body: RetrainRequest | None = None) -> TrainAccepted | JSONResponse:
        """Train the model again on its example set, from its served version (`strategy`), served only if no
        worse on the set's fixed evaluation examples (`promote`): a job like any other (GET /v1/jobs/{job_id})."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        body = body or RetrainRequest()  # no body: every default
        held = example_sets.all(model_name)
        if not held:
            return errors.error_response(404, f"model_name: {model_name!r} has no example set; add examples with "
                                              f"POST /v1/models/{model_name}/examples or train with POST /v1/train")
        served = store.resolve(model_name)
        try:
            request = TrainRequest.model_validate(training_request(model_name, held, served and served.metadata,
                                                                   body))
        except ValidationError as invalid:
            return errors.invalid(f"the example set of {model_name!r} cannot be trained on: "
                                  f"{describe_validation_errors(invalid.errors(include_url=False))}")
        plan = RetrainPlan(strategy=body.strategy, from_version=served and served.tag, promote=body.promote,
                           digest=set_digest(held), set_size=len(held))
        try:
            record = submit_retrain(request, plan, max_queued=settings.max_queued_jobs)
        except QueueFull as full:
            return errors.queue_full_response(str(full))
        return accepted_view(record)


    # --- learning from users: what to label next, corrections, suspect labels --------------------------

    @routes.post("/v1/models/{model_name}/suggest", response_model=SuggestResponse, responses=documented(400, 404))
    async def suggest(self, model_name: str, body: SuggestRequest) -> SuggestResponse | JSONResponse:
        """The texts of a pool whose labels would teach the served version most: uncertain, no two alike, none
        already in the example set; each with the model's guess."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        version = await asyncio.to_thread(store.resolve, model_name)
        if version is None:
            return errors.unknown_model(model_name)
        labelled = [example.text for example in await asyncio.to_thread(example_sets.all, model_name)]
        logged = await asyncio.to_thread(prediction_log.texts, model_name, settings.max_pool_texts) \
            if body.logged else []
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
        answers = await self._answers(version.tag, pool.texts, top_k=top_k)
        if answers is None:
            return errors.unknown_model(version.tag)
        picked = await self._picks(version, pool.texts, answers, labelled, body.k)
        if picked is None:
            return errors.unknown_model(version.tag)
        return suggestions_view(version, pool, answers, picked)

    async def _picks(self, version: StoredModel, texts: list[str], answers: list[ItemPrediction],
                     labelled: list[str], k: int) -> list[Picked] | None:
        """rank_pool's picks, embedding only the pool's shortlist (and the set, mostly cached), widened
        fourfold while near-duplicates leave fewer than k picks; rows of the whole pool."""
        probabilities, thresholds = probability_matrix(version, answers), thresholds_of(version)
        abstained = np.array([bool(answer.abstained) for answer in answers])
        size = SHORTLIST_PER_PICK * k
        while True:
            rows = shortlist(probabilities, k, thresholds, abstained, size)
            vectors = await self._vectors(version, [texts[row] for row in rows] + labelled)
            if vectors is None:
                return None
            picked = await asyncio.to_thread(rank_pool, probabilities[rows], vectors[:len(rows)], k,
                                             vectors[len(rows):], thresholds, abstained[rows])
            if len(picked) == k or len(rows) == len(texts):
                return [replace(pick, index=int(rows[pick.index])) for pick in picked]
            size *= 4

    @routes.delete("/v1/models/{model_name}/prediction-log", response_model=PredictionLogDeleted,
                   responses=documented(400, 404))  # 404: a path the router matches to no route (a name with a newline)
    def delete_prediction_log(self, model_name: str) -> PredictionLogDeleted | JSONResponse:
        """Forget the texts the prediction log kept of this model's traffic (PREDICTION_LOG_SAMPLE)."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        return PredictionLogDeleted(deleted=prediction_log.drop(model_name))

    @routes.post("/v1/models/{model_name}/feedback", response_model=FeedbackResponse, responses=documented(400, 404))
    def feedback(self, model_name: str, body: FeedbackRequest) -> FeedbackResponse | JSONResponse:
        """The right label for a text (the model's answer confirmed or corrected, or null: none of the labels):
        into the example set as `source: feedback`, replacing what the set held for the text."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        version = store.resolve(model_name)
        if version is None and not example_sets.count(model_name):
            return errors.unknown_model(model_name)
        # Checked by the store inside its write, against the set as it is then: the set's form (an empty
        # set's: the version's) and its labels or the version's.
        rules = SetRules(known_labels=frozenset(version.labels if version else ()),
                         multi_label_if_empty=is_multi_label(version) if version else None)
        try:
            outcome = example_sets.add(model_name, new_examples([body]), "feedback", overrule=True, rules=rules)
        except WrongForm as wrong:
            return errors.invalid(f"label: {model_name!r} is {form_to_send(wrong.multi_label)}")
        except UnknownLabel as unknown:
            return errors.invalid(f"{'labels' if body.is_multi_label else 'label'}: {unknown.label!r} is not a label "
                                  f"of {model_name!r} (its labels: {', '.join(unknown.known)}); a new label is added "
                                  f"with POST /v1/models/{model_name}/examples")
        except SetRuleBroken as broken:  # no other rule is asked of feedback; never a 500 if one is added
            return errors.invalid(f"{'labels' if body.is_multi_label else 'label'}: {broken}")
        example: StoredExample = (outcome.added or outcome.duplicates)[0]
        return FeedbackResponse(example=ExampleView.of(example), duplicate=not outcome.added, total=outcome.total,
                                replaced=ExampleView.of(outcome.replaced[0]) if outcome.replaced else None)

    @routes.get("/v1/models/{model_name}/suspects", response_model=SuspectsResponse, responses=documented(400, 404),
                openapi_extra={"parameters": query_parameters(SuspectsQuery)})
    async def suspects(self, model_name: str, request: Request) -> SuspectsResponse | JSONResponse:
        """Examples of the set whose label looks wrong, most suspect first, each with the label the evidence
        points to; and labels with too few examples to tell."""
        if not is_valid_model_name(model_name):
            return errors.invalid_model_name()
        query = errors.validated_query(SuspectsQuery, request.query_params)
        if isinstance(query, JSONResponse):
            return query
        examples = await asyncio.to_thread(example_sets.all, model_name)
        version = await asyncio.to_thread(store.resolve, model_name)
        if version is None:
            return errors.error_response(404, f"model_name: {model_name!r} has no version to audit its examples "
                                              f"with{'; train it first' if examples else ''}")
        if not examples:
            return errors.error_response(404, f"model_name: {model_name!r} has no example set")
        vectors = await self._vectors(version, [example.text for example in examples])
        if vectors is None:
            return errors.unknown_model(version.tag)
        found = await asyncio.to_thread(audit_set, vectors, examples)
        return suspects_view(version, examples, found, query.limit)


routes.add_exception_handler(RequestValidationError, errors.request_validation_failed)
Gateway.add_asgi_middleware(APIKeyMiddleware, api_key=settings.api_key)
# Behind the key check (a client without the key is refused before its body is read), before all else.
Gateway.add_asgi_middleware(RequestBodyLimitMiddleware, max_bytes=settings.max_request_bytes)
bentoml_fixes.install(Gateway, routes, settings, job_counts=lambda: count_by_status(jobs))
# After install(), which re-executes a `bentoml serve` CLI started without them: every process
# of the server (and the trainer it starts) shares the store under MODEL_PATH and configuration.yaml.
apply_process_environment(settings)
