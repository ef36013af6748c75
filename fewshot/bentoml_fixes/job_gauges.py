"""Before BentoML answers GET /metrics: set the job-status gauges from the job store.

BentoML 1.4.40 serves /metrics itself, from prometheus_client's multiprocess directory, and has
no hook to run code before a scrape; this middleware is that hook.

Job records live in the shared store (SQLite or Redis), so the counts are right whichever
trainer ran the jobs, on this machine or another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot.api.asgi import HTTPMiddleware

logger = logging.getLogger("fewshot.metrics")


class JobGaugesMiddleware(HTTPMiddleware):
    def __init__(self, app: ASGIApp, counts: Callable[[], Mapping[str, int]]) -> None:
        super().__init__(app)
        self._counts = counts

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            from fewshot.metrics import set_job_gauges  # lazily: see fewshot.metrics

            try:
                set_job_gauges(self._counts())
            except Exception:  # the job store unreachable: serve the other metrics anyway
                logger.exception("could not read job counts for /metrics")
        await self.app(scope, receive, send)
