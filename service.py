"""fewshot: train SetFit classifiers over HTTP and serve their predictions and embeddings.

    client ─HTTP─▶ Gateway (this file's `Gateway`)             Trainer (Huey consumer, trainers/)
                   auth · validation · /v1 routes ─enqueue─▶ queue ─▶ SetFit · register in store
                   predict/embeddings ─to_async─▶ Inference (batchable; grouped by model; GPU)
                   explain: a text, its occlusion variants, its embedding ─▶ the same Inference calls
                   files/batches ─enqueue─▶ batch queue ─▶ Batch worker (batches/: shards, engine, SCHED_IDLE)

Only wiring lives here: the services, their resources, the route table and the middleware. Each route
hands its request to the room of fewshot/api that owns its resource (models, jobs, training, examples,
learning, explain, inference, files, batches), where its rules and views live; fewshot/serving is the inference
engine, fewshot/records what the API and the workers share, fewshot/bentoml_fixes every BentoML
workaround, trainers/ the jobs' queue and training, batches/ the batch worker (docs/architecture.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from batches import tasks as batch_queue
from fewshot import bentoml_fixes
from fewshot.api import batches, errors, examples, explain, files, inference, jobs, learning, models, training
from fewshot.api.auth import APIKeyMiddleware
from fewshot.api.body_limit import RequestBodyLimitMiddleware
from fewshot.api.errors import responds
from fewshot.api.gateway import BatchQueue, TrainingQueue
from fewshot.api.inference import InferenceClient
from fewshot.api.inference_schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    OpenAIEmbeddingsResponse,
    PredictRequest,
    PredictResponse,
)
from fewshot.api.schemas import HealthResponse
from fewshot.api.training_schemas import ImportRequest, TrainAccepted, TrainRequest
from fewshot.bentoml_fixes.dependency_clients import keep_sessions_open, once_more_if_disconnected
from fewshot.bentoml_fixes.readiness import dependencies_ready
from fewshot.records.jobs import count_by_status
from fewshot.records.stores import jobs as job_records
from fewshot.serving.items import ItemEmbedding, ItemPrediction, TextItem
from fewshot.settings import apply_process_environment, get_settings
from trainers import tasks as training_queue

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


@bentoml.service(name="fewshot-inference", workers=1, resources={"gpu": 1},
                 traffic={"timeout": REQUEST_TIMEOUT_SECONDS})
class Inference:
    """Holds the loaded models; merges texts of concurrent requests into one batch per model."""

    def __init__(self) -> None:
        from fewshot import metrics
        from fewshot.serving.model_cache import ModelCache
        from fewshot.serving.model_loading import InferenceRuntime, single_threaded_numpy

        single_threaded_numpy()
        runtime = InferenceRuntime.from_settings(settings)
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
    """Runs the Huey consumers beside the server and supervises them: the trainer (`python -m
    trainers.consumer`) and the batch worker (`python -m batches.consumer`)."""

    def __init__(self) -> None:
        from trainers.supervisor import ChildSupervisor

        self.consumers = [ChildSupervisor.for_module("trainers.consumer", name="trainer"),
                          ChildSupervisor.for_module("batches.consumer", name="batch worker")]
        for consumer in self.consumers:
            consumer.start()

    def __is_ready__(self) -> bool:
        # The gateway's /readyz asks this service's: not ready while a consumer is down
        # (between a crash and its restart), so a health check sees a dead trainer.
        return all(consumer.alive() for consumer in self.consumers)

    @bentoml.on_shutdown
    def stop_consumer(self) -> None:
        for consumer in self.consumers:
            consumer.stop()


routes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
# The route table: each resource's routes live in its room of fewshot/api (POST /v1/train, /v1/models/import,
# /v1/predict and /v1/embeddings are BentoML APIs, on the Gateway below).
for room in (models, jobs, examples, training, learning, explain, files, batches):
    routes.include_router(room.router)


@routes.get("/health", response_model=HealthResponse)
def health() -> HealthResponse:
    return HealthResponse()


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
        self.client = InferenceClient(self._send_predict, self._send_embed, self._refresh_models,
                                      settings.max_batch_size, settings.max_latency_ms,
                                      settings.max_texts_per_request)
        self.queue: TrainingQueue = training_queue
        self.batch_queue: BatchQueue = batch_queue
        self.sampler = None  # PREDICTION_LOG_SAMPLE: a share of predicted texts kept as a pool to suggest from
        if settings.prediction_log_sample > 0:
            from fewshot import metrics
            from fewshot.api.prediction_sampling import PredictionSampler
            from fewshot.records.stores import prediction_log

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

    async def _refresh_models(self, names: list[str]) -> None:
        await self.inference.to_async.refresh_models(names)

    async def __is_ready__(self) -> bool:
        return await dependencies_ready(self.dependencies)

    @bentoml.api(route="/v1/train")
    @responds(400, 415, 429, success=202)
    def train(self, request: TrainRequest, /, ctx: bentoml.Context) -> TrainAccepted:
        """Queue a training job; poll GET /v1/jobs/{job_id} for its outcome. The examples become the
        model's example set (`mode: add`: they join it, and the whole set is trained on)."""
        return training.train(self.queue, request, ctx)

    @bentoml.api(route="/v1/models/import")
    @responds(400, 415, 429, success=202)
    def import_model(self, request: ImportRequest, /, ctx: bentoml.Context) -> TrainAccepted:
        """Queue an import job for a SetFit model from the Hub or LOCAL_MODEL_DIRS; poll GET /v1/jobs/{job_id}."""
        return training.import_model(self.queue, request, ctx)

    @bentoml.api(route="/v1/predict")
    @responds(400, 404, 415, 503)
    async def predict(self, request: PredictRequest, /) -> PredictResponse:
        """Label and probability of each text, in input order; a multi-label model's labels over their
        thresholds; no label (abstained) for a text that is none of them."""
        return await inference.predict(self.client, request, self.sampler)

    @bentoml.api(route="/v1/embeddings")
    @responds(400, 404, 415, 503, also=(OpenAIEmbeddingsResponse,))
    async def embeddings(self, request: EmbeddingsRequest, /) -> EmbeddingsResponse:
        """Sentence embeddings from the model's fine-tuned body, in input order. Also takes OpenAI's
        request (model, input, encoding_format, dimensions) and answers it in OpenAI's shape."""
        return await inference.embeddings(self.client, request)


routes.add_exception_handler(RequestValidationError, errors.request_validation_failed)
Gateway.add_asgi_middleware(APIKeyMiddleware, api_key=settings.api_key)
# Behind the key check (a client without the key is refused before its body is read), before all else.
Gateway.add_asgi_middleware(RequestBodyLimitMiddleware, max_bytes=settings.max_request_bytes,
                            uploads={"/v1/files": settings.max_file_bytes})
bentoml_fixes.install(Gateway, routes, settings, job_counts=lambda: count_by_status(job_records))
# After install(), which re-executes a `bentoml serve` CLI started without them: every process
# of the server (and the trainer it starts) shares the store under MODEL_PATH and configuration.yaml.
apply_process_environment(settings)
