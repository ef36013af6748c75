"""One error shape on every route: {"error": "<what, naming the field and the rule>", "detail": …}.

BentoML, Starlette and FastAPI each answer errors their own way (a generic validation title, a
JSON array, plain text); this middleware rewrites every 4xx/5xx body into ours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# BentoML answers 503 when its dispatcher sheds load (MAX_LATENCY_MS) and we when the inference
# service is being restarted: both mean the same to a client.
UNAVAILABLE_MESSAGE = ("the server cannot take this request now (overloaded, or its inference service is "
                       "restarting); retry shortly")
INTERNAL_MESSAGE = "internal error; the server log has the details"


def error_body(message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": message, "detail": detail}


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
        parts.append(f"{_location(error.get('loc', ()))}: {message}")
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


class ErrorShapeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held_start: Message | None = None
        chunks: list[bytes] = []

        async def reshape(message: Message) -> None:
            nonlocal held_start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held_start = message  # hold it: the body decides the new content-length
                return
            if message["type"] != "http.response.body" or held_start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = json.dumps(normalise(held_start["status"], b"".join(chunks))).encode()
            headers = [(k, v) for k, v in held_start.get("headers", [])
                       if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**held_start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshape)
