"""fewshot: train SetFit classifiers over HTTP and serve their predictions and embeddings.

    client ─HTTP─▶ Gateway (this file's `Gateway`)             Trainer (Huey consumer, trainers/)
                   auth · validation · /v1 routes ─enqueue─▶ queue ─▶ SetFit · register in store
                   predict/embeddings ─to_async─▶ Inference (batchable; grouped by model; GPU)

Only wiring lives here: the services, their resources, routes and middleware.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from fastapi import FastAPI
from starlette.responses import JSONResponse

from fewshot import store
from fewshot.auth import APIKeyMiddleware
from fewshot.coalesce import Coalescer
from fewshot.content_type import JSONBodyOnlyMiddleware
from fewshot.dependencies import keep_sessions_open
from fewshot.dispatch import use_continuous_batching
from fewshot.errors import ErrorShapeMiddleware, error_body
from fewshot.logs import use_bentoml_log_handlers
from fewshot.metrics_endpoint import JobGaugesMiddleware
from fewshot.openapi import OpenAPIDocumentMiddleware, correct_document
from fewshot.readiness import dependencies_ready
from fewshot.schemas import (
    MODEL_NAME_RULE,
    EmbeddingsRequest,
    EmbeddingsResponse,
    HealthResponse,
    ItemEmbedding,
    ItemPrediction,
    JobView,
    ModelView,
    Prediction,
    PredictRequest,
    PredictResponse,
    TextItem,
    TrainAccepted,
    TrainRequest,
    is_valid_model_name,
)
from fewshot.settings import apply_process_environment, get_settings, reexec_serve_cli_with_store_home

settings = get_settings()
# Before anything touches the BentoML store: every process shares the store under MODEL_PATH.
reexec_serve_cli_with_store_home(settings)
apply_process_environment(settings)

from trainers.tasks import QueueFull, jobs, submit_training  # noqa: E402 - needs the environment set above

use_continuous_batching()  # the inference worker's batch dispatchers are built after this import

REQUEST_TIMEOUT_SECONDS = 300
# Items (texts) from concurrent requests per batch. The latency bound is far above any real
# batch: requests queue behind busy batches instead of failing with 503.
BATCH = {"batchable": True, "max_batch_size": settings.max_batch_size, "max_latency_ms": 60_000}
# A fixed content type spares BentoML from deriving it from the JSON schema on every response.
Predictions = Annotated[list[ItemPrediction], ContentType("application/json")]
Embeddings = Annotated[list[ItemEmbedding], ContentType("application/json")]


@bentoml.service(name="fewshot-inference", workers=1, resources={"gpu": 1},
                 traffic={"timeout": REQUEST_TIMEOUT_SECONDS})
class Inference:
    """Holds the loaded models; merges texts of concurrent requests into one batch per model."""

    def __init__(self) -> None:
        from fewshot import metrics
        from fewshot.inference import InferenceRuntime, ModelCache, use_threads

        use_bentoml_log_handlers(settings.log_level)
        use_threads(settings.inference_threads)
        runtime = InferenceRuntime.resolve(settings.inference_dtype, settings.max_batch_tokens,
                                           trust_remote_code=settings.trust_remote_code)
        self.models = ModelCache.for_runtime(runtime, settings.model_refresh_seconds, settings.max_loaded_models,
                                             on_load=lambda tag: metrics.MODEL_LOADS.inc(),
                                             on_evict=lambda name: metrics.MODEL_EVICTIONS.inc())
        self.batch_texts = metrics.INFERENCE_BATCH_TEXTS

    @bentoml.api(**BATCH)
    def predict(self, items: list[TextItem]) -> Predictions:
        from fewshot.inference import predict_items

        self.batch_texts.labels("predict").observe(len(items))
        return predict_items(self.models, items)

    @bentoml.api(**BATCH)
    def embed(self, items: list[TextItem]) -> Embeddings:
        from fewshot.inference import embed_items

        self.batch_texts.labels("embeddings").observe(len(items))
        return embed_items(self.models, items)

    @bentoml.on_shutdown
    def stop_refreshing(self) -> None:
        self.models.stop()


@bentoml.service(name="fewshot-trainer", workers=1)
class EmbeddedTrainer:
    """Runs the Huey consumer (`python -m trainers.consumer`) beside the server and supervises it."""

    def __init__(self) -> None:
        from fewshot.supervisor import ChildSupervisor

        use_bentoml_log_handlers(settings.log_level)
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


def not_found(message: str) -> JSONResponse:
    return JSONResponse(error_body(message), status_code=404)


def unknown_model(name: str) -> JSONResponse:
    return not_found(f"model_name: no model named {name!r}; train one with POST /v1/train")


@bentoml.asgi_app(routes, path="/")
@bentoml.service(name="fewshot", http={"port": 8000}, traffic={"timeout": REQUEST_TIMEOUT_SECONDS})
class Gateway:
    inference = bentoml.depends(Inference)
    if settings.embedded_trainer:
        trainer = bentoml.depends(EmbeddedTrainer)

    def __init__(self) -> None:
        use_bentoml_log_handlers(settings.log_level)
        self.dependencies = [self.inference, self.trainer] if settings.embedded_trainer else [self.inference]
        for dependency in self.dependencies:
            keep_sessions_open(dependency, timeout_seconds=REQUEST_TIMEOUT_SECONDS)
        # Concurrent requests share calls to the inference service (see fewshot.coalesce).
        self.predict_items = Coalescer(self._send_predict, max_items=settings.max_batch_size)
        self.embed_items = Coalescer(self._send_embed, max_items=settings.max_batch_size)

    async def _send_predict(self, items: list[TextItem]) -> list[ItemPrediction]:
        return await self.inference.to_async.predict(items)

    async def _send_embed(self, items: list[TextItem]) -> list[ItemEmbedding]:
        return await self.inference.to_async.embed(items)

    async def __is_ready__(self) -> bool:
        return await dependencies_ready(self.dependencies)

    @bentoml.api(route="/v1/train")
    def train(self, request: TrainRequest, /, ctx: bentoml.Context) -> TrainAccepted:
        """Queue a training job; poll GET /v1/jobs/{job_id} for its outcome."""
        try:
            record = submit_training(request, max_queued=settings.max_queued_jobs)
        except QueueFull as full:
            # BentoML gives a returned response the context's status, so set it there.
            ctx.response.status_code = 429
            ctx.response.headers["Retry-After"] = "30"
            return JSONResponse(error_body(str(full)), status_code=429)
        ctx.response.status_code = 202
        return TrainAccepted(job_id=record.job_id, status=record.status, model_name=record.model_name,
                             created_at=record.created_at)

    @bentoml.api(route="/v1/predict")
    async def predict(self, request: PredictRequest, /) -> PredictResponse:
        """Label and probability of each text, in input order."""
        results = await self.predict_items(request.items())
        if not all(result.found for result in results):
            return unknown_model(request.model_name)
        return PredictResponse(predictions=[
            Prediction(text=text, label=result.label, score=result.score)
            for text, result in zip(request.texts, results, strict=True)
        ])

    @bentoml.api(route="/v1/embeddings")
    async def embeddings(self, request: EmbeddingsRequest, /) -> EmbeddingsResponse:
        """Sentence embeddings from the model's fine-tuned body, in input order."""
        results = await self.embed_items(request.items())
        if not all(result.found for result in results):
            return unknown_model(request.model_name)
        return EmbeddingsResponse(embeddings=[result.vector for result in results])

    @routes.get("/health", response_model=HealthResponse)
    def health(self) -> HealthResponse:
        return HealthResponse()

    @routes.get("/v1/jobs/{job_id}", response_model=JobView)
    def get_job(self, job_id: str) -> JobView | JSONResponse:
        record = jobs.get(job_id)
        return record.view() if record else not_found(f"job_id: no job with id {job_id!r}")

    @routes.get("/v1/models/{model_name}", response_model=ModelView)
    def get_model(self, model_name: str) -> ModelView | JSONResponse:
        if not is_valid_model_name(model_name):
            return JSONResponse(error_body(f"model_name: {MODEL_NAME_RULE}"), status_code=400)
        stored = store.latest(model_name)
        return stored.view() if stored else unknown_model(model_name)


Gateway.add_asgi_middleware(JobGaugesMiddleware, count=jobs.count)
Gateway.add_asgi_middleware(APIKeyMiddleware, api_key=settings.api_key)
Gateway.add_asgi_middleware(
    OpenAPIDocumentMiddleware,
    build=lambda: correct_document(
        Gateway.openapi_spec.asdict(),
        status_overrides={"/v1/train": 202},
        errors_by_path={"/v1/train": ["400", "415", "429"], "/v1/predict": ["400", "404", "415", "503"],
                        "/v1/embeddings": ["400", "404", "415", "503"], "/v1/jobs/{job_id}": ["404"],
                        "/v1/models/{model_name}": ["400", "404"]},
    ),
)
Gateway.add_asgi_middleware(JSONBodyOnlyMiddleware, paths=["/v1/train", "/v1/predict", "/v1/embeddings"])
Gateway.add_asgi_middleware(ErrorShapeMiddleware)
