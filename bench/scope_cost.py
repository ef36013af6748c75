"""What abstaining by the scope score costs a prediction: with `abstain: true` against without, same run.

    make bench-scope-cost   (or: .venv/bin/python -m bench.scope_cost [--duration 10])

Starts the service as bench/serving.py does (`bentoml serve`, temporary MODEL_PATH, INFERENCE_BACKEND=
TORCH), trains a `head` model on all-MiniLM-L6-v2 (banking77, 4 labels, 32 examples) and a second
one with 4,000 training examples (random banking77 training texts of 8 labels: the score reads every
training embedding, so this is the cost at the size the issue names, "a few thousand"). Then, for each:
- in-process (a subprocess with the server's MODEL_PATH): the loaded version's plain predict
  (`predict_proba` and the decision rule) against the abstaining one (`predict_with_embeddings`, the
  scope score, the rule), on batches of 1, 16 and 64 random banking77 test texts;
- through HTTP (wrk, bench/loadgen.py): /v1/predict with and without `abstain: true`, 1 and 16 texts
  per request, 1 and 16 clients.
Writes bench/results/scope-cost-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.loadgen import WARMUP_SECONDS, run_wrk, summarise, write_bodies
from bench.report_files import server_machine, write_report
from bench.retraining import read_csv
from bench.serving import TEXTS_FILE, run_module
from harness.fixtures import BASE_MODEL, read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
SMALL, LARGE, LARGE_EXAMPLES = "scope-small", "scope-large", 4000
BATCHES = (1, 16, 64)


def train(server: LiveServer, name: str, examples: list[dict]) -> None:
    with server.client() as client:
        response = client.post("/v1/train", json={"model_name": name, "base_model": BASE_MODEL, "strategy": "head",
                                                  "examples": examples})
        response.raise_for_status()
        job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"}, timeout=1800)
        assert job["status"] == "completed", job


def large_set(data: Path) -> list[dict]:
    train = read_csv(data / "banking77" / "train.csv")
    rng = random.Random(0)
    intents = sorted(rng.sample(sorted(train), 8))
    texts = [(text, intent) for intent in intents for text in train[intent]]
    while len(texts) < LARGE_EXAMPLES:  # 8 intents have ~1,000 texts; more come from the others, as one label
        texts += [(text, "other") for intent in sorted(set(train) - set(intents)) for text in train[intent]]
    return [{"text": text, "label": label} for text, label in rng.sample(texts, LARGE_EXAMPLES)]


def in_process(model_name: str, texts_file: str) -> dict:
    """Run inside the subprocess: per batch size, the median ms of a plain and an abstaining predict."""
    from fewshot import store
    from fewshot.serving.items import TextItem
    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel, single_threaded_numpy
    from fewshot.settings import apply_process_environment, get_settings

    apply_process_environment(get_settings())
    single_threaded_numpy()  # as the inference worker does
    loaded = LoadedModel.load(store.latest(model_name), InferenceRuntime.resolve(backend="TORCH"))
    with open(texts_file) as handle:
        texts = json.load(handle)
    rng = random.Random(0)
    result = {"training_embeddings": len(loaded.decisions.scope.in_scope) if loaded.decisions.scope else 0}

    def plain(batch: list[str]) -> None:
        loaded.decisions.answer(loaded.predict_proba(batch), [TextItem(model_name=model_name, text=t) for t in batch])

    def abstaining(batch: list[str]) -> None:
        items = [TextItem(model_name=model_name, text=t, abstain=True) for t in batch]
        probabilities, embeddings = loaded.predict_with_embeddings(batch)
        loaded.decisions.answer(probabilities, items, embeddings)

    for size in BATCHES:
        timings: dict[str, list[float]] = {"plain": [], "abstain": []}
        batches = [rng.sample(texts, size) for _ in range(max(8, 240 // size))]
        plain(batches[0])
        abstaining(batches[0])
        for batch in batches:  # alternated: both see the same machine state
            for name, run in (("plain", plain), ("abstain", abstaining)):
                started = time.perf_counter()
                run(batch)
                timings[name].append((time.perf_counter() - started) * 1000)
        medians = {name: statistics.median(values) for name, values in timings.items()}
        result[str(size)] = {"plain_ms": round(medians["plain"], 3), "abstain_ms": round(medians["abstain"], 3),
                             "ratio": round(medians["abstain"] / medians["plain"], 3)}
    return result


def http_points(server: LiveServer, model: str, duration: float) -> list[dict]:
    with open(TEXTS_FILE) as handle:
        texts = json.load(handle)
    points = []
    with tempfile.TemporaryDirectory() as scratch:
        for per_request in (1, 16):
            for concurrency in (1, 16):
                for abstain in (False, True):
                    bodies = Path(scratch) / "bodies.jsonl"
                    write_bodies(bodies, model, texts, per_request, body=lambda name, drawn, abstain=abstain: {
                        "model_name": name, "texts": drawn, **({"abstain": True} if abstain else {})})
                    run_wrk(server.url + "/v1/predict", concurrency, WARMUP_SECONDS, bodies)
                    point = summarise(run_wrk(server.url + "/v1/predict", concurrency, round(duration), bodies),
                                      "/v1/predict", concurrency, per_request)
                    point.update(model=model, abstain=abstain)
                    print(point, flush=True)
                    points.append(point)
    return points


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--in-process":
        print(json.dumps(in_process(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per HTTP point")
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    models: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fewshot-bench-scope-") as state:
        server = LiveServer(Path(state)).start()
        try:
            train(server, SMALL, read_examples("banking77_train_4labels.csv"))
            train(server, LARGE, large_set(args.data))
            for model in (SMALL, LARGE):
                measured = json.loads(run_module("bench.scope_cost", "--in-process", model, str(TEXTS_FILE),
                                                 env=server.env).strip().splitlines()[-1])
                print(model, measured, flush=True)
                models[model] = {"in_process": measured, "http": http_points(server, model, args.duration)}
        finally:
            server.close()
    results = {"benchmark": "scope-cost", "started_at": started_at.isoformat(), "machine": server_machine(),
               "base_model": BASE_MODEL, "duration_s": args.duration, "models": models}
    write_report(args.out, "scope-cost", started_at, results, markdown(results))


def markdown(results: dict) -> str:
    lines = [f"# Abstaining by the scope score: its cost ({results['started_at']})", "",
             f"{results['base_model']}, `head` versions served by torch (INFERENCE_BACKEND=TORCH); "
             f"{results['machine']}.", "", "## In-process (median ms per batch)", "",
             "| model | training embeddings | batch | plain | abstain | × |", "|---|---|---|---|---|---|"]
    for model, measured in results["models"].items():
        for size in BATCHES:
            row = measured["in_process"][str(size)]
            lines.append(f"| {model} | {measured['in_process']['training_embeddings']} | {size} | {row['plain_ms']} | "
                         f"{row['abstain_ms']} | {row['ratio']} |")
    lines += ["", f"## Through HTTP (/v1/predict, wrk, {results['duration_s']} s per point)", "",
              "| model | texts/req | c | texts/s plain | texts/s abstain | × | p50 ms plain | p50 ms abstain |",
              "|---|---|---|---|---|---|---|---|"]
    for model, measured in results["models"].items():
        points = {(p["texts_per_request"], p["concurrency"], p["abstain"]): p for p in measured["http"]}
        for per_request, concurrency in sorted({key[:2] for key in points}):
            plain, abstain = points[(per_request, concurrency, False)], points[(per_request, concurrency, True)]
            ratio = round(abstain["texts_per_s"] / plain["texts_per_s"], 3) if plain["texts_per_s"] else None
            lines.append(f"| {model} | {per_request} | {concurrency} | {plain['texts_per_s']} | "
                         f"{abstain['texts_per_s']} | {ratio} | {plain['p50_ms']} | {abstain['p50_ms']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
