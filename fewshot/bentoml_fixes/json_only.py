"""POST routes take JSON only: any other declared Content-Type is a 415 with our error shape.

Upstream: BentoML 1.4.40 picks a body parser by Content-Type, and some (multipart without a
boundary) end in a 500; a JSON API has no use for them. A request without a Content-Type is read
as JSON. Not reported upstream that we found.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware
from fewshot.api.errors import send_unsupported_media_type

JSON = "application/json"


def declared_media_type(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


class JSONBodyOnlyMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, paths: Iterable[str]) -> None:
        super().__init__(app)
        self._paths = frozenset(paths)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"] in self._paths:
            media_type = declared_media_type(scope["headers"])
            if media_type not in (None, "", JSON):
                await send_unsupported_media_type(send, JSON, media_type)
                return
        await self.app(scope, receive, send)
