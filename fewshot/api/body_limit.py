"""MAX_REQUEST_BYTES: a request body over the cap is answered 413, in our error shape, before any of
it is parsed (without a cap, a 10,000 × 10,000-character suggest pool was read, parsed and validated
whole before its limits refused it).

A body that declares its size (Content-Length) is judged by it and refused without being read; the
server discards what the client still sends. A body sent without one (chunked) is read here up to the
cap and then handed on whole, so a body over the cap is never held past it. Every route of the
gateway passes through here: BentoML's APIs (/v1/predict, /v1/train, …) and the mounted FastAPI
routes share its middleware stack. Nothing here is per text: one look at the headers per request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware, send_json
from fewshot.api.errors import error_body


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length if given and a number, whether the body is chunked)."""
    length, chunked = None, False
    for name, value in headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None, False  # the HTTP server refuses such a request before it gets here
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read so far as one message, then what the client sends next
    (its disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class RequestBodyLimitMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, int] | None = None) -> None:
        """`uploads`: paths that take files, each with its own limit (MAX_FILE_BYTES): their body must
        declare its length (a file is never held in memory to count it) and may be that large."""
        super().__init__(app)
        self._max = max_bytes
        self._uploads = uploads or {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        length, chunked = declared_length(scope["headers"])
        upload_limit = self._uploads.get(scope["path"]) if scope["method"] == "POST" else None
        if upload_limit is not None:
            if length is None and chunked:
                await send_json(send, 411, json.dumps(error_body(
                    "Content-Length: an upload must declare its length (sent chunked)")).encode())
            elif length is not None and length > upload_limit:
                await self._refuse(send, f"request body: {length} bytes is more than MAX_FILE_BYTES={upload_limit}")
            else:
                await self.app(scope, receive, send)
            return
        if length is not None:
            if length > self._max:
                await self._refuse(send, f"request body: {length} bytes is more than MAX_REQUEST_BYTES={self._max}")
                return
            await self.app(scope, receive, send)  # the server never passes on more than the length declared
            return
        if not chunked:
            await self.app(scope, receive, send)  # no body
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            body += message.get("body", b"")
            if len(body) > self._max:
                await self._refuse(send, f"request body: more than MAX_REQUEST_BYTES={self._max} bytes (sent "
                                         f"without Content-Length; refused after {len(body)} bytes)")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replaying(bytes(body), receive), send)

    @staticmethod
    async def _refuse(send: Send, message: str) -> None:
        await send_json(send, 413, json.dumps(error_body(message)).encode())
