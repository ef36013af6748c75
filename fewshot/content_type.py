"""POST routes take JSON only: any other declared Content-Type is a 415 with our error shape.

BentoML picks a body parser by Content-Type, and some (multipart without a boundary) end in a
500; a JSON API has no use for them. A request without a Content-Type is read as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.errors import error_body

JSON = "application/json"


def declared_media_type(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


class JSONBodyOnlyMiddleware:
    def __init__(self, app: ASGIApp, paths: Iterable[str]) -> None:
        self.app = app
        self._paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self._paths:
            media_type = declared_media_type(scope["headers"])
            if media_type not in (None, "", JSON):
                body = json.dumps(error_body(f"Content-Type: must be {JSON}, got {media_type!r}")).encode()
                await send({"type": "http.response.start", "status": 415, "headers": [
                    (b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
