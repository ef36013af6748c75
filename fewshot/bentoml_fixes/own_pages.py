"""Our pages (`fewshot.pages`: the API docs at `/`, the console) in front of BentoML's routes.

Upstream: BentoML 1.4.40 serves its own index page at `/` (`HTTPAppFactory.index_view_func`), a
route that wins over any mounted app and that no option turns off: titled "BentoML Prediction
Service", a README of name:dev with version "None", five badge images from the internet, links to
BentoML's Slack, and a Google Tag Manager script that reports every visit of a self-hosted
service's docs to a third party. No upstream issue found. This middleware answers the pages' paths
itself and hands everything else on.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware
from fewshot.pages import is_page_path


class OwnPagesMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, pages: ASGIApp) -> None:
        super().__init__(app)
        self.pages = pages

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_page_path(scope["path"]):
            await self.pages(scope, receive, send)
        else:
            await self.app(scope, receive, send)
