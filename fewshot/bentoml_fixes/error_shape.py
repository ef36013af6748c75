"""Every 4xx/5xx body, whoever wrote it, rewritten into our one error shape (`fewshot.api.errors`).

Upstream: BentoML 1.4.40 answers a validation error with its own title and a JSON array, FastAPI
with `{"detail": [...]}`, Starlette with plain text, and its documented error schema is not what
it sends (bentoml#4232).
"""

from __future__ import annotations

import json

from starlette.types import Message, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware
from fewshot.api.errors import normalise


class ErrorShapeMiddleware(HTTPMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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
