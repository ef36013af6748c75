"""The gateway's clients to its dependency services: settings BentoML does not expose, and what
a call does when the service behind it restarts.

BentoML 1.4.40's RemoteProxy (the client behind `bentoml.depends`) replaces its aiohttp session
every 100 requests or 300 s by *closing* the old one, which aborts every request still in flight
on it: under concurrent load some /v1/predict calls failed with "Server disconnected" (seen: 36
of 300 requests at 16 concurrent clients). Its total timeout is a fixed 30 s, shorter than our
request timeout. Both live on its private session manager; bentoml is pinned, and this is checked
at start-up so an upgrade that moves them fails loudly instead of silently. Upstream: bentoml#4971
(dropped connections, a retry-once fix proposed in PR #5698) and #5540 (session refresh).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from bentoml.exceptions import ServiceUnavailable

logger = logging.getLogger("fewshot.gateway")

Result = TypeVar("Result")

# The connection broke, or could not be made: the service's worker died or is being replaced.
# (A timeout is not among them: the call may still be running, and a second would double the wait.)
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectorError, aiohttp.ClientOSError)


def keep_sessions_open(dependency: Any, timeout_seconds: float) -> None:
    from _bentoml_impl.client import RemoteProxy

    if not isinstance(dependency, RemoteProxy):
        return  # an in-process dependency (no HTTP hop): nothing to tune
    manager = getattr(dependency.to_async, "_session_manager", None)
    for attribute in ("max_requests", "max_age", "_timeout"):
        if not hasattr(manager, attribute):
            raise RuntimeError(f"BentoML's client changed ({attribute} is gone): "
                               "review fewshot/bentoml_fixes/dependency_clients.py")
    manager.max_requests = sys.maxsize
    manager.max_age = float("inf")
    manager._timeout = aiohttp.ClientTimeout(total=timeout_seconds)


async def once_more_if_disconnected(call: Callable[[], Awaitable[Result]], service: str) -> Result:
    """Run an idempotent call; if the connection to the service breaks, run it once more.

    When an inference worker dies (killed, out of memory) BentoML starts a new one on the same
    socket, and every call in flight on the old one fails with "Server disconnected" - seen as 500s
    in tests/test_e2e_trainer_lifecycle.py. Predictions and embeddings can be computed again, and
    the second call waits in the socket's backlog until the new worker accepts it. Only once: a
    request that kills the worker itself must not kill the next one too; the second failure is a
    503 that tells the client to retry.
    """
    try:
        return await call()
    except DISCONNECTED as error:
        logger.warning("the %s service dropped a call (%s); sending it once more", service, type(error).__name__)
    try:
        return await call()
    except DISCONNECTED as error:
        raise ServiceUnavailable(f"the {service} service is restarting; retry shortly") from error
