"""Serving benchmark: throughput and latency of /v1/predict and /v1/embeddings under concurrent load.

    make bench            (or: .venv/bin/python -m bench.serving [--duration 20])

Starts the service as a user would (`bentoml serve`, temporary MODEL_PATH, default settings but
INFERENCE_BACKEND=TORCH, as harness/live_server.py sets it: the references below run the torch
model, so this measures our request path against them; bench/backends.py measures the backends),
trains a small benchmark model through the API, and drives it from a separate load-generator
process (wrk, bench/loadgen.py) with random banking77 test texts. In the same run it measures two
references on the same model and texts: the in-process limit (the model alone on length-sorted
groups, see bench/reference.py) and a naive server with one forward pass per request
(bench/naive_service.py). Writes bench/results/serving-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.report_files import server_machine, write_report
from harness.fixtures import BASE_MODEL, read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

TEXTS_FILE = PROJECT_ROOT / "bench" / "data" / "banking77_test_texts.json"
RESULTS = PROJECT_ROOT / "bench" / "results"
MODEL = "bench"
ROUTES = {"predict": "/v1/predict", "embeddings": "/v1/embeddings"}


def run_module(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def warm_up(server: LiveServer) -> None:
    """One request per route first: the model's first load (and CUDA's warm-up) is not measured."""
    with server.client() as client:
        for route in ROUTES.values():
            response = client.post(route, json={"model_name": MODEL, "texts": ["warm up"] * 16})
            response.raise_for_status()


def load_points(server: LiveServer, concurrencies: list[int], sizes: list[int], duration: float) -> list[dict]:
    warm_up(server)
    points = []
    for route in ROUTES.values():
        for per_request in sizes:
            for concurrency in concurrencies:
                out = run_module("bench.loadgen", server.url, route, MODEL, str(TEXTS_FILE), str(concurrency),
                                 str(per_request), str(duration), env=server.env)
                point = json.loads(out)
                print(f"  {route} c={concurrency} texts={per_request}: {point['texts_per_s']} texts/s, "
                      f"p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, errors {point['errors']}", flush=True)
                points.append(point)
    return points


def base_model_env(base_model: str) -> dict[str, str]:
    """A local base model (absolute path) must be inside LOCAL_MODEL_DIRS: allow its parent."""
    local = Path(base_model)
    return {"LOCAL_MODEL_DIRS": str(local.resolve().parent)} if local.is_absolute() else {}


def train_benchmark_model(state_dir: Path, base_model: str) -> LiveServer:
    """Train the benchmark model through the API of a server of its own; returns it, stopped."""
    server = LiveServer(state_dir, env=base_model_env(base_model)).start()
    try:
        with server.client() as client:
            job = client.post("/v1/train", json={
                "model_name": MODEL, "base_model": base_model,
                "examples": read_examples("banking77_train_4labels.csv"), "num_iterations": 1}).json()
            assert wait_for_job(client, job["job_id"], {"completed", "failed"})["status"] == "completed"
    finally:
        server.close()
    return server


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def combine(ours: list[dict], naive: list[dict], reference: dict) -> list[dict]:
    rows = []
    naive_by_key = {(p["path"], p["concurrency"], p["texts_per_request"]): p for p in naive}
    for point in ours:
        endpoint = "predict" if point["path"] == ROUTES["predict"] else "embeddings"
        group = str(point["concurrency"] * point["texts_per_request"])
        limit = reference[endpoint]["limits"][group]["texts_per_s"]
        naive_point = naive_by_key[(point["path"], point["concurrency"], point["texts_per_request"])]
        rows.append({
            **point,
            "in_process_limit_texts_per_s": limit,
            "naive_texts_per_s": naive_point["texts_per_s"],
            "naive_p50_ms": naive_point["p50_ms"],
            "ratio_to_in_process_limit": ratio(point["texts_per_s"], limit),
            "ratio_to_naive": ratio(point["texts_per_s"], naive_point["texts_per_s"]),
            "p50_minus_in_process_single_ms": round(point["p50_ms"] - reference[endpoint]["single_text_p50_ms"], 2)
            if point["texts_per_request"] == 1 else None,
        })
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"# Serving benchmark — {result['started_at']}",
        "",
        f"Machine: {result['machine']}; device: {result['reference']['device_name']} "
        f"({result['reference']['dtype']}); {result['duration_s']} s per point after 2 s of warm-up; "
        f"load generator: wrk; model: SetFit on {result.get('base_model', BASE_MODEL)} (4 banking77 labels).",
        f"In-process single-text p50: predict {result['reference']['predict']['single_text_p50_ms']} ms, "
        f"embeddings {result['reference']['embeddings']['single_text_p50_ms']} ms.",
        "",
        "| route | c | texts/req | req/s | texts/s | p50 ms | p99 ms | errors | 503 | in-process limit | "
        "× limit | naive texts/s | × naive | p50 − in-process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["points"]:
        lines.append(
            f"| {row['path']} | {row['concurrency']} | {row['texts_per_request']} | {row['requests_per_s']} | "
            f"{row['texts_per_s']} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} | {row['overloaded_503']} | "
            f"{row['in_process_limit_texts_per_s']} | {row['ratio_to_in_process_limit']} | "
            f"{row['naive_texts_per_s']} | {row['ratio_to_naive']} | {row['p50_minus_in_process_single_ms']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per point")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--texts", default="1,16", help="texts per request")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--base-model", default=BASE_MODEL,
                        help="base model of the benchmark classifier (a local directory: e.g. a machine "
                             "without network, see bench/gpu.sh)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    sizes = [int(s) for s in args.texts.split(",")]
    started_at = datetime.now(UTC).replace(microsecond=0)

    state = Path(tempfile.mkdtemp(prefix="fewshot-bench-"))
    server = train_benchmark_model(state / "service", args.base_model)

    print("in-process references (no server running)", flush=True)
    groups = sorted({min(c * s, 256) for c in concurrencies for s in sizes})
    reference_file = state / "reference.json"
    run_module("bench.reference", MODEL, str(TEXTS_FILE), ",".join(map(str, groups)), str(reference_file),
               env=server.env)
    reference = json.loads(reference_file.read_text())

    print("this service", flush=True)
    server.start()
    try:
        ours = load_points(server, concurrencies, sizes, args.duration)
    finally:
        server.close()

    print("naive server", flush=True)
    naive_server = LiveServer(state / "naive", target="bench.naive_service:Naive")
    naive_server.model_path = server.model_path  # same store, same model
    naive_server.start()
    try:
        naive = load_points(naive_server, concurrencies, sizes, args.duration)
    finally:
        naive_server.close()

    for endpoint in ("predict", "embeddings"):  # groups above 256 texts use the 256-text limit
        limits = reference[endpoint]["limits"]
        for c in concurrencies:
            for s in sizes:
                limits.setdefault(str(c * s), limits[str(min(c * s, 256))])
    result = {
        "started_at": started_at.isoformat(),
        "machine": server_machine(),
        "base_model": args.base_model,
        "duration_s": args.duration,
        "reference": reference,
        "points": combine(ours, naive, reference),
    }
    stem = write_report(args.out, "serving", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
