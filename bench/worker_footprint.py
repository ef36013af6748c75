"""What the inference worker costs when no version needs torch: its memory and its start.

    make bench-worker-footprint     (or: .venv/bin/python -m bench.worker_footprint [--models 3 --restarts 3])

Starts the service as a user would (`bentoml serve`, INFERENCE_BACKEND and INFERENCE_QUANTIZE AUTO,
a temporary MODEL_PATH), trains --models versions on MiniLM (`head` jobs) and serves each once, so
that AUTO times the backends and every version is exported and its numpy path checked and saved.
Then the server restarts --restarts times with each INFERENCE_PIPELINE, in the same run:
- AUTO (the default): each version loads from its export and saved numpy path, and the inference
  worker never imports torch, SetFit, sentence-transformers or transformers;
- SENTENCE_TRANSFORMERS: each version loads through SetFit (torch imported), its body replaced
  by the same export: what every restart cost before.
Measured per restart: seconds from the start of `bentoml serve` to /readyz; seconds from ready
to every version answering one /v1/predict (the first request of each loads it); the inference
worker's RSS and USS (psutil) once they all answered; whether torch's library is mapped into it.
Writes bench/results/worker-footprint-<time>.json and .md (medians over the restarts).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.overhead import settled_backend
from bench.report_files import server_machine, write_report
from harness.fixtures import BASE_MODEL, read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
SETTINGS = (("AUTO", "saved numpy path, no torch"), ("SENTENCE_TRANSFORMERS", "through SetFit (torch)"))
MIB = 1024 * 1024


def prepare(server: LiveServer, models: int) -> list[str]:
    """Train the versions and serve each once, until its export (and AUTO's timing) is done."""
    examples = read_examples("banking77_train_4labels.csv")
    names = [f"footprint-{number}" for number in range(models)]
    with server.client() as client:
        for name in names:
            response = client.post("/v1/train", json={"model_name": name, "base_model": BASE_MODEL,
                                                      "examples": examples, "strategy": "head"})
            response.raise_for_status()
            job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
            assert job["status"] == "completed", job
            client.post("/v1/predict", json={"model_name": name, "texts": ["where is my card?"]}).raise_for_status()
            backend = settled_backend(server.url, name)
            print(f"  {name}: served with {backend['backend']}-{backend['quantize']} ({backend['pipeline']})",
                  flush=True)
    return names


def measure_restart(server: LiveServer, names: list[str], pipeline: str) -> dict:
    server.restart(INFERENCE_PIPELINE=pipeline)
    ready = server.start_seconds or 0.0
    with server.client() as client:
        loads = []
        for name in names:
            asked = time.monotonic()
            client.post("/v1/predict", json={"model_name": name, "texts": ["where is my card?"]}).raise_for_status()
            loads.append(time.monotonic() - asked)
        served_with = {name: client.get(f"/v1/models/{name}").json()["backend"]["pipeline"] for name in names}
    workers = server.workers("fewshot-inference")
    assert len(workers) == 1, workers
    worker = workers[0]
    memory = worker.memory_full_info()
    return {"ready_s": round(ready, 2), "all_answered_s": round(sum(loads), 2),
            "first_answer_s": [round(load, 3) for load in loads], "rss_mib": round(memory.rss / MIB, 1),
            "uss_mib": round(memory.uss / MIB, 1),
            "torch_mapped": "libtorch" in Path(f"/proc/{worker.pid}/maps").read_text(),
            "pipelines": sorted(set(served_with.values()))}


def median(runs: list[dict], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 2)


def markdown(result: dict) -> str:
    lines = [f"# Inference worker footprint — {result['started_at']}", "",
             f"Machine: {result['machine']}. {result['models']} MiniLM versions (AUTO chose "
             f"{result['served_with']}), {result['restarts']} restarts per setting, medians.", "",
             "| INFERENCE_PIPELINE | loads | torch in the worker | start → ready s | ready → all answered s "
             "| worker RSS MiB | worker USS MiB |", "|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        lines.append(f"| {run['setting']} | {run['loads']} | {'yes' if run['torch_mapped'] else 'no'} | "
                     f"{run['ready_s']} | {run['all_answered_s']} | {run['rss_mib']} | {run['uss_mib']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    state = Path(tempfile.mkdtemp(prefix="fewshot-footprint-"))
    server = LiveServer(state, env={"INFERENCE_BACKEND": "AUTO", "INFERENCE_QUANTIZE": "AUTO"}).start()
    try:
        names = prepare(server, args.models)
        with server.client() as client:
            backend = client.get(f"/v1/models/{names[0]}").json()["backend"]
        runs = []
        for setting, loads in SETTINGS:
            measured = [measure_restart(server, names, setting) for _ in range(args.restarts)]
            for run in measured:
                print(f"  {setting}: {run}", flush=True)
            runs.append({"setting": setting, "loads": loads, "restarts": measured,
                         **{key: median(measured, key) for key in ("ready_s", "all_answered_s", "rss_mib", "uss_mib")},
                         "torch_mapped": any(run["torch_mapped"] for run in measured),
                         "pipelines": sorted({p for run in measured for p in run["pipelines"]})})
    finally:
        server.close()
        shutil.rmtree(state, ignore_errors=True)  # its model store: removed at the end
    result = {"started_at": started_at.isoformat(), "models": args.models, "restarts": args.restarts,
              "served_with": f"{backend['backend']}-{backend['quantize']}",
              "machine": server_machine(), "runs": runs}
    stem = write_report(args.out, "worker-footprint", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
