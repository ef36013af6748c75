"""Time to a served model: from POST /v1/train (`strategy: head`) to the first 200 from /v1/predict.

    make bench-time-to-model     (or: .venv/bin/python -m bench.time_to_model [--jobs 20])

Starts the service as a user would (`bentoml serve`: embedded trainer, SQLite queue, temporary
MODEL_PATH) once per trainer polling bound, in the same run: ours (TRAINER_POLL_SECONDS' default)
and Huey's own default of 10 s, which the service used before. Before each job the service sits
idle for a while (cycling through --idle seconds), as between one user's jobs, so that an idle
trainer's polling has backed off as it would. Each job trains a new model name on 4 banking77
labels x 8 examples. Measured per job: waiting in the queue (created -> started, from the job
record), training (started -> finished, the job record) and POST -> first 200 from /v1/predict
(polled every 20 ms; a new name answers 404 until its model is registered, and its first 200
includes loading it into the inference service). Writes bench/results/time-to-model-<time>.json
and .md with p50 and p95 of each.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report_files import server_machine, write_report
from harness.fixtures import BASE_MODEL, read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
HUEY_DEFAULT_MAX_DELAY = "10"  # huey.consumer.Consumer(max_delay=10.0)
POLL_EVERY_SECONDS = 0.02


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))], 3)


def time_jobs(server: LiveServer, jobs: int, idle_seconds: list[float], examples: list[dict]) -> list[dict]:
    measured = []
    with server.client() as client:
        for number, idle in zip(range(jobs), itertools.cycle(idle_seconds), strict=False):
            time.sleep(idle)
            name = f"ttm-{number}"
            posted = time.monotonic()
            response = client.post("/v1/train", json={"model_name": name, "base_model": BASE_MODEL,
                                                      "examples": examples, "strategy": "head"})
            response.raise_for_status()
            while client.post("/v1/predict", json={"model_name": name, "texts": ["where is my card?"]}
                              ).status_code != 200:
                if time.monotonic() - posted > 120:
                    raise RuntimeError(f"{name} not served within 120 s")
                time.sleep(POLL_EVERY_SECONDS)
            served = time.monotonic() - posted
            job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
            assert job["status"] == "completed", job
            created, started, finished = (datetime.fromisoformat(job[key])
                                          for key in ("created_at", "started_at", "finished_at"))
            measured.append({"idle_before_s": idle, "served_s": round(served, 3),
                             "queued_s": round((started - created).total_seconds(), 3),
                             "training_s": round((finished - started).total_seconds(), 3)})
            print(f"  {name}: idle {idle} s, served after {served:.2f} s "
                  f"(queued {measured[-1]['queued_s']} s, trained {measured[-1]['training_s']} s)", flush=True)
    return measured


def summary(measured: list[dict]) -> dict:
    return {f"{key}_{name}": percentile([m[key] for m in measured], share)
            for key in ("served_s", "queued_s", "training_s") for name, share in (("p50", 0.5), ("p95", 0.95))} | {
        "served_s_mean": round(statistics.fmean(m["served_s"] for m in measured), 3)}


def markdown(result: dict) -> str:
    lines = [f"# Time to a served model — {result['started_at']}", "",
             f"Machine: {result['machine']}; {result['jobs']} `head` jobs per setting on {BASE_MODEL} "
             f"(4 labels x 8 examples), idle {result['idle_seconds']} s before each (cycled).", "",
             "| trainer polling bound | POST → served p50 s | p95 s | queued p50 s | p95 s | training p50 s | p95 s |",
             "|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        s = run["summary"]
        lines.append(f"| {run['setting']} | {s['served_s_p50']} | {s['served_s_p95']} | {s['queued_s_p50']} | "
                     f"{s['queued_s_p95']} | {s['training_s_p50']} | {s['training_s_p95']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs per setting")
    parser.add_argument("--idle", default="1,10,30,60", help="seconds idle before each job, cycled")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    idle_seconds = [float(s) for s in args.idle.split(",")]
    started_at = datetime.now(UTC).replace(microsecond=0)
    examples = read_examples("banking77_train_4labels.csv")
    state = Path(tempfile.mkdtemp(prefix="fewshot-ttm-"))

    runs = []
    for setting, env in (("TRAINER_POLL_SECONDS default (0.25 s)", {}),
                         ("Huey's default (10 s), before", {"TRAINER_POLL_SECONDS": HUEY_DEFAULT_MAX_DELAY})):
        print(setting, flush=True)
        server = LiveServer(state / f"run-{len(runs)}", env=env).start()
        try:
            measured = time_jobs(server, args.jobs, idle_seconds, examples)
        finally:
            server.close()
        runs.append({"setting": setting, "env": env, "jobs": measured, "summary": summary(measured)})

    result = {"started_at": started_at.isoformat(), "jobs": args.jobs, "idle_seconds": idle_seconds,
              "machine": server_machine(), "runs": runs}
    stem = write_report(args.out, "time-to-model", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
