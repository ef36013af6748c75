"""Settings of the gateway's clients to its dependency services that BentoML does not expose.

BentoML 1.4.40's RemoteProxy (the client behind `bentoml.depends`) replaces its aiohttp session
every 100 requests or 300 s by *closing* the old one, which aborts every request still in flight
on it: under concurrent load some /v1/predict calls failed with "Server disconnected" (seen: 36
of 300 requests at 16 concurrent clients). Its total timeout is a fixed 30 s, shorter than our
request timeout. Both live on its private session manager; bentoml is pinned, and this is checked
at start-up so an upgrade that moves them fails loudly instead of silently.
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp


def keep_sessions_open(dependency: Any, timeout_seconds: float) -> None:
    from _bentoml_impl.client import RemoteProxy

    if not isinstance(dependency, RemoteProxy):
        return  # an in-process dependency (no HTTP hop): nothing to tune
    manager = getattr(dependency.to_async, "_session_manager", None)
    for attribute in ("max_requests", "max_age", "_timeout"):
        if not hasattr(manager, attribute):
            raise RuntimeError(f"BentoML's client changed ({attribute} is gone): review fewshot/dependencies.py")
    manager.max_requests = sys.maxsize
    manager.max_age = float("inf")
    manager._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
