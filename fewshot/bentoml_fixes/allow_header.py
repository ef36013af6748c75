"""A 405's `Allow` header lists every method the path supports, not only the first route's.

Upstream: Starlette's `Router` answers a wrong method with the `Allow` of the first route whose
path matches, so GET and DELETE /v1/models/{model_name}, two routes, would claim `Allow: GET`
alone. Not reported upstream that we found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^}/]+\}", template)
    return re.compile("^" + "[^/]+".join(map(re.escape, parts)) + "$")


def allowed_methods(paths: Mapping[str, Iterable[str]], path: str) -> list[str]:
    """The methods of every documented path template `path` matches (OpenAPI `paths`), upper-case.
    A path documented as it is (POST /v1/models/import) takes precedence over templates it also
    matches (/v1/models/{model_name}), as in OpenAPI."""
    methods: set[str] = set()
    matching = [path] if path in paths else [template for template in paths if _template_regex(template).match(path)]
    for template in matching:
        methods |= {method.upper() for method in paths[template] if method.lower() in HTTP_METHODS}
    return sorted(methods)


class AllowHeaderMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, paths: Callable[[], Mapping[str, Iterable[str]]]) -> None:
        super().__init__(app)
        self._paths = paths
        self._known: Mapping[str, Iterable[str]] | None = None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_every_method(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                if self._known is None:
                    self._known = self._paths()  # the routes are fixed once the app serves
                methods = allowed_methods(self._known, scope["path"])
                if methods:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    message = {**message, "headers": [*headers, (b"allow", ", ".join(methods).encode())]}
            await send(message)

        await self.app(scope, receive, with_every_method)
