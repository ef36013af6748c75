"""Every error response of the API, in one shape: {"error": "<what, naming the field and the rule>", "detail": …}.

Handlers return the 400/404/409/429 built here, our middlewares send the 401 and 415 built here,
and `normalise` rewrites any other error body into the shape: BentoML, Starlette and FastAPI each
answer errors their own way (a generic validation title, a JSON array, plain text);
`fewshot.bentoml_fixes.error_shape` applies it to every 4xx/5xx. Each route declares the error
statuses it can answer beside itself (`@responds(...)` on BentoML's APIs, `responses=documented(...)`
on FastAPI's routes); the OpenAPI document lists exactly those, described by `STATUS_DESCRIPTIONS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse
from starlette.types import Send

from fewshot.api.asgi import send_json
from fewshot.api.schemas import MODEL_NAME_RULE, MODEL_REFERENCE_RULE, ErrorResponse
from fewshot.store import split_reference

if TYPE_CHECKING:
    import bentoml

# BentoML answers 503 when its dispatcher sheds load (MAX_LATENCY_MS) and we when the inference
# service is being restarted: both mean the same to a client.
UNAVAILABLE_MESSAGE = ("the server cannot take this request now (overloaded, or its inference service is "
                       "restarting); retry shortly")
INTERNAL_MESSAGE = "internal error; the server log has the details"


STATUS_DESCRIPTIONS = {
    400: "Invalid input: the message names the field and the rule.",
    401: "Missing or wrong API key.",
    404: "Unknown job, model, file or batch.",
    409: "The job or batch has already finished: only unfinished ones can be cancelled.",
    411: "An upload (POST /v1/files) must declare its Content-Length.",
    413: "The request body is larger than MAX_REQUEST_BYTES (an upload: MAX_FILE_BYTES).",
    415: "The body must be JSON (Content-Type: application/json).",
    429: "Too many training jobs pending (MAX_QUEUED_JOBS); retry after Retry-After seconds.",
    500: "Internal error.",
    503: "Overloaded; retry shortly.",
}
UNAUTHORIZED_MESSAGE = "missing or invalid API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
QUEUE_FULL_RETRY_AFTER_SECONDS = 30

Handler = TypeVar("Handler", bound=Callable[..., Any])


def responds(*errors: int, success: int = 200,
             also: tuple[type[BaseModel], ...] = ()) -> Callable[[Handler], Handler]:
    """Declare, beside a BentoML API, its success status and the error statuses it can answer
    besides 401 and 500 (which every protected route can); the OpenAPI document lists these.
    `also`: other success bodies than its return annotation's, which it sends as responses of its
    own (e.g. OpenAI's embeddings shape). (FastAPI routes declare theirs with FastAPI's own
    `responses=`: see `documented`.)"""

    def declare(handler: Handler) -> Handler:
        handler.__responds__ = (success, tuple(sorted(errors)))  # type: ignore[attr-defined]
        handler.__also_responds__ = also  # type: ignore[attr-defined]
        return handler

    return declare


def declared_alternatives(handler: Callable[..., Any]) -> tuple[type[BaseModel], ...]:
    """The other success bodies a route declared with `responds(also=...)`."""
    return getattr(handler, "__also_responds__", ())


def declared_statuses(handler: Callable[..., Any]) -> tuple[int, tuple[int, ...]]:
    """(success status, error statuses) a route declared with `responds`; (200, ()) without."""
    return getattr(handler, "__responds__", (200, ()))


def documented(*errors: int) -> dict[int | str, dict[str, Any]]:
    """A FastAPI route's `responses=`: the error statuses it can answer besides 401 and 500."""
    return {status: {"model": ErrorResponse, "description": STATUS_DESCRIPTIONS[status]} for status in errors}


def error_body(message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": message, "detail": detail}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message), status_code=status, headers=headers)


def invalid(message: str) -> JSONResponse:
    return error_response(400, message)


def invalid_in(ctx: bentoml.Context, message: str) -> JSONResponse:
    """400 from a BentoML API (which gives a returned response the context's status)."""
    ctx.response.status_code = 400
    return invalid(message)


async def request_validation_failed(request: Any, failed: Any) -> JSONResponse:
    """A FastAPI route's invalid body or parameter (fastapi.exceptions.RequestValidationError): 400 in our
    shape, not FastAPI's 422, each field named without FastAPI's `body` / `path` / `query` prefix."""
    return invalid(describe_validation_errors([{**error, "loc": tuple(error.get("loc", ()))[1:] or ("body",)}
                                               for error in failed.errors()]))


def invalid_model_name() -> JSONResponse:
    return invalid(f"model_name: {MODEL_NAME_RULE}")


def queue_full_response(message: str) -> JSONResponse:
    """429 with Retry-After, from a FastAPI route."""
    return error_response(429, message, headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)})


Query = TypeVar("Query", bound=BaseModel)


def validated_query(model: type[Query], parameters: Mapping[str, str]) -> Query | JSONResponse:
    """A GET route's query parameters as `model`, or the 400 that names the field and its rule."""
    items = parameters.multi_items() if hasattr(parameters, "multi_items") else list(parameters.items())
    given = [name for name, _ in items]
    if repeated := sorted({name for name in given if given.count(name) > 1}):
        return invalid(f"{repeated[0]}: give it once (it was given {given.count(repeated[0])} times)")
    try:
        return model.model_validate(dict(parameters))
    except ValidationError as invalid_parameters:
        return invalid(describe_validation_errors(invalid_parameters.errors(include_url=False, include_input=False)))


def invalid_model_reference() -> JSONResponse:
    return invalid(f"model_name: {MODEL_REFERENCE_RULE}")


def unknown_job(job_id: str) -> JSONResponse:
    return error_response(404, f"job_id: no job with id {job_id!r}")


def unknown_model(reference: str, field: str = "model_name") -> JSONResponse:
    name, version = split_reference(reference)
    if version is not None:
        return error_response(404, f"{field}: model {name!r} has no version {version!r}; GET /v1/models lists them")
    return error_response(404, f"{field}: no model named {name!r}; train one with POST /v1/train or import one "
                               "with POST /v1/models/import")


def conflict(message: str) -> JSONResponse:
    return error_response(409, message)


def queue_full(ctx: bentoml.Context, message: str) -> JSONResponse:
    """429 with Retry-After. BentoML gives a returned response the context's status and headers, so
    they are set there too."""
    ctx.response.status_code = 429
    ctx.response.headers["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER_SECONDS)
    return queue_full_response(message)


async def send_unauthorized(send: Send) -> None:
    body = json.dumps(error_body(UNAUTHORIZED_MESSAGE)).encode()
    await send_json(send, 401, body, [(b"www-authenticate", b'Bearer realm="fewshot"')])


async def send_unsupported_media_type(send: Send, expected: str, got: str) -> None:
    await send_json(send, 415, json.dumps(error_body(f"Content-Type: must be {expected}, got {got!r}")).encode())


def _location(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """`examples[2].text: must not be empty or only whitespace; num_iterations: …`"""
    parts = []
    for error in errors:
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        location = error.get("loc", ())
        # A rule over the whole body (e.g. which fields go together) names its fields in its message.
        parts.append(f"{_location(location)}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


def _is_validation_errors(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(e, dict) and "loc" in e and "msg" in e for e in value)


def normalise(status: int, body: bytes) -> dict[str, Any]:
    """Turn any error body into our shape, keeping its information."""
    try:
        payload: Any = json.loads(body) if body else None
    except ValueError:
        payload = body.decode("utf-8", "replace").strip() or None
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]  # BentoML answers some errors with a one-element array
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        return error_body(UNAVAILABLE_MESSAGE)
    if status >= 500:
        return error_body(INTERNAL_MESSAGE)
    if isinstance(payload, dict):
        detail = payload.get("detail")
        if _is_validation_errors(detail):
            return error_body(describe_validation_errors(detail), detail)
        if isinstance(payload.get("error"), str):
            return error_body(payload["error"], detail)
        if isinstance(detail, str):
            return error_body(detail)
    if isinstance(payload, str):
        return error_body(payload)
    try:
        return error_body(HTTPStatus(status).phrase.lower())
    except ValueError:
        return error_body(f"HTTP {status}")
