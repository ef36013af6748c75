"""Readiness of the gateway's dependencies, with a deadline.

BentoML's own /readyz check of a dependency that is still starting can wait forever, and that
stuck request then blocks the server's graceful shutdown. Checking first, with a deadline,
answers 503 at once instead. Not reported upstream that we found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def dependencies_ready(dependencies: Iterable[Any], timeout: float = 2.0) -> bool:
    async def ready(dependency: Any) -> bool:
        try:
            return await asyncio.wait_for(dependency.is_ready(timeout), timeout + 1)
        except Exception:  # a dependency that cannot answer is not ready, whatever the reason
            return False

    return all(await asyncio.gather(*(ready(dependency) for dependency in dependencies)))
