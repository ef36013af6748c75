"""Closed-loop HTTP load from a separate process: `wrk` (C, Debian package) with bench/loadgen.lua.

    python -m bench.loadgen URL PATH MODEL TEXTS_FILE CONCURRENCY TEXTS_PER_REQUEST DURATION_S

`concurrency` connections send back to back, each request a random draw of `texts_per_request`
texts. A Python load generator would take CPU from the server on a 2-core machine; wrk takes ~1%.
Prints one JSON line: requests, texts, requests/s, texts/s, p50/p99 latency (ms), errors.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

WARMUP_SECONDS = 2
REQUEST_TIMEOUT_SECONDS = 60  # wrk's default (2 s) would count slow 16-text requests at c=64 as errors
BODIES = 5000
SCRIPT = Path(__file__).with_name("loadgen.lua")


def write_bodies(path: Path, model: str, texts: list[str], per_request: int, seed: int = 0,
                 body: Callable[[str, list[str]], dict] | None = None) -> None:
    """BODIES request bodies, each a random draw of `per_request` texts; ours by default, or `body(model, texts)`."""
    rng = random.Random(seed)
    make = body or (lambda name, drawn: {"model_name": name, "texts": drawn})
    with path.open("w") as handle:
        for _ in range(BODIES):
            handle.write(json.dumps(make(model, rng.sample(texts, per_request))) + "\n")


def run_wrk(url: str, concurrency: int, seconds: int, bodies: Path) -> dict:
    threads = min(2, concurrency)
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={REQUEST_TIMEOUT_SECONDS}s",
               "-s", str(SCRIPT), url, "--", str(bodies)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def drive(url: str, path: str, model: str, texts: list[str], concurrency: int, per_request: int,
          duration: float) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk (or `make bench`, which installs it)")
    with tempfile.TemporaryDirectory() as scratch:
        bodies = Path(scratch) / "bodies.jsonl"
        write_bodies(bodies, model, texts, per_request)
        run_wrk(url + path, concurrency, WARMUP_SECONDS, bodies)
        report = run_wrk(url + path, concurrency, round(duration), bodies)
    return summarise(report, path, concurrency, per_request)


def summarise(report: dict, path: str, concurrency: int, per_request: int) -> dict:
    """wrk's report (bench/loadgen.lua) as one benchmark point."""
    seconds = report["duration_us"] / 1e6
    ok = report["requests"] - report["non2xx"]
    return {
        "path": path, "concurrency": concurrency, "texts_per_request": per_request, "seconds": round(seconds, 2),
        "requests": report["requests"], "requests_per_s": round(ok / seconds, 2),
        "texts_per_s": round(ok * per_request / seconds, 2),
        "p50_ms": round(report["p50_us"] / 1000, 2), "p99_ms": round(report["p99_us"] / 1000, 2),
        "errors": report["non2xx"] + report["socket_errors"] + report["timeouts"],
        "overloaded_503": report["overloaded_503"], "timeouts": report["timeouts"],
    }


def main() -> None:
    url, path, model, texts_file, concurrency, per_request, duration = sys.argv[1:8]
    with open(texts_file) as handle:
        texts = json.load(handle)
    print(json.dumps(drive(url, path, model, texts, int(concurrency), int(per_request), float(duration))))


if __name__ == "__main__":
    main()
