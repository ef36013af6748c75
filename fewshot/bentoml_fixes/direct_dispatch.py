"""The serving routes handed straight to their handlers, past BentoML's per-request API dispatch.

Upstream: BentoML 1.4.40's `ServiceAppFactory.api_endpoint` runs, for every request, a Starlette
Request and the service context's request scope, function-level imports, `getattr(instance, name)`
(whose descriptor inspects the handler's signature each time), the IO descriptor's parsing and
serialisation and a response object with a background task. Measured with py-spy (tiny model,
64 clients, one-text /v1/predict): about a third of the gateway's CPU, more than our handler, the
JSON and the call to the inference service together. No upstream issue found.

A route qualifies when BentoML's dispatch would do nothing for it but parse, await and serialise:
an async, non-batchable, non-streaming API whose one positional argument is the JSON body model and
which takes no context (in service.py: /v1/predict and /v1/embeddings). For those this middleware does
exactly what `api_endpoint_wrapper` does — `model_validate_json` on the route's own input
descriptor, `await` the handler, `model_dump_json` of what it returns (or the response it returns),
and a validation error, a BentoML exception or a crash answered and logged as BentoML answers and
logs them. It sits innermost of our middlewares, so the API key, the content type, the error
shape, and BentoML's metrics, access log and timeout all still apply; any other route or method is
dispatched by BentoML.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from typing import Any

# Imported once here, not in the request path: `from bentoml import …` inside a function goes through
# bentoml's lazy module attributes on every call (13.7 µs measured, ~3% of the gateway's request).
from bentoml import get_current_service
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware, send_json

# BentoML's logger for failed requests: its message and level, so worker_logging's filter treats
# ours the same (a client's mistake is one WARNING line, a crash keeps its traceback).
request_errors = logging.getLogger("bentoml._internal.server.http_app")
UNEXPECTED = json.dumps({"error": "An unexpected error has occurred, please check the server log."}).encode()


def qualifies(method: Any) -> bool:
    """Whether BentoML's dispatch of this API method only parses a JSON body, awaits, serialises."""
    from _bentoml_sdk.io_models import IORootModel

    spec, output = method.input_spec, method.output_spec
    return (inspect.iscoroutinefunction(method.func) and not method.batchable and not method.is_stream
            and method.ctx_param is None and getattr(spec, "__root_input__", False)
            and not issubclass(spec, IORootModel) and not getattr(spec, "multipart_fields", None)
            and isinstance(output, type) and not issubclass(output, IORootModel))


def direct_routes(service: Any) -> dict[str, Any]:
    """Route path → API method, for the service's APIs that qualify."""
    return {method.route: method for method in service.apis.values() if qualifies(method)}


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class DirectDispatchMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, routes: Mapping[str, Any]) -> None:
        super().__init__(app)
        self._routes = dict(routes)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = self._routes.get(scope["path"]) if scope["method"] == "POST" else None
        if method is None:
            await self.app(scope, receive, send)
            return
        try:
            request = method.input_spec.model_validate_json(await read_body(receive) or b"{}")
            output = await method.func(get_current_service(), request)
        except ValidationError as invalid:
            self._log(scope)
            body = {"error": f"{invalid.error_count()} validation error for {invalid.title}",
                    "detail": invalid.errors(include_context=False, include_input=False)}
            await send_json(send, 400, json.dumps(body).encode())
            return
        except Exception as error:
            self._log(scope)
            await send_json(send, *_bentoml_error(error))
            return
        if isinstance(output, Response):
            await output(scope, receive, send)
        elif isinstance(output, BaseModel):
            await send_json(send, 200, output.model_dump_json().encode())
        else:
            raise TypeError(f"{scope['path']}: the handler returned {type(output).__name__}, not a model or a response")

    @staticmethod
    def _log(scope: Scope) -> None:
        request_errors.error("Exception on %s [%s]", scope["path"], scope["method"], exc_info=True)


def _bentoml_error(error: Exception) -> tuple[int, bytes]:
    """Status and body as `api_endpoint_wrapper` answers this exception (error_shape rewrites it)."""
    if not isinstance(error, BentoMLException):
        return 500, UNEXPECTED
    status = int(error.error_code)
    if status >= 500:
        return status, UNEXPECTED
    if status in (401, 403):
        return status, json.dumps({"error": "Authorization error"}).encode()
    return status, json.dumps([{"error": str(error)}]).encode()
