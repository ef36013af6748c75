"""Batch jobs (issue 43): a million texts through POST /v1/batches against the in-process limit, same run.

    make bench-batch     (or: .venv/bin/python -m bench.batch [--short-rows 1000000] [--long-rows 20000])

Data: `--short-rows` short texts and `--long-rows` long ones, made from the real data sets of
../shared/data (banking77, sst2, trec6, goemotions: every `text` of their CSV files, SOURCE.txt there)
and written as CSV tables `id,text`, a row at a time. A short row is a seeded random choice of a data
set text with a small variation by row (a prefix word, a suffix that mostly carries the row's number),
so rows differ; a long row joins seeded random data set texts up to 200-400 words. The first
`--small-rows` and `--kill-rows` short rows are also written as files of their own.

Server: `bentoml serve` as a user starts it (harness/live_server.py: temporary MODEL_PATH, embedded
trainer and batch worker) but with INFERENCE_BACKEND=AUTO, the default (the harness sets TORCH). It
trains a `head` model (all-MiniLM-L6-v2, 4 banking77 labels x 8 examples), predicts once so the
inference service loads it, and waits until the model view's `backend` no longer says `exporting`:
AUTO has timed the candidates and serves the version with the export it chose. The batch worker
loads that export too (batches/tasks.py `engine`).

Then, in this order (`--phases` picks; each prints its progress):
- idle: /v1/predict latency, one text per request, one client in a closed loop (`--latency-requests`
  or `--latency-seconds`, whichever comes first), the server otherwise idle;
- inprocess: the in-process limit of the same backend, the server idle: a child process loads the
  same stored version as the batch worker does (ModelCache.for_runtime with InferenceRuntime.resolve
  from the server's settings, MODEL_PATH and BENTOML_HOME of the server's state) and times
  fewshot.serving.engine.predict_items over the first `--sample-short` short and `--sample-long` long
  rows, in groups of BATCH_SHARD_TEXTS sorted by length, 512 texts per call (the default of
  BATCH_CHUNK_TEXTS): exactly the calls a batch worker makes, without the files, validation and answers;
- small, full, long: a batch each (POST /v1/files, POST /v1/batches with `model_name`, endpoint
  /v1/predict), polled until it ends: rows/s = rows / (completed_at - in_progress_at) (the record's
  Unix seconds; planning the file into shards comes before in_progress_at) against the in-process
  limit, and from POST /v1/batches to `completed` seen here. Its results are downloaded (streamed to
  a file) and checked: one row per input row, every id exactly once. `small` is the first
  `--small-rows` rows, `full` all of them: every process's peak RSS at both sizes shows whether
  memory follows the file's size. During `small` (`--latency-during`; `full` when `small` is under
  20,000 rows), once its first texts are done, the latency is measured again, as idle;
- kill: a batch of the first `--kill-rows` rows; once `--kill-at` of it is done, SIGKILL the batch
  worker (the process of the server's tree running `batches.consumer`); the embedded trainer service
  restarts it and the batch resumes. Time lost = (in_progress_at → completed_at) - rows / (the full
  batch's rows/s); shard_attempts - shards; its results checked as above.

During every batch (upload to download) a thread samples the RSS of every process of the server's tree
(psutil, every --sample-seconds) and keeps each process's peak, by what it is (its command line):
the `bentoml serve` supervisor, gateway, inference worker, trainer service, trainer, batch worker.

Goals: (a) the short and the long batch at >= 0.9x the in-process limit; (b) every batch's results
hold every input row exactly once; (c) every process's peak RSS flat in the file's size (full within
10% or 64 MB of small, whichever is more); (d) killed mid-run, the batch resumes and completes, every
id exactly once; (e) online p99 during a batch <= 2x idle p99.

Before the timed phases (after the data, the server and its model are ready), if BENCH_GO_FILE is set,
the bench waits until that file exists (so that the machine can be made quiet). Writes
bench/results/batch-<time>.json and .md; the Markdown also goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.report_files import server_machine, write_report
from harness.fixtures import BASE_MODEL, read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
DATA = PROJECT_ROOT.parent / "shared" / "data"
DATA_SETS = ("banking77", "sst2", "trec6", "goemotions")
MODEL = "batch-bench"
CHUNK_TEXTS = 512
"""Texts per engine call, as the batch worker makes them (BATCH_CHUNK_TEXTS's default)."""
DEFAULT_SHARD_TEXTS = 10_000
"""BATCH_SHARD_TEXTS' default (fewshot/settings.py): the in-process groups when --shard-texts is not given."""
PHASES = ("idle", "inprocess", "small", "full", "long", "kill")
POLL_SECONDS = 2.0
"""How often a batch is polled. The batch worker runs at SCHED_IDLE: whatever else runs takes its CPU, so
the bench's own polls (each reads every shard's counts) and RSS samples are kept sparse, as a client's
polls would be (the openai client's examples poll every few seconds)."""
GOAL_RATIO = 0.9
GOAL_P99_FACTOR = 2.0
FLAT_SHARE, FLAT_MB = 0.10, 64.0
"""RSS is flat in the file's size when the full batch's peak is within 10% or 64 MB (the more) of the small one's."""
FINISHED = {"completed", "failed", "cancelled", "expired"}
MIB = 1024 * 1024
PREFIXES = ("", "", "", "Hi, ", "Hello! ", "Quick question: ", "Re: ", "FYI: ", "Urgent: ", "Note - ")
SUFFIXES = ("", " (ref {n})", " #{n}", " Order {n}.", " Thanks, customer {n}.", " [ticket {n}]", " Thanks!",
            " - case {n}", " Please help ({n}).", " ?")


# Data

def read_pool(data: Path) -> list[str]:
    """Every distinct non-blank `text` of the data sets' CSV files, in file order."""
    seen: dict[str, None] = {}
    for name in DATA_SETS:
        for path in sorted((data / name).glob("*.csv")):
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    text = " ".join((row.get("text") or "").split())
                    if text:
                        seen.setdefault(text, None)
    if not seen:
        raise SystemExit(f"no texts under {data} ({', '.join(DATA_SETS)}): pass --data")
    return list(seen)


def short_text(rng: random.Random, pool: list[str], row: int) -> str:
    return f"{rng.choice(PREFIXES)}{rng.choice(pool)}{rng.choice(SUFFIXES).format(n=row)}"


def long_text(rng: random.Random, pool: list[str], row: int) -> str:
    target = rng.randint(200, 400)
    parts, words = [f"Ticket {row}:"], 0
    while words < target:
        text = rng.choice(pool)
        parts.append(text)
        words += len(text.split())
    return " ".join(parts)


def write_tables(pool: list[str], directory: Path, short_rows: int, prefixes: dict[str, int], long_rows: int,
                 sample_short: int, sample_long: int, seed: int) -> dict[str, Any]:
    """The short table (and its prefixes as tables of their own) and the long table, a row at a time;
    the first rows of each kept as the in-process sample."""
    began = time.perf_counter()
    paths = {"full": directory / "short.csv", **{name: directory / f"short-{name}.csv" for name in prefixes},
             "long": directory / "long.csv"}
    samples: dict[str, list[str]] = {"short": [], "long": []}
    with contextlib.ExitStack() as stack:
        writers = {name: csv.writer(stack.enter_context(open(paths[name], "w", newline="", encoding="utf-8")))
                   for name in ("full", *prefixes)}
        for writer in writers.values():
            writer.writerow(["id", "text"])
        rng = random.Random(seed)
        for row in range(short_rows):
            text = short_text(rng, pool, row)
            writers["full"].writerow([row, text])
            for name, rows in prefixes.items():
                if row < rows:
                    writers[name].writerow([row, text])
            if row < sample_short:
                samples["short"].append(text)
            if row and row % 200_000 == 0:
                print(f"  {row:,} short rows written", flush=True)
    rng = random.Random(seed + 1)
    long_words = 0
    with open(paths["long"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for row in range(long_rows):
            text = long_text(rng, pool, row)
            long_words += len(text.split())
            writer.writerow([row, text])
            if row < sample_long:
                samples["long"].append(text)
    rows = {"full": short_rows, **{name: min(r, short_rows) for name, r in prefixes.items()}, "long": long_rows}
    return {"paths": paths, "rows": rows, "samples": samples, "seconds": round(time.perf_counter() - began, 1),
            "bytes": {name: path.stat().st_size for name, path in paths.items()},
            "long_mean_words": round(long_words / long_rows, 1) if long_rows else None,
            "short_mean_chars": round(statistics.fmean(len(t) for t in samples["short"]), 1)
            if samples["short"] else None}


# The server's processes and their memory

def role_of(process: psutil.Process, root: int) -> str:
    if process.pid == root:
        return "supervisor (bentoml serve)"
    command = process.cmdline()
    joined = " ".join(command)
    if "--service-name" in command:
        service = command[command.index("--service-name") + 1]
        if service.startswith("fewshot-infer"):
            return "inference worker"
        return {"fewshot": "gateway", "fewshot-trainer": "trainer service"}.get(service, f"service {service}")
    for module, role in (("batches.consumer", "batch worker"), ("trainers.consumer", "trainer"),
                         ("export_process", "export process")):
        if module in joined:
            return role
    return f"other: {joined[:60]}"


def server_tree(server: LiveServer) -> list[psutil.Process]:
    assert server.process is not None
    root = psutil.Process(server.process.pid)
    return [root, *root.children(recursive=True)]


class MemorySampler:
    """Samples the RSS of every process of the server's tree in a thread; `phase(name)` keeps each
    process's peak during it (by role; a role's peak is its largest process's: a restarted batch worker
    is a second process of the same role)."""

    def __init__(self, server: LiveServer, every: float) -> None:
        self._server, self._every = server, every
        self._phase: str | None = None
        self._lock = threading.Lock()
        self.peaks: dict[str, dict[str, dict[str, Any]]] = {}
        self._roles: dict[int, tuple[psutil.Process, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self._lock:
            self.peaks[name] = {}
            self._phase = name
        self.sample()
        try:
            yield
        finally:
            self.sample()
            with self._lock:
                self._phase = None

    def sample(self) -> None:
        with self._lock:
            phase = self._phase
            if phase is None or self._server.process is None:
                return
            try:
                tree = server_tree(self._server)
            except psutil.NoSuchProcess:
                return
            peaks = self.peaks[phase]
            for process in tree:
                try:
                    known = self._roles.get(process.pid)
                    if known is None or known[0].create_time() != process.create_time():
                        known = self._roles[process.pid] = (process, role_of(process, self._server.process.pid))
                    rss = process.memory_info().rss / MIB
                except psutil.Error:
                    continue
                entry = peaks.setdefault(known[1], {"peak_mb": 0.0, "pids": []})
                entry["peak_mb"] = max(entry["peak_mb"], round(rss, 1))
                if process.pid not in entry["pids"]:
                    entry["pids"].append(process.pid)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()


# Online latency

class Latency:
    """One client in a closed loop of one-text /v1/predict requests, in a thread."""

    def __init__(self, url: str, texts: list[str], requests: int, seconds: float, seed: int) -> None:
        self._url, self._texts, self._requests, self._seconds = url, texts, requests, seconds
        self._rng = random.Random(seed)
        self.samples: list[tuple[float, float]] = []
        """(finished at, time.monotonic(); milliseconds) per request answered 200."""
        self.errors = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="latency", daemon=True)

    def start(self) -> Latency:
        self._thread.start()
        return self

    def join(self) -> Latency:
        self._thread.join()
        return self

    def run(self) -> Latency:
        with httpx.Client(base_url=self._url, timeout=60) as client:
            began = time.monotonic()
            while (len(self.samples) + self.errors < self._requests and time.monotonic() - began < self._seconds
                   and not self.stop.is_set()):
                text = self._rng.choice(self._texts)
                sent = time.perf_counter()
                try:
                    response = client.post("/v1/predict", json={"model_name": MODEL, "texts": [text]})
                except httpx.HTTPError:
                    self.errors += 1
                    continue
                if response.status_code == 200:
                    self.samples.append((time.monotonic(), (time.perf_counter() - sent) * 1000))
                else:
                    self.errors += 1
        return self

    def summary(self, until: float | None = None) -> dict[str, Any]:
        values = sorted(ms for at, ms in self.samples if until is None or at <= until)
        if not values:
            return {"requests": 0, "errors": self.errors}

        def pick(share: float) -> float:
            return round(values[min(len(values) - 1, int(share * len(values)))], 2)

        return {"requests": len(values), "errors": self.errors, "p50_ms": pick(0.5), "p90_ms": pick(0.9),
                "p99_ms": pick(0.99), "max_ms": round(values[-1], 2), "mean_ms": round(statistics.fmean(values), 2),
                "excluded_after_batch": len(self.samples) - len(values)}


# The in-process limit (a child process with the server's environment)

def in_process_child(tag: str, samples_file: str, groups: int, out: str) -> None:
    from fewshot.settings import apply_process_environment, get_settings

    settings = get_settings()
    apply_process_environment(settings)
    # As batches/tasks.py `engine()`: the worker's loaded models, as the inference service loads them.
    from fewshot.serving.engine import predict_items
    from fewshot.serving.items import TextItem
    from fewshot.serving.model_cache import ModelCache
    from fewshot.serving.model_loading import InferenceRuntime, single_threaded_numpy

    single_threaded_numpy()
    runtime = InferenceRuntime.from_settings(settings)
    cache = ModelCache.for_runtime(runtime, settings.model_refresh_seconds, settings.max_loaded_models)
    began = time.perf_counter()
    loaded = cache.get(tag)
    assert loaded is not None, f"{tag} not in the store"
    while loaded.backend.exporting:  # the server exported it already: this only reads the export
        assert time.perf_counter() - began < 600, f"{tag}: still exporting after 600 s"
        time.sleep(0.5)
        loaded = cache.get(tag)
        assert loaded is not None
    load_seconds = time.perf_counter() - began
    samples = json.loads(Path(samples_file).read_text(encoding="utf-8"))
    result: dict[str, Any] = {"backend": loaded.backend.model_dump(exclude={"auto"}),
                              "auto_chosen": loaded.backend.auto.chosen if loaded.backend.auto else None,
                              "load_seconds": round(load_seconds, 2), "threads": runtime.threads, "sets": {}}
    for kind, texts in samples.items():
        if not texts:
            continue
        items = [TextItem(model_name=tag, text=text) for text in texts]
        predict_items(cache, items[:CHUNK_TEXTS])  # warm-up, not timed
        calls = [sorted(items[start:start + groups], key=lambda item: len(item.text))
                 for start in range(0, len(items), groups)]
        began = time.perf_counter()
        answered = 0
        for group in calls:
            for start in range(0, len(group), CHUNK_TEXTS):
                answers = predict_items(cache, group[start:start + CHUNK_TEXTS])
                answered += sum(answer.found and answer.text_refused is None for answer in answers)
        seconds = time.perf_counter() - began
        result["sets"][kind] = {"texts": len(items), "answered": answered, "seconds": round(seconds, 2),
                                "texts_per_s": round(len(items) / seconds, 1)}
        print(f"  in-process {kind}: {len(items):,} texts in {seconds:.1f} s, {len(items) / seconds:,.0f} texts/s",
              flush=True)
    result["peak_rss_mb"] = peak_rss_mb()
    cache.stop()
    Path(out).write_text(json.dumps(result))


def peak_rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def in_process_limit(server: LiveServer, tag: str, samples: dict[str, list[str]], groups: int,
                     state: Path) -> dict[str, Any]:
    samples_file, out = state / "in-process-samples.json", state / "in-process.json"
    samples_file.write_text(json.dumps(samples), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "bench.batch", "--in-process-child", tag, str(samples_file), str(groups),
                    str(out)], cwd=PROJECT_ROOT, env=server.env, check=True)
    return json.loads(out.read_text())


# Batches

def batch_workers(server: LiveServer) -> list[psutil.Process]:
    found = []
    for process in server_tree(server):
        with contextlib.suppress(psutil.Error):
            if "batches.consumer" in " ".join(process.cmdline()):
                found.append(process)
    return found


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        response = client.post("/v1/files", files={"file": (path.name, handle, "text/csv")},
                               data={"purpose": "batch"}, timeout=600)
    response.raise_for_status()
    return response.json()


def check_results(client: httpx.Client, batch: dict[str, Any], rows: int, state: Path) -> dict[str, Any]:
    """Download the results (and errors) file, streaming, and count each input id's rows."""
    seen = bytearray(rows)
    counts = {"result_rows": 0, "error_rows": 0, "foreign_ids": 0, "unlabelled": 0}
    began = time.perf_counter()
    downloaded = 0
    for key, counter in (("output_file_id", "result_rows"), ("error_file_id", "error_rows")):
        if not batch.get(key):
            continue
        target = state / f"{batch['id']}-{key}.csv"
        with client.stream("GET", f"/v1/files/{batch[key]}/content", timeout=600) as response:
            response.raise_for_status()
            with open(target, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        downloaded += target.stat().st_size
        with open(target, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                counts[counter] += 1
                try:
                    number = int(row["id"])
                except (TypeError, ValueError):
                    number = -1
                if 0 <= number < rows:
                    seen[number] = min(255, seen[number] + 1)
                else:
                    counts["foreign_ids"] += 1
                if counter == "result_rows" and not row.get("label"):
                    counts["unlabelled"] += 1
        target.unlink()
    missing = seen.count(0)
    duplicated = rows - missing - seen.count(1)
    return {**counts, "missing_ids": missing, "duplicated_ids": duplicated, "download_bytes": downloaded,
            "download_and_check_seconds": round(time.perf_counter() - began, 1),
            "every_id_once": counts["result_rows"] + counts["error_rows"] == rows and missing == 0 and duplicated == 0
            and counts["foreign_ids"] == 0 and counts["error_rows"] == 0}


def run_batch(server: LiveServer, client: httpx.Client, sampler: MemorySampler, name: str, path: Path, rows: int,
              state: Path, latency: Latency | None = None, kill_at: float | None = None) -> dict[str, Any]:
    """Upload, create, poll to the end, download and check one batch; optionally measure the latency
    during it, or SIGKILL the batch worker once `kill_at` of it is done."""
    print(f"batch {name}: {rows:,} rows ({path.stat().st_size / MIB:.1f} MB)", flush=True)
    result: dict[str, Any] = {"rows": rows, "file_mb": round(path.stat().st_size / MIB, 1),
                              "load_before": round(os.getloadavg()[0], 2)}
    with sampler.phase(name):
        began = time.perf_counter()
        stored = upload(client, path)
        result["upload_seconds"] = round(time.perf_counter() - began, 2)
        created = time.monotonic()
        response = client.post("/v1/batches", json={"input_file_id": stored["id"], "endpoint": "/v1/predict",
                                                    "model_name": MODEL, "metadata": {"bench": name}})
        response.raise_for_status()
        batch = response.json()
        seen: dict[str, float] = {}
        timeline: list[tuple[float, int]] = []
        kill: dict[str, Any] | None = None
        last_print = 0.0
        while True:
            batch = client.get(f"/v1/batches/{batch['id']}").json()
            now = time.monotonic()
            seen.setdefault(batch["status"], now - created)
            done, total = batch["progress"]["texts_done"], batch["progress"]["texts_total"]
            timeline.append((round(now - created, 2), done))
            if latency is not None and done and not latency.samples and not latency.stop.is_set() \
                    and "latency_started" not in result:
                result["latency_started"] = round(now - created, 2)
                latency.start()
            if kill_at is not None and kill is None and total and done >= kill_at * total \
                    and batch["status"] == "in_progress":
                kill = kill_worker(server, done, total, now - created)
            if kill is not None and "resumed_after" not in kill and kill.get("restarted_after") is None:
                restarted = [p for p in batch_workers(server) if p.pid != kill["pid"]]
                if restarted:
                    kill["restarted_after"] = round(now - created - kill["at"], 2)
                    kill["new_pid"] = restarted[0].pid
            if kill is not None and "resumed_after" not in kill and done > kill["texts_done"]:
                kill["resumed_after"] = round(now - created - kill["at"], 2)
            if now - last_print >= 10 or batch["status"] in FINISHED:
                last_print = now
                rate = batch["progress"]["texts_per_second"]
                print(f"  {now - created:6.1f} s {batch['status']}: {done:,}/{total or 0:,} texts"
                      + (f", {rate:,.0f}/s" if rate else "") + (f", eta {batch['progress']['eta_seconds']:.0f} s"
                                                                if batch["progress"]["eta_seconds"] else ""),
                      flush=True)
            if batch["status"] in FINISHED:
                break
            time.sleep(POLL_SECONDS)
        ended = time.monotonic()
        if latency is not None:
            latency.stop.set()
            if "latency_started" in result:
                latency.join()
                result["latency"] = latency.summary(until=created + seen.get("finalizing", ended - created))
        if batch["status"] != "completed":
            raise RuntimeError(f"batch {name} ended {batch['status']}: {batch.get('errors')}\n{server.log_tail()}")
        result["check"] = check_results(client, batch, rows, state)
    compute = (batch["finalizing_at"] or batch["completed_at"]) - batch["in_progress_at"]
    running = batch["completed_at"] - batch["in_progress_at"]
    wall = ended - created
    result.update({
        "batch_id": batch["id"], "status": batch["status"], "request_counts": batch["request_counts"],
        "shards": batch["progress"]["shards_total"], "shard_attempts": batch["progress"]["shard_attempts"],
        "planning_seconds_seen": round(seen.get("in_progress", 0.0), 2),
        "in_progress_to_completed_s": running, "in_progress_to_finalizing_s": compute,
        "rows_per_s": round(rows / running, 1) if running > 0 else None,
        "compute_rows_per_s": round(rows / compute, 1) if compute > 0 else None,
        "wall_from_create_s": round(wall, 2), "rows_per_s_from_create": round(rows / wall, 1),
        "status_seen_s": {status: round(at, 2) for status, at in seen.items()},
        "timeline": timeline[:: max(1, len(timeline) // 200)],
        "kill": kill,
    })
    print(f"  {name}: {result['rows_per_s']} rows/s (in_progress → completed {running} s), wall {wall:.1f} s, "
          f"results {result['check']['result_rows']:,} rows, every id once: {result['check']['every_id_once']}",
          flush=True)
    return result


def kill_worker(server: LiveServer, done: int, total: int, at: float) -> dict[str, Any]:
    workers = batch_workers(server)
    assert len(workers) == 1, f"expected one batch worker, found {[w.pid for w in workers]}"
    worker = workers[0]
    worker.send_signal(signal.SIGKILL)
    print(f"  SIGKILL batch worker pid {worker.pid} at {done:,}/{total:,} texts ({100 * done / total:.0f}%)",
          flush=True)
    return {"pid": worker.pid, "at": round(at, 2), "texts_done": done, "share_done": round(done / total, 3),
            "restarted_after": None}


# The server and its model

def train_and_export(server: LiveServer) -> dict[str, Any]:
    with server.client() as client:
        began = time.perf_counter()
        response = client.post("/v1/train", json={"model_name": MODEL, "base_model": BASE_MODEL, "strategy": "head",
                                                  "examples": read_examples("banking77_train_4labels.csv")})
        response.raise_for_status()
        job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"}, timeout=600)
        assert job["status"] == "completed", job
        trained = time.perf_counter() - began
        client.post("/v1/predict", json={"model_name": MODEL, "texts": ["where is my card?"]}).raise_for_status()
        while True:  # AUTO times the candidates, exports the chosen one and swaps it in
            view = client.get(f"/v1/models/{MODEL}").json()
            backend = view.get("backend")
            if backend and not backend.get("exporting"):
                break
            if time.perf_counter() - began > 900:
                raise RuntimeError(f"{MODEL} still exporting after 900 s: {backend}\n{server.log_tail()}")
            time.sleep(1)
        served = time.perf_counter() - began
    print(f"model {view['tag']}: trained in {trained:.1f} s, served by {backend['backend']}-{backend['quantize']} "
          f"({backend['pipeline']}) after {served:.1f} s", flush=True)
    return {"tag": view["tag"], "backend": {k: v for k, v in backend.items() if k != "auto"},
            "auto_chosen": (backend.get("auto") or {}).get("chosen"),
            "auto_candidates": {name: {k: c.get(k) for k in ("one_text_ms", "full_pass_texts_per_s", "eligible")}
                                for name, c in ((backend.get("auto") or {}).get("candidates") or {}).items()},
            "long_texts": view["long_texts"]["policy"], "train_seconds": round(trained, 1),
            "served_seconds": round(served, 1)}


def wait_for_go_file() -> None:
    go = os.environ.get("BENCH_GO_FILE")
    if not go:
        return
    print(f"waiting for {go} (BENCH_GO_FILE) before the timed phases", flush=True)
    while not Path(go).exists():
        time.sleep(2)
    print("go", flush=True)


# Report

def goals(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    batches, limit = report["batches"], report.get("in_process") or {}
    met: dict[str, dict[str, Any]] = {}
    ratios = {}
    for name, kind in (("full", "short"), ("long", "long")):
        if name in batches and kind in limit.get("sets", {}):
            ratios[name] = batches[name]["ratio_to_in_process"]
    if ratios:
        met["a_batch_at_least_0.9x_in_process"] = {"met": all(r is not None and r >= GOAL_RATIO
                                                              for r in ratios.values()), "cases": ratios}
    complete = {name: b["check"]["every_id_once"] for name, b in batches.items()}
    if complete:
        met["b_results_every_row_once"] = {"met": all(complete.values()), "cases": complete}
    if "small" in batches and "full" in batches:
        flat = {}
        for role, full in batches["full"]["rss"].items():
            small = batches["small"]["rss"].get(role)
            if small is not None:
                flat[role] = full["peak_mb"] - small["peak_mb"] <= max(FLAT_MB, FLAT_SHARE * small["peak_mb"])
        met["c_rss_flat_in_file_size"] = {"met": all(flat.values()), "cases": flat}
    if "kill" in batches:
        kill = batches["kill"]
        killed = kill["kill"] is not None
        met["d_killed_worker_resumes_every_id_once"] = {
            "met": killed and kill["status"] == "completed" and kill["check"]["every_id_once"],
            "cases": {"killed": killed, "every_id_once": kill["check"]["every_id_once"]}}
    latency = report.get("latency") or {}
    if latency.get("idle", {}).get("p99_ms") and latency.get("during", {}).get("p99_ms"):
        factor = latency["during"]["p99_ms"] / latency["idle"]["p99_ms"]
        met["e_p99_during_batch_at_most_2x_idle"] = {"met": factor <= GOAL_P99_FACTOR, "cases": {
            "factor": round(factor, 2)}}
    return met


def markdown(report: dict[str, Any]) -> str:
    model, data, batches = report["model"], report["data"], report["batches"]
    backend = model["backend"]
    lines = [f"# Batch jobs: throughput, memory, a killed worker, online latency ({report['when']})", "",
             f"Machine: {report['machine']}. Load average (1/5/15 min) at the timed phases' start "
             f"{report['load_start']}, end {report['load_end']}.",
             f"Model: `{model['tag']}`, `head` on {BASE_MODEL} (4 banking77 labels x 8), long_texts "
             f"{model['long_texts']}; INFERENCE_BACKEND=AUTO served it with {backend['backend']}-{backend['quantize']} "
             f"({backend['pipeline']} path; AUTO chose {model['auto_chosen']}), {model['served_seconds']} s after "
             f"POST /v1/train. BATCH_SHARD_TEXTS {report['shard_texts']:,}.",
             f"Data: {data['rows']['full']:,} short rows (mean {data['short_mean_chars']} characters) and "
             f"{data['rows']['long']:,} long rows (mean {data['long_mean_words']} words) from "
             f"{', '.join(DATA_SETS)} ({data['pool_texts']:,} distinct texts), CSV `id,text`; written in "
             f"{data['seconds']} s.", ""]
    limit = report.get("in_process")
    if limit:
        lines += ["## In-process limit (same version, same backend, server idle)", "",
                  f"fewshot.serving.engine.predict_items in a process loading the version as the batch worker does "
                  f"({limit['backend']['backend']}-{limit['backend']['quantize']}, {limit['backend']['pipeline']}; "
                  f"threads {limit['threads'] or 'default'}); groups of {report['shard_texts']:,} sorted by length, "
                  f"{CHUNK_TEXTS} texts per call; peak RSS {limit['peak_rss_mb']} MB.", "",
                  "| texts | count | seconds | texts/s |", "|---|---|---|---|"]
        for kind, s in limit["sets"].items():
            lines.append(f"| {kind} | {s['texts']:,} | {s['seconds']} | {s['texts_per_s']:,} |")
        lines.append("")
    if batches:
        lines += ["## Batches", "",
                  "rows/s: rows / (completed_at − in_progress_at), the batch record's whole seconds (planning the "
                  "file comes before in_progress_at); compute: to finalizing_at (assembling the results file after); "
                  "wall: POST /v1/batches → `completed` seen here (2 s polls).", "",
                  "| batch | rows | file MB | upload s | planning s | compute s | in_progress → completed s | rows/s | "
                  "× in-process | compute rows/s | wall s | rows/s from create | shards | attempts | result rows | "
                  "missing / duplicated ids | download + check s | load before |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, b in batches.items():
            c = b["check"]
            lines.append(
                f"| {name} | {b['rows']:,} | {b['file_mb']} | {b['upload_seconds']} | {b['planning_seconds_seen']} | "
                f"{b['in_progress_to_finalizing_s']} | {b['in_progress_to_completed_s']} | {b['rows_per_s']} | "
                f"{b.get('ratio_to_in_process')} | {b['compute_rows_per_s']} | {b['wall_from_create_s']} | "
                f"{b['rows_per_s_from_create']} | {b['shards']} | {b['shard_attempts']} | {c['result_rows']:,} | "
                f"{c['missing_ids']} / {c['duplicated_ids']} | {c['download_and_check_seconds']} | "
                f"{b['load_before']} |")
        roles = sorted({role for b in batches.values() for role in b["rss"]})
        lines += ["", "## Peak RSS per process during each batch (MB; upload to download)", "",
                  "| process | " + " | ".join(f"{n} ({b['rows']:,} rows)" for n, b in batches.items()) + " |",
                  "|---|" + "---|" * len(batches)]
        for role in roles:
            cells = []
            for b in batches.values():
                entry = b["rss"].get(role)
                cells.append("–" if entry is None else f"{entry['peak_mb']:.0f}"
                             + (f" ({len(entry['pids'])} processes)" if len(entry["pids"]) > 1 else ""))
            lines.append(f"| {role} | " + " | ".join(cells) + " |")
        kill = batches.get("kill")
        if kill:
            k = kill["kill"] or {}
            lines += ["", "## SIGKILL of the batch worker mid-run", ""]
            if not kill["kill"]:
                lines.append("The batch finished before the kill point: nothing was killed.")
            else:
                lines += [f"Killed at {k['texts_done']:,}/{kill['rows']:,} texts ({100 * k['share_done']:.0f}%), "
                          f"{k['at']} s after creation; a new batch worker ran {k['restarted_after']} s later and "
                          f"progress moved again {k.get('resumed_after')} s after the kill.",
                          f"Time lost: {kill['in_progress_to_completed_s']} s in progress − {kill['rows']:,} rows / "
                          f"{kill['steady_rows_per_s']} rows/s ({kill['steady_from']} batch) = "
                          f"**{kill['time_lost_s']} s**; shard attempts − shards = "
                          f"**{kill['shard_attempts'] - kill['shards']}**; results: {kill['check']['result_rows']:,} "
                          f"rows, {kill['check']['missing_ids']} missing, {kill['check']['duplicated_ids']} "
                          "duplicated."]
    latency = report.get("latency")
    if latency:
        lines += ["", "## Online latency, /v1/predict, one text per request, one client (closed loop)", "",
                  "| when | requests | errors | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
        for when, s in latency.items():
            if isinstance(s, dict) and "requests" in s:
                lines.append(f"| {when} | {s['requests']} | {s['errors']} | {s.get('p50_ms')} | {s.get('p90_ms')} | "
                             f"{s.get('p99_ms')} | {s.get('max_ms')} |")
        if latency.get("during_batch"):
            lines.append(f"\nDuring: the `{latency['during_batch']}` batch, from its first texts done; requests "
                         "answered after it began finalizing are left out.")
    lines += ["", "## Goals", ""]
    for goal, entry in report["goals"].items():
        cases = ", ".join(f"{k}: {v}" for k, v in entry["cases"].items())
        lines.append(f"- {goal}: **{'met' if entry['met'] else 'not met'}** ({cases})")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--in-process-child":
        tag, samples_file, groups, out = sys.argv[2:6]
        in_process_child(tag, samples_file, int(groups), out)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-rows", type=int, default=1_000_000)
    parser.add_argument("--long-rows", type=int, default=20_000)
    parser.add_argument("--small-rows", type=int, default=None,
                        help="rows of the smaller short batch (default: 100,000, or a tenth of --short-rows if less)")
    parser.add_argument("--kill-rows", type=int, default=200_000, help="rows of the batch whose worker is killed")
    parser.add_argument("--kill-at", type=float, default=0.3, help="share of the kill batch done when killed")
    parser.add_argument("--sample-short", type=int, default=50_000, help="short texts timed in-process")
    parser.add_argument("--sample-long", type=int, default=2_000, help="long texts timed in-process")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-during", default=None, choices=("small", "full", "long"),
                        help="the batch during which the latency is measured again (default: small, or full when "
                             "small has under 20,000 rows: done before the measurement would start)")
    parser.add_argument("--shard-texts", type=int, default=None, help="BATCH_SHARD_TEXTS (default: the server's)")
    parser.add_argument("--sample-seconds", type=float, default=1.0, help="RSS sampling interval")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"of {','.join(PHASES)}")
    parser.add_argument("--data", type=Path, default=DATA, help="the data sets' directory (../shared/data)")
    parser.add_argument("--seed", type=int, default=43)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-state", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    small_rows = min(args.short_rows, args.small_rows if args.small_rows is not None
                     else min(100_000, max(1, args.short_rows // 10)))
    kill_rows = min(args.kill_rows, args.short_rows)
    shard_texts = args.shard_texts or DEFAULT_SHARD_TEXTS
    latency_during = args.latency_during or ("small" if small_rows >= 20_000 else "full")
    when = datetime.now(UTC).replace(microsecond=0)
    state = Path(tempfile.mkdtemp(prefix="fewshot-bench-batch-"))
    print(f"state: {state}", flush=True)

    pool = read_pool(args.data)
    print(f"data: {len(pool):,} distinct texts from {args.data}; writing {args.short_rows:,} short and "
          f"{args.long_rows:,} long rows", flush=True)
    prefixes = {name: rows for name, rows in (("small", small_rows), ("kill", kill_rows))
                if name in phases and rows < args.short_rows}
    data = write_tables(pool, state, args.short_rows, prefixes, args.long_rows, args.sample_short, args.sample_long,
                        args.seed)
    files = {"full": data["paths"]["full"], "long": data["paths"]["long"],
             "small": data["paths"].get("small", data["paths"]["full"]),
             "kill": data["paths"].get("kill", data["paths"]["full"])}
    rows = {"full": args.short_rows, "long": args.long_rows, "small": small_rows, "kill": kill_rows}
    env = {"INFERENCE_BACKEND": "AUTO"}  # the default: the harness sets TORCH
    if args.shard_texts:
        env["BATCH_SHARD_TEXTS"] = str(args.shard_texts)
    server = LiveServer(state / "service", env=env)
    report: dict[str, Any] = {
        "when": when.isoformat(), "machine": f"{server_machine()}, {cpu_name()}", "arguments": vars(args) | {
            "data": str(args.data), "out": str(args.out)},
        "shard_texts": shard_texts, "server_env": env, "phases": phases,
        "data": {"pool_texts": len(pool), "rows": rows, "seconds": data["seconds"], "bytes": data["bytes"],
                 "short_mean_chars": data["short_mean_chars"], "long_mean_words": data["long_mean_words"]},
        "batches": {}, "latency": {}}
    try:
        server.start()
        print(f"server up in {server.start_seconds:.1f} s at {server.url}", flush=True)
        report["model"] = train_and_export(server)
        wait_for_go_file()
        report["load_start"] = [round(x, 2) for x in os.getloadavg()]
        latency_texts = data["samples"]["short"][:5000] or pool[:5000]
        if "idle" in phases:
            print("latency, server idle", flush=True)
            idle = Latency(server.url, latency_texts, args.latency_requests, args.latency_seconds, args.seed).run()
            report["latency"]["idle"] = idle.summary()
            print(f"  idle: {report['latency']['idle']}", flush=True)
        if "inprocess" in phases:
            print("in-process limit (server idle)", flush=True)
            report["in_process"] = in_process_limit(server, report["model"]["tag"], data["samples"], shard_texts,
                                                    state)
        with MemorySampler(server, args.sample_seconds) as sampler, server.client() as client:
            for name in ("small", "full", "long", "kill"):
                if name not in phases:
                    continue
                latency = None
                if name == latency_during:
                    latency = Latency(server.url, latency_texts, args.latency_requests, args.latency_seconds,
                                      args.seed + 1)
                result = run_batch(server, client, sampler, name, files[name], rows[name], state, latency=latency,
                                   kill_at=args.kill_at if name == "kill" else None)
                result["rss"] = sampler.peaks[name]
                kind = "long" if name == "long" else "short"
                limit = (report.get("in_process") or {}).get("sets", {}).get(kind)
                result["ratio_to_in_process"] = (round(result["rows_per_s"] / limit["texts_per_s"], 3)
                                                 if limit and result["rows_per_s"] else None)
                if "latency" in result:
                    report["latency"]["during"] = result.pop("latency")
                    report["latency"]["during_batch"] = name
                if name == "kill":  # steady: the full batch's rate (else the small one's, else its own)
                    steady_from = next((n for n in ("full", "small") if n in report["batches"]), "kill")
                    steady = report["batches"].get(steady_from, result)["rows_per_s"]
                    result.update({"steady_rows_per_s": steady, "steady_from": steady_from,
                                   "time_lost_s": round(result["in_progress_to_completed_s"] - rows[name] / steady, 1)
                                   if steady else None})
                report["batches"][name] = result
        report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stopped = server.close()
        if not stopped.clean:
            print(f"server stop: {stopped}", flush=True)
        if args.keep_state:
            print(f"state kept: {state}", flush=True)
        else:
            shutil.rmtree(state, ignore_errors=True)
    report.setdefault("load_start", None)
    report["goals"] = goals(report)
    text = markdown(report)
    stem = write_report(args.out, "batch", when, report, text)
    print(text)
    print(f"written: {stem}.json and .md")


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "CPU"


if __name__ == "__main__":
    main()
