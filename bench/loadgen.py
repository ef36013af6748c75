"""Closed-loop HTTP load generator (its own process): `concurrency` clients send back to back.

    python -m bench.loadgen URL PATH MODEL TEXTS_FILE CONCURRENCY TEXTS_PER_REQUEST DURATION_S

Prints one JSON line: requests, texts, requests/s, texts/s, p50/p99 latency (ms), errors.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter

import aiohttp

WARMUP_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 60


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def drive(url: str, path: str, model: str, texts: list[str], concurrency: int, per_request: int,
                duration: float, seed: int = 0) -> dict:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + WARMUP_SECONDS
        stop_at = measure_from + duration

        async def client(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            while (sent := time.perf_counter()) < stop_at:
                body = {"model_name": model, "texts": rng.sample(texts, per_request)}
                try:
                    async with session.post(path, json=body) as response:
                        await response.read()
                        status = str(response.status)
                except TimeoutError:
                    status = "timeout"
                except aiohttp.ClientError as error:
                    status = type(error).__name__
                done = time.perf_counter()
                if sent >= measure_from and done <= stop_at:
                    latencies.append((done - sent) * 1000)
                    statuses[status] += 1

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    completed = sum(statuses.values())
    ok = statuses.get("200", 0)
    return {
        "path": path, "concurrency": concurrency, "texts_per_request": per_request, "seconds": duration,
        "requests": completed, "requests_per_s": round(ok / duration, 2),
        "texts_per_s": round(ok * per_request / duration, 2),
        "p50_ms": round(percentile(latencies, 0.5) or 0, 2), "p99_ms": round(percentile(latencies, 0.99) or 0, 2),
        "errors": completed - ok, "overloaded_503": statuses.get("503", 0), "statuses": dict(statuses),
    }


def main() -> None:
    url, path, model, texts_file, concurrency, per_request, duration = sys.argv[1:8]
    with open(texts_file) as handle:
        texts = json.load(handle)
    result = asyncio.run(drive(url, path, model, texts, int(concurrency), int(per_request), float(duration)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
