"""The teach loop at the sizes users reach: a 10,000-example set, each step timed, memory sampled.

    make bench-teach-loop     (or: .venv/bin/python -m bench.teach_loop [--data ../shared/data])

Starts the service as a user would (`bentoml serve`, embedded trainer, a temporary MODEL_PATH,
MiniLM as the base model). banking77's training texts (distinct, shuffled): a `head` model is
trained (POST /v1/train) on 9,900 of them, so that adding 100 more (POST …/examples) brings the set
to MAX_TRAIN_EXAMPLES, 10,000, and the retrain trains on 10,000 within every default limit. Then,
each step timed: the set listed page by page (GET …/examples, --page-size per page: per-page p50/p95,
first against last page); the 100 added; the label audit (GET …/suspects); a `head` retrain (POST
…/retrain, `promote: if_better`) to its job's completion, and its promotion's method;
GET /v1/jobs?limit=500 (median of --repeats); last, a suggestion of k=10 from a 10,000-text pool
(banking77's test texts and its training texts not in the set: 3,000-odd; then GoEmotions' training
texts, out of domain, to reach MAX_POOL_TEXTS). The suggestion runs last because on 2 busy cores it
outlasted the gateway's 300 s timeout (a 504; its inference work goes on after it): a failed step is
recorded with its error and seconds, not fatal.

During each step a thread samples the RSS (psutil) of every process of the server's tree every
--sample-seconds and keeps each role's peak: gateway (`fewshot` workers), inference
(`fewshot-inference`), trainer (the `fewshot-trainer` worker and its Huey consumer, summed), and the
`bentoml serve` supervisor. Writes bench/results/teach-loop-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.report_files import server_machine, write_report
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
SET_SIZE = 10_000
"""MAX_TRAIN_EXAMPLES' default: the set the retrain trains on."""
ADDED = 100
POOL_SIZE = 10_000
"""MAX_POOL_TEXTS' default."""
MIB = 1024 * 1024
ROLES = ("gateway", "inference", "trainer", "supervisor")
NAME = "teach"


def read_texts(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf8") as handle:
        return [(row["text"], row.get("label", "")) for row in csv.DictReader(handle)]


def role_of(process: psutil.Process, root: int) -> str | None:
    """Which part of the service a process of the server's tree is (None: a helper of no interest)."""
    if process.pid == root:
        return "supervisor"
    command = process.cmdline()
    if "--service-name" in command:
        service = command[command.index("--service-name") + 1]
        # seen here: the inference worker's command line reads `--service-name fewshot-infer`
        if service.startswith("fewshot-infer"):
            return "inference"
        return {"fewshot": "gateway", "fewshot-trainer": "trainer"}.get(service)
    if "trainers.consumer" in " ".join(command):
        return "trainer"
    return None


class MemorySampler:
    """Samples the server tree's RSS per role in a thread; `step(name)` keeps each role's peak during it."""

    def __init__(self, root: int, every: float) -> None:
        self._root, self._every = root, every
        self._step: str | None = None
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._processes: dict[int, tuple[psutil.Process, str | None]] = {}

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.peaks[name] = {role: 0.0 for role in ROLES}
        self._step = name
        self.sample()  # at least one sample, however short the step
        try:
            yield
        finally:
            self.sample()
            self._step = None

    def sample(self) -> None:
        step = self._step
        if step is None:
            return
        try:
            tree = [psutil.Process(self._root), *psutil.Process(self._root).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        totals = dict.fromkeys(ROLES, 0.0)
        for process in tree:
            try:
                known = self._processes.get(process.pid)
                if known is None:  # a process's role never changes: its command line is read once
                    known = self._processes[process.pid] = (process, role_of(process, self._root))
                if known[1] is not None:
                    totals[known[1]] += process.memory_info().rss / MIB
            except psutil.Error:
                continue
        peaks = self.peaks[step]
        for role, total in totals.items():
            peaks[role] = max(peaks[role], round(total, 1))

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 4)


def timed(call: Any) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return round(seconds, 4), response


def finished(client: httpx.Client, job_id: str, asked: float) -> tuple[float, dict]:
    job = wait_for_job(client, job_id, {"completed", "failed", "cancelled"}, timeout=3600)
    if job["status"] != "completed":
        raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
    return round(time.monotonic() - asked, 3), job


def training_seconds(job: dict) -> float:
    return round((datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"]))
                 .total_seconds(), 3)


def run_loop(client: httpx.Client, memory: MemorySampler, start: list[dict], added: list[dict], pool: list[str],
             page_size: int, repeats: int) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    with memory.step("train"):
        asked = time.monotonic()
        request_s, response = timed(lambda: client.post("/v1/train", json={
            "model_name": NAME, "base_model": BASE_MODEL, "examples": start, "strategy": "head"}))
        completed_s, job = finished(client, response.json()["job_id"], asked)
        first_s, _ = timed(lambda: client.post("/v1/predict", json={"model_name": NAME, "texts": ["card?"]}))
    steps["train"] = {"examples": len(start), "request_s": request_s, "completed_s": completed_s,
                      "training_s": training_seconds(job), "first_predict_s": first_s}
    print(f"  train: {steps['train']}", flush=True)

    with memory.step("list"):
        pages: list[float] = []
        cursor: str | None = None
        listed = 0
        started = time.perf_counter()
        while True:
            params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            seconds, response = timed(lambda query=params: client.get(f"/v1/models/{NAME}/examples", params=query))
            pages.append(seconds)
            body = response.json()
            listed += len(body["examples"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        total_s = round(time.perf_counter() - started, 3)
    steps["list"] = {"examples": listed, "page_size": page_size, "pages": len(pages), "total_s": total_s,
                     "page_p50_s": percentile(pages, 0.5), "page_p95_s": percentile(pages, 0.95),
                     "first_page_s": pages[0], "last_page_s": pages[-1], "page_s": pages}
    print(f"  list: { {k: v for k, v in steps['list'].items() if k != 'page_s'} }", flush=True)

    with memory.step("add"):
        seconds, response = timed(lambda: client.post(f"/v1/models/{NAME}/examples", json={"examples": added}))
    steps["add"] = {"examples": len(added), "latency_s": seconds, "added": len(response.json()["added"]),
                    "total": response.json()["total"]}
    print(f"  add: {steps['add']}", flush=True)

    with memory.step("audit"):
        seconds, response = timed(lambda: client.get(f"/v1/models/{NAME}/suspects"))
    audit = response.json()
    steps["audit"] = {"latency_s": seconds, "suspects": len(audit.get("suspects", []))}
    print(f"  audit: {steps['audit']}", flush=True)

    with memory.step("retrain"):
        asked = time.monotonic()
        request_s, response = timed(lambda: client.post(f"/v1/models/{NAME}/retrain", json={"strategy": "head"}))
        completed_s, job = finished(client, response.json()["job_id"], asked)
    promotion = job.get("promotion") or {}
    steps["retrain"] = {"request_s": request_s, "completed_s": completed_s, "training_s": training_seconds(job),
                        "promoted": promotion.get("promoted"), "method": promotion.get("method"),
                        "reason": promotion.get("reason")}
    print(f"  retrain: {steps['retrain']}", flush=True)

    with memory.step("list_jobs"):
        latencies = []
        for _ in range(repeats):
            seconds, response = timed(lambda: client.get("/v1/jobs", params={"limit": 500}))
            latencies.append(seconds)
    steps["list_jobs"] = {"jobs": len(response.json()["jobs"]), "median_s": round(statistics.median(latencies), 4),
                          "max_s": max(latencies), "bytes": len(response.content)}
    print(f"  list jobs: {steps['list_jobs']}", flush=True)

    # Last: a suggestion that outlasts the gateway's timeout keeps the inference worker busy after its 504
    with memory.step("suggest"):
        started = time.perf_counter()
        try:
            seconds, response = timed(lambda: client.post(f"/v1/models/{NAME}/suggest",
                                                          json={"texts": pool, "k": 10}))
            steps["suggest"] = {"pool": len(pool), "k": 10, "latency_s": seconds,
                                "considered": response.json()["pool"],
                                "suggested": len(response.json()["suggestions"])}
        except httpx.HTTPError as failed:  # a step that fails is a result too: the loop goes on without it
            steps["suggest"] = {"pool": len(pool), "k": 10, "latency_s": round(time.perf_counter() - started, 4),
                                "error": str(failed)[:300]}
    print(f"  suggest: {steps['suggest']}", flush=True)

    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-seconds", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)

    train = list(dict(read_texts(args.data / "banking77" / "train.csv")).items())  # distinct texts
    random.Random(args.seed).shuffle(train)
    if len(train) < SET_SIZE:
        raise SystemExit(f"banking77's training set has {len(train)} distinct texts, fewer than {SET_SIZE}")
    examples = [{"text": text, "label": label} for text, label in train[:SET_SIZE]]
    start, added = examples[:SET_SIZE - ADDED], examples[SET_SIZE - ADDED:]
    in_set = {example["text"] for example in examples}
    pool = list(dict.fromkeys(text for text, _ in [*read_texts(args.data / "banking77" / "test.csv"),
                                                   *train[SET_SIZE:]] if text not in in_set))
    in_domain = len(pool)
    for text, _ in read_texts(args.data / "goemotions" / "train.csv"):
        if len(pool) >= POOL_SIZE:
            break
        if text not in in_set and text not in pool:
            pool.append(text)

    state = Path(tempfile.mkdtemp(prefix="fewshot-teach-loop-"))
    server = LiveServer(state, env={"DEFAULT_BASE_MODEL": BASE_MODEL}).start()
    try:
        assert server.process is not None
        with MemorySampler(server.process.pid, args.sample_seconds) as memory, server.client() as client:
            client.timeout = httpx.Timeout(600)
            with memory.step("idle"):
                time.sleep(1)
            steps = run_loop(client, memory, start, added, pool, args.page_size, args.repeats)
    finally:
        server.close()
        shutil.rmtree(state, ignore_errors=True)
    result = {"started_at": started_at.isoformat(), "machine": server_machine(), "base_model": BASE_MODEL,
              "set_size": SET_SIZE, "pool": {"texts": len(pool), "banking77": in_domain,
                                             "goemotions": len(pool) - in_domain},
              "steps": steps, "peak_rss_mib": memory.peaks}
    stem = write_report(args.out, "teach-loop", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


def markdown(result: dict[str, Any]) -> str:
    steps, peaks = result["steps"], result["peak_rss_mib"]

    def memory(step: str) -> str:
        return " | ".join(str(peaks[step][role]) for role in ROLES)

    train, listing, retrain = steps["train"], steps["list"], steps["retrain"]
    rows = [
        ("idle (started, nothing trained)", "–", memory("idle")),
        (f"train `head` on {train['examples']:,} (POST /v1/train → job completed)",
         f"{train['completed_s']} s (request {train['request_s']} s; training {train['training_s']} s)",
         memory("train")),
        (f"list the set, {listing['pages']} pages of {listing['page_size']}",
         f"{listing['total_s']} s; page p50 {listing['page_p50_s']} s, p95 {listing['page_p95_s']} s; first "
         f"{listing['first_page_s']} s, last {listing['last_page_s']} s", memory("list")),
        (f"add {steps['add']['examples']} (set: {steps['add']['total']:,})", f"{steps['add']['latency_s']} s",
         memory("add")),
        ("audit (GET …/suspects)", f"{steps['audit']['latency_s']} s", memory("audit")),
        ("retrain `head` (POST …/retrain → job completed)",
         f"{retrain['completed_s']} s (training {retrain['training_s']} s); promotion: {retrain['method']}, "
         f"promoted {retrain['promoted']}", memory("retrain")),
        (f"GET /v1/jobs?limit=500 ({steps['list_jobs']['jobs']} jobs, {steps['list_jobs']['bytes']:,} bytes)",
         f"median {steps['list_jobs']['median_s']} s", memory("list_jobs")),
        (f"suggest k=10 from {steps['suggest']['pool']:,} texts", f"{steps['suggest']['latency_s']} s"
         + (f" — failed: {steps['suggest']['error'].splitlines()[0]}" if "error" in steps["suggest"] else ""),
         memory("suggest")),
    ]
    pool = result["pool"]
    lines = [f"# The teach loop at {result['set_size']:,} examples — {result['started_at']}", "",
             f"Machine: {result['machine']}. {result['base_model']}; banking77. Pool: {pool['banking77']:,} banking77 "
             f"texts not in the set + {pool['goemotions']:,} GoEmotions texts. Peak RSS (MiB) per role during "
             "each step.", "",
             "| step | time | gateway | inference | trainer | supervisor |", "|---|---|---|---|---|---|"]
    lines += [f"| {step} | {time_s} | {mem} |" for step, time_s, mem in rows]
    lines += ["", f"Retrain promotion: {retrain['reason']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
