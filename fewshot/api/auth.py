"""API-key authentication for every route but the health check, the probes and the docs."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware
from fewshot.api.errors import send_unauthorized
from fewshot.pages import ASSET_PREFIX, PAGE_PATHS

# Open without a key: our health check, BentoML's probes, the interactive docs and the console with
# their assets (pages without data: the console asks for the key and sends it with each API call).
OPEN_PATHS = frozenset({"/health", "/livez", "/readyz", "/healthz", "/docs.json", "/schema.json"}) | PAGE_PATHS
OPEN_PREFIXES = ("/static_content/", ASSET_PREFIX)


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
    return None


class APIKeyMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        super().__init__(app)
        self._key = api_key.encode() if api_key else None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._key is None or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        if key is not None and hmac.compare_digest(key, self._key):
            await self.app(scope, receive, send)
            return
        await send_unauthorized(send)
