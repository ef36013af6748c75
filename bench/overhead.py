"""Overhead benchmark: what the server itself costs per request and per text, against the peer.

    make bench-overhead       (or: .venv/bin/python -m bench.overhead [--duration 15])

A model that costs nothing (bench/tiny_model.py: 2-layer BERT, hidden size 32, random weights)
exposes the server's own cost on any machine. In one run, same texts (banking77 test set), same
load (wrk, bench/loadgen.py), one server at a time:

- this service (`bentoml serve`, default settings), the tiny model trained into its store with
  `strategy: head`, on /v1/predict and /v1/embeddings (our body, and OpenAI's: `embeddings-openai`);
- Infinity (PyPI `infinity-emb`, torch engine, its defaults) serving the same tiny model on
  /embeddings with the OpenAI body; it needs transformers<5, so it lives in its own virtualenv
  (`make bench-overhead` creates bench/.venv-infinity);
- our naive baseline (bench/naive_service.py: the same HTTP stack, one forward pass per request).

Points: c=1 and c=64 with one text per request, c=16 with 16. Besides req/s, texts/s, p50/p99 and
errors, each point reports the server's CPU time per request, summed over every process of the
server (psutil, before and after the measured run). Writes bench/results/overhead-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from bench.loadgen import WARMUP_SECONDS, run_wrk, summarise, write_bodies
from bench.report_files import server_machine, write_report
from bench.serving import RESULTS, TEXTS_FILE
from bench.tiny_model import make_tiny_model
from harness.fixtures import read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, free_port, wait_for_job

MODEL = "tiny"
POINTS = ((1, 1), (64, 1), (16, 16))
"""(concurrent clients, texts per request)"""
INFINITY = PROJECT_ROOT / "bench" / ".venv-infinity" / "bin" / "infinity_emb"
OUR_ROUTES = {"predict": "/v1/predict", "embeddings": "/v1/embeddings"}
OPENAI_ROUTE = "embeddings-openai"
"""Our /v1/embeddings with OpenAI's body and answer: what Infinity's /embeddings serves."""

Body = Callable[[str, list[str]], dict]


def ours(model: str, texts: list[str]) -> dict:
    return {"model_name": model, "texts": texts}


def openai(model: str, texts: list[str]) -> dict:
    return {"model": model, "input": texts}


@dataclass
class Target:
    """A running server to measure: where its routes are, what body they take, its process tree."""

    name: str
    url: str
    routes: dict[str, str]
    body: Body
    root_pid: int
    bodies: dict[str, Body] = field(default_factory=dict)
    """Bodies of routes that take another than `body`."""

    def body_of(self, route: str) -> Body:
        return self.bodies.get(route, self.body)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of each process of the server, by role (see `role`)."""
        root = psutil.Process(self.root_pid)
        seconds: dict[str, float] = {}
        for process in [root, *root.children(recursive=True)]:
            try:
                times, name = process.cpu_times(), role(process.cmdline())
            except psutil.NoSuchProcess:
                continue
            seconds[name] = seconds.get(name, 0.0) + times.user + times.system
        return seconds


def role(command: list[str]) -> str:
    """A server process by what it runs: BentoML's CLI/supervisor, one of its service workers, the trainer."""
    if "--service-name" in command:
        return command[command.index("--service-name") + 1]
    if "trainers.consumer" in command:
        return "trainer"
    if any(part.endswith("infinity_emb") for part in command):
        return "infinity"
    return "supervisor"


def measure(target: Target, route: str, texts: list[str], concurrency: int, per_request: int,
            duration: float, model: str = MODEL) -> dict:
    path = target.routes[route]
    with tempfile.TemporaryDirectory() as scratch:
        bodies = Path(scratch) / "bodies.jsonl"
        write_bodies(bodies, model, texts, per_request, body=target.body_of(route))
        run_wrk(target.url + path, concurrency, WARMUP_SECONDS, bodies)
        before = target.cpu_seconds()
        report = run_wrk(target.url + path, concurrency, round(duration), bodies)
        after = target.cpu_seconds()
    by_role = {name: after[name] - before.get(name, 0.0) for name in after}
    cpu = sum(by_role.values())
    point = summarise(report, path, concurrency, per_request)
    served = report["requests"] - report["non2xx"]
    point.update(server=target.name, route=route,
                 cpu_ms_per_request=round(1000 * cpu / served, 3) if served else None,
                 cpu_ms_per_text=round(1000 * cpu / (served * per_request), 3) if served else None,
                 cpu_cores_busy=round(cpu / point["seconds"], 2),
                 cpu_ms_per_request_by_process={name: round(1000 * value / served, 3) if served else None
                                                for name, value in sorted(by_role.items())})
    print(f"  {target.name} {route} c={concurrency} texts={per_request}: {point['requests_per_s']} req/s, "
          f"p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, {point['cpu_ms_per_request']} CPU ms/req "
          f"{point['cpu_ms_per_request_by_process']}, errors {point['errors']}", flush=True)
    return point


def measure_all(target: Target, texts: list[str], duration: float, points: tuple[tuple[int, int], ...] = POINTS,
                model: str = MODEL) -> list[dict]:
    with httpx.Client(base_url=target.url, timeout=120) as client:  # first load of the model: not measured
        for route, path in target.routes.items():
            client.post(path, json=target.body_of(route)(model, ["warm up"] * 16)).raise_for_status()
    return [measure(target, route, texts, concurrency, per_request, duration, model)
            for route in target.routes for concurrency, per_request in points]


def train_tiny_model(state: Path, base_model: Path) -> LiveServer:
    """The tiny model trained into a fresh store through our API (`strategy: head`); returns the
    server, stopped, so that the others can be measured without it running."""
    server = LiveServer(state / "service", env={"LOCAL_MODEL_DIRS": str(base_model.parent)}).start()
    try:
        with server.client() as client:
            job = client.post("/v1/train", json={
                "model_name": MODEL, "base_model": str(base_model), "strategy": "head",
                "examples": read_examples("banking77_train_4labels.csv")}).json()
            assert wait_for_job(client, job["job_id"], {"completed", "failed"})["status"] == "completed", job
    finally:
        server.close()
    return server


def run_bentoml(name: str, server: LiveServer, texts: list[str], duration: float,
                points: tuple[tuple[int, int], ...] = POINTS, model: str = MODEL,
                started: Callable[[LiveServer], None] | None = None, with_openai: bool = False,
                measure: Callable[[Target], list[dict]] | None = None) -> list[dict]:
    """Start one of our BentoML servers (the service, or the naive baseline), measure it, stop it;
    `started` runs once it answers (after the warm-up, before the measured points). `with_openai`:
    /v1/embeddings with OpenAI's body too. `measure`: the points taken of the running server (default:
    `measure_all` with wrk at `points`)."""
    server.start()
    try:
        assert server.process is not None
        routes = {**OUR_ROUTES, OPENAI_ROUTE: OUR_ROUTES["embeddings"]} if with_openai else OUR_ROUTES
        target = Target(name, server.url, routes, ours, server.process.pid, bodies={OPENAI_ROUTE: openai})
        with httpx.Client(base_url=target.url, timeout=120) as client:  # first load of the model: not measured
            for route, path in target.routes.items():
                client.post(path, json=target.body_of(route)(model, ["warm up"] * 16)).raise_for_status()
        if started is not None:
            started(server)
        return measure(target) if measure is not None else measure_all(target, texts, duration, points, model)
    finally:
        server.close()


def settled_backend(url: str, model: str, timeout: float = 600) -> dict:
    """The model's `backend` once its export (or AUTO's timing) is done: measuring before would
    measure torch serving it meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        backend = httpx.get(f"{url}/v1/models/{model}", timeout=30).json()["backend"]
        if backend is not None and not backend["exporting"]:
            return backend
        if time.monotonic() > deadline:
            raise SystemExit(f"{model}: still exporting after {timeout}s: {backend}")
        time.sleep(0.5)


def run_infinity(executable: Path, base_model: Path, state: Path, texts: list[str], duration: float,
                 engine: str = "torch", points: tuple[tuple[int, int], ...] = POINTS,
                 name: str = "infinity", extra_args: tuple[str, ...] = (),
                 measure: Callable[[Target], list[dict]] | None = None) -> list[dict]:
    """Infinity serving `base_model` with `engine` (torch, or optimum: the ONNX files in the model's
    directory, int8 `*quantize*` preferred on CPU). Started from inside the directory with
    `--model-id .`: given an absolute directory, Infinity 0.0.78's optimum engine passes optimum an
    absolute ONNX file name, which optimum refuses. `extra_args`: more of its command line;
    `measure`: as in `run_bentoml`."""
    port = free_port()
    log = (state / f"{name}.log").open("wb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1",
           "HF_HOME": str(state / f"{name}-hf-home")}  # its optimised ONNX cache: not in the user's
    process = subprocess.Popen(
        [str(executable), "v2", "--model-id", ".", "--served-model-name", MODEL, "--engine", engine,
         "--device", "cpu", "--port", str(port), *extra_args], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=base_model)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Infinity did not start; see {state / f'{name}.log'}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        target = Target(name, url, {"embeddings": "/embeddings"}, openai, process.pid)
        return measure(target) if measure is not None else measure_all(target, texts, duration, points)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def versus_peer(points: list[dict]) -> list[dict]:
    """Our embeddings points against Infinity's at the same load: ratios of req/s and p50."""
    peer = {(p["concurrency"], p["texts_per_request"]): p for p in points if p["server"] == "infinity"}
    rows = []
    for point in points:
        other = peer.get((point["concurrency"], point["texts_per_request"]))
        if point["server"] == "infinity" or other is None:
            continue
        rows.append({"server": point["server"], "route": point["route"], "concurrency": point["concurrency"],
                     "texts_per_request": point["texts_per_request"],
                     "requests_per_s_vs_infinity": round(point["requests_per_s"] / other["requests_per_s"], 3)
                     if other["requests_per_s"] else None,
                     "p50_ms": point["p50_ms"], "infinity_p50_ms": other["p50_ms"]})
    return rows


def served_with_line(served_with: dict[str, dict]) -> str:
    """How each run of this service served the model (AUTO's choice, the path around the body)."""
    return "Served with: " + "; ".join(
        f"{run}: {status['backend']}-{status['quantize']} ({status.get('pipeline')} path"
        f"{', chosen by timing on this machine' if status.get('auto') else ''})" for run, status in served_with.items())


def markdown(result: dict) -> str:
    lines = [
        f"# Overhead benchmark — {result['started_at']}",
        "",
        f"Machine: {result['machine']}. Model: {result['model']}. {result['duration_s']} s per point after "
        f"{WARMUP_SECONDS} s of warm-up; load generator: wrk; one server running at a time. CPU ms/req: CPU time "
        "of every process of the server during the measured run, per answered request.",
        "",
        served_with_line(result.get("served_with", {})),
        "",
        "| server | route | c | texts/req | req/s | texts/s | p50 ms | p99 ms | CPU ms/req | CPU ms/text | "
        "cores busy | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["points"]:
        lines.append(f"| {p['server']} | {p['route']} | {p['concurrency']} | {p['texts_per_request']} | "
                     f"{p['requests_per_s']} | {p['texts_per_s']} | {p['p50_ms']} | {p['p99_ms']} | "
                     f"{p['cpu_ms_per_request']} | {p['cpu_ms_per_text']} | {p['cpu_cores_busy']} | {p['errors']} |")
    if result["versus_infinity"]:
        lines += ["", "Against Infinity at the same load (its /embeddings):", "",
                  "| server | route | c | texts/req | req/s × Infinity | p50 ms | Infinity p50 ms |",
                  "|---|---|---|---|---|---|---|"]
        for row in result["versus_infinity"]:
            lines.append(f"| {row['server']} | {row['route']} | {row['concurrency']} | {row['texts_per_request']} | "
                         f"{row['requests_per_s_vs_infinity']} | {row['p50_ms']} | {row['infinity_p50_ms']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per point")
    parser.add_argument("--infinity", type=Path, default=INFINITY, help="the infinity_emb executable")
    parser.add_argument("--skip", default="", help="comma-separated servers not to measure: naive, infinity")
    parser.add_argument("--backends", default="AUTO,TORCH",
                        help="INFERENCE_BACKEND of each run of this service (AUTO: the default, timed per machine)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    started_at = datetime.now(UTC).replace(microsecond=0)
    texts = json.loads(TEXTS_FILE.read_text())

    state = Path(tempfile.mkdtemp(prefix="fewshot-overhead-"))
    base_model = make_tiny_model(state / "base-models" / "tiny-bert")
    trained = train_tiny_model(state, base_model)
    points: list[dict] = []
    served_with: dict[str, dict] = {}
    for backend in args.backends.split(","):
        server = LiveServer(state / f"service-{backend.lower()}", env={"INFERENCE_BACKEND": backend,
                                                                        "EMBEDDED_TRAINER": "false"})
        server.model_path = trained.model_path

        def settle(running: LiveServer, backend: str = backend) -> None:
            served_with[backend] = settled_backend(running.url, MODEL)

        points += run_bentoml(f"fewshot {backend.lower()}", server, texts, args.duration, with_openai=True,
                              started=settle)
    if "infinity" not in skip:
        if not args.infinity.exists():
            raise SystemExit(f"{args.infinity} not found: `make bench-overhead` installs Infinity there")
        points += run_infinity(args.infinity, base_model, state, texts, args.duration)
    if "naive" not in skip:
        naive = LiveServer(state / "naive", target="bench.naive_service:Naive")
        naive.model_path = trained.model_path  # same store, same model
        points += run_bentoml("naive", naive, texts, args.duration)

    result = {
        "started_at": started_at.isoformat(),
        "machine": server_machine(),
        "model": "tiny random-weight BERT (2 layers, hidden 32, all-MiniLM-L6-v2 tokenizer), head-only SetFit",
        "duration_s": args.duration,
        "served_with": served_with,
        "points": points,
        "versus_infinity": versus_peer(points),
    }
    stem = write_report(args.out, "overhead", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
