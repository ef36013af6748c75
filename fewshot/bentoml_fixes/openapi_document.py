"""The OpenAPI document at /docs.json, corrected to describe what the service really returns.

Upstream: BentoML 1.4.40 generates it from the services and the mounted FastAPI app, but documents
only 200/400/404/500 with error schemas it does not send (bentoml#4232), no 202, no 401 and no
security scheme, writes Pydantic's JSON Schema 2020-12 bounds into an OpenAPI 3.0 document, and
fills `info` with its own boilerplate (name:dev, version "None", badge images from the internet,
BentoML's contact). We fix that up once and serve the result (so "Authorize" works in the Swagger UI
at /), with the statuses each route declares beside itself (`fewshot.api.errors.responds`). A schemathesis run in
the tests holds the document to the truth.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware, send_json
from fewshot.api.auth import is_open_path
from fewshot.api.errors import STATUS_DESCRIPTIONS, declared_alternatives, declared_statuses
from fewshot.api.schemas import MODEL_REFERENCE_SCHEMA, ErrorResponse
from fewshot.pages import openapi_info

logger = logging.getLogger("fewshot.openapi")

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
# BentoML's two tags keep their names (its operations carry them) but say what ours hold.
TAG_DESCRIPTIONS = {"Service APIs": "Training, prediction and embeddings.",
                    "Infrastructure": "Liveness and readiness probes, Prometheus metrics."}


Operation = tuple[str, str]
"""(path template, lower-case HTTP method)"""


def _error_response(status: int) -> dict[str, Any]:
    return {"description": STATUS_DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}}


def declared_operations(service: Any) -> dict[Operation, tuple[int, tuple[int, ...]]]:
    """What each of the service's BentoML APIs (POST routes) declared with `responds`. (FastAPI's
    routes document their own `responses=` in the document BentoML merges in.)"""
    return {(method.route, "post"): declared_statuses(method.func) for method in service.apis.values()}


def declared_alternative_bodies(service: Any) -> dict[Operation, tuple[type[BaseModel], ...]]:
    """Each BentoML API's other success bodies (`responds(also=...)`)."""
    return {(method.route, "post"): declared_alternatives(method.func) for method in service.apis.values()
            if declared_alternatives(method.func)}


def _add_alternative_bodies(spec: dict[str, Any], operation: dict[str, Any], status: str,
                            bodies: tuple[type[BaseModel], ...]) -> None:
    """The success response's schema becomes oneOf its own and `bodies` (added to the components)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    content = operation["responses"][status].setdefault("content", {}).setdefault("application/json", {})
    variants = [content["schema"]] if "schema" in content else []
    for body in bodies:
        schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[body.__name__] = schema
        variants.append({"$ref": f"#/components/schemas/{body.__name__}"})
    content["schema"] = {"oneOf": variants}


def _is_our_error(response: Any) -> bool:
    if not isinstance(response, dict):
        return False
    return response.get("content", {}).get("application/json", {}).get("schema") == ERROR_REF


def _as_openapi_30(node: Any) -> None:
    """Pydantic writes JSON Schema 2020-12, BentoML calls the document OpenAPI 3.0: rewritten in
    place, everywhere. `exclusiveMinimum: 0` → `minimum: 0, exclusiveMinimum: true` (same for
    maximum); `anyOf: [X, {type: null}]` → X with `nullable: true`, as is a schema whose default
    is null (BentoML drops the null variant of optional request fields)."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None:
            node["nullable"] = True
        variants = node.get("anyOf")
        if isinstance(variants, list) and {"type": "null"} in variants:
            others = [v for v in variants if v != {"type": "null"}]
            del node["anyOf"]
            if len(others) == 1:
                node.update(others[0])
            else:
                node["anyOf"] = others
            node["nullable"] = True
        for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            bound = node.get(exclusive)
            if isinstance(bound, int | float) and not isinstance(bound, bool):
                node[inclusive] = bound
                node[exclusive] = True
        for value in node.values():
            _as_openapi_30(value)
    elif isinstance(node, list):
        for value in node:
            _as_openapi_30(value)


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a pydantic model, for routes that validate their query themselves."""
    schema = model.model_json_schema()
    parameters = []
    for name, declared in schema["properties"].items():
        field = {key: value for key, value in declared.items() if key not in ("title", "default")}
        if "anyOf" in field:  # optional: the non-null branch, as the parameter may simply be left out
            field.update(next(b for b in field.pop("anyOf") if b.get("type") != "null"))
        description = field.pop("description", None)
        parameters.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                           "schema": field, **({"description": description} if description else {})})
    return parameters


def _document_path_parameter(spec: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("name") == name and parameter.get("in") == "path":
                    parameter["schema"] = {**parameter.get("schema", {}), **schema}


def correct_document(spec: dict[str, Any], declared: dict[Operation, tuple[int, tuple[int, ...]]],
                     alternatives: dict[Operation, tuple[type[BaseModel], ...]] | None = None) -> dict[str, Any]:
    """Our `info`, error schema, the API-key schemes, 401 on protected routes, and the real success codes.

    `declared` maps a BentoML API's operation to its success status (e.g. 202 for train) and the
    error statuses it can return besides 401 and 500 (see `declared_operations`); the FastAPI
    routes' own declarations (`responses=`, with our error schema) are kept as they are.
    """
    spec = copy.deepcopy(spec)
    spec["info"] = openapi_info()
    for tag in spec.get("tags", []):
        tag["description"] = TAG_DESCRIPTIONS.get(tag.get("name"), tag.get("description"))
    for (path, method), bodies in (alternatives or {}).items():
        operation = spec.get("paths", {}).get(path, {}).get(method)
        if operation is not None:
            status = "200" if "200" in operation.get("responses", {}) else 200
            _add_alternative_bodies(spec, operation, status, bodies)
    _as_openapi_30(spec)
    _document_path_parameter(spec, "model_name", MODEL_REFERENCE_SCHEMA)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("InvalidArgument", "NotFound", "InternalServerError", "HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            # BentoML keys its responses by int, FastAPI by str: one kind of key from here on.
            responses = operation["responses"] = {str(k): v for k, v in operation.get("responses", {}).items()}
            for status in [s for s in responses if s != "200" and s.startswith(("4", "5"))]:
                if not _is_our_error(responses[status]):
                    del responses[status]  # BentoML's and FastAPI's own error schemas (422 included)
            if "requestBody" in operation:  # every body of ours is required; BentoML leaves it optional
                operation["requestBody"]["required"] = True
                responses["413"] = _error_response(413)  # fewshot/api/body_limit.py, on every body
            success, errors = declared.get((path, method), (200, ()))
            if success != 200 and "200" in responses:
                responses[str(success)] = responses.pop("200")
            for status in errors:
                responses[str(status)] = _error_response(status)
            if not is_open_path(path):
                operation["security"] = [{"APIKeyHeader": []}, {"BearerAuth": []}]
                responses["401"] = _error_response(401)
                responses["500"] = _error_response(500)
    return spec


class OpenAPIDocumentMiddleware(HTTPMiddleware):
    """Serves the corrected document at /docs.json (built once, on first request)."""

    def __init__(self, app: ASGIApp, build: Callable[[], dict[str, Any]]) -> None:
        super().__init__(app)
        self._build = build
        self._body: bytes | None = None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/docs.json" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self._body is None:
            try:
                self._body = json.dumps(self._build()).encode()
            except Exception:  # never leave the docs without an answer: serve BentoML's own
                logger.exception("could not correct the OpenAPI document; serving BentoML's")
                await self.app(scope, receive, send)
                return
        await send_json(send, 200, self._body)
