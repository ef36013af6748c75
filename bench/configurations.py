"""This service alone under several runtime configurations: same model, same load, no references.

    python -m bench.configurations --config gateway=1,batch=64 --config gateway=4,batch=256 \
        [--duration 5] [--concurrency 64] [--texts 1,16] [--base-model DIR] [--out DIR]

A configuration sets the gateway's (`fewshot`) BentoML workers (through BENTOML_CONFIG_OPTIONS)
and MAX_BATCH_SIZE. Answers "what should I set on this machine?" (e.g. a GPU host, where the
forward pass no longer bounds throughput and the gateway's CPU per request does). Compare rows of
one run only. Writes bench/results/configurations-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.report_files import server_machine, write_report
from bench.serving import RESULTS, base_model_env, load_points, train_benchmark_model
from harness.fixtures import BASE_MODEL
from harness.live_server import LiveServer


def parse_config(text: str) -> dict[str, int]:
    values = dict(part.split("=", 1) for part in text.split(","))
    return {"gateway": int(values.get("gateway", 1)), "batch": int(values.get("batch", 64))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", type=parse_config, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", default="64")
    parser.add_argument("--texts", default="1,16")
    parser.add_argument("--base-model", default=BASE_MODEL)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    state = Path(tempfile.mkdtemp(prefix="fewshot-configs-"))
    trainer = train_benchmark_model(state / "train", args.base_model)

    rows = []
    for config in args.config:
        name = f"gateway={config['gateway']},batch={config['batch']}"
        print(name, flush=True)
        server = LiveServer(state / name.replace(",", "_").replace("=", "-"), env={
            **base_model_env(args.base_model), "EMBEDDED_TRAINER": "false", "MAX_BATCH_SIZE": str(config["batch"]),
            "BENTOML_CONFIG_OPTIONS": f"services.fewshot.workers={config['gateway']}"})
        server.model_path = trainer.model_path  # the model trained above
        server.start()
        try:
            points = load_points(server, [int(c) for c in args.concurrency.split(",")],
                                 [int(t) for t in args.texts.split(",")], args.duration)
        finally:
            server.close()
        rows += [{"configuration": name, **point} for point in points]

    result = {"started_at": started_at.isoformat(), "base_model": args.base_model, "duration_s": args.duration,
              "machine": server_machine(), "points": rows}
    lines = [f"# Configurations — {result['started_at']}", "",
             f"Machine: {result['machine']}; model: SetFit on {args.base_model}; {args.duration} s per point.", "",
             "| configuration | route | c | texts/req | req/s | texts/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['configuration']} | {r['path']} | {r['concurrency']} | {r['texts_per_request']} | "
              f"{r['requests_per_s']} | {r['texts_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
              for r in rows]
    stem = write_report(args.out, "configurations", started_at, result, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
