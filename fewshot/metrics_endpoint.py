"""Before BentoML answers GET /metrics: set the job-status gauges from the job store.

Job records live in the shared store (SQLite or Redis), so the counts are right whichever
trainer ran the jobs, on this machine or another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("fewshot.metrics")


class JobGaugesMiddleware:
    def __init__(self, app: ASGIApp, count: Callable[[str], int]) -> None:
        self.app = app
        self._count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics" and scope["method"] == "GET":
            from fewshot.metrics import refresh_job_gauges  # lazily: see fewshot.metrics

            try:
                refresh_job_gauges(self._count)
            except Exception:  # the job store unreachable: serve the other metrics anyway
                logger.exception("could not read job counts for /metrics")
        await self.app(scope, receive, send)
