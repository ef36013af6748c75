"""API-key authentication for every route but the health check, the probes and the docs."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Open without a key: our health check, BentoML's probes, and the interactive docs with their assets.
OPEN_PATHS = frozenset({"/health", "/livez", "/readyz", "/healthz", "/", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content/",)

UNAUTHORIZED_BODY = json.dumps({
    "error": "missing or invalid API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
    "detail": None,
}).encode()


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


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._key is None or scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        if key is not None and hmac.compare_digest(key, self._key):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
            (b"www-authenticate", b'Bearer realm="fewshot"'),
        ]})
        await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
