"""What INFERENCE_BACKEND=AUTO costs the inference worker for the default base model: the export of every
candidate and the decision, per step, in wall time and peak memory (issue 42).

    make bench-export-cost     (or: .venv/bin/python -m bench.export_cost [--layers 22 --examples-per-label 8])

The default base model (Alibaba-NLP/gte-modernbert-base) is out of reach offline, so its random-weight stand-in
of the published shape stands for it (bench/modernbert_standin.py, 22 layers, 149 M parameters). A `head`
version of it is trained in-process by our trainer (trainers/training.py) on --examples-per-label banking
texts of 4 labels (the version's calibration and timing texts), in a temporary MODEL_PATH. Then, each in a
fresh interpreter, as an inference worker would:
1. serving: the version loaded with torch (INFERENCE_BACKEND=TORCH) and answering a few requests: the
   baseline a worker serving it has anyway;
2. AUTO: the version loaded through the inference worker's own ModelCache with INFERENCE_BACKEND and
   INFERENCE_QUANTIZE AUTO: torch serves it at once while the background thread exports and times every
   candidate, keeps the decision and swaps in the chosen export; timed from the first load to the swap.
Each step of (2) is recorded with its start and end (the SetFit loads, the ONNX trace, the int8
quantizations, the OpenVINO conversion, each candidate's numpy-path check and timing, the final load), and a
thread of this process samples the RSS (psutil) of the worker and, summed, of any process it started, every
--sample-seconds: each step's peak is the highest sample inside it. Writes bench/results/export-cost-<time>.*
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.modernbert_standin import PUBLISHED_LAYERS, make_modernbert_standin
from bench.report_files import in_process_machine, write_report
from fewshot.serving.step_times import StepTimes
from fewshot.store import CALIBRATION_TEXTS_FILE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "bench" / "results"
MIB = 1024 * 1024
NAME = "standin"
LABELS_USED = 4


class Timeline:
    """RSS of a process and, summed, of its descendants, sampled in a thread: (time, own MiB, children MiB)."""

    def __init__(self, pid: int, every: float) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.cpu: list[tuple[float, float]] = []
        """(time, CPU seconds of the worker and its exec'd children so far: user + system)."""
        self._cpu_of: dict[int, float] = {}
        self.children: dict[int, str] = {}
        """The processes the worker started (pid: command line), seen by any sample."""
        self._pid, self._every = pid, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                process = psutil.Process(self._pid)
                own = process.memory_info().rss / MIB
                times = process.cpu_times()
                self._cpu_of[process.pid] = times.user + times.system
                children = 0.0
                for child in process.children(recursive=True):
                    try:
                        if child.cmdline() == psutil.Process(child.ppid()).cmdline():
                            continue  # forked, not yet exec'd (a subprocess starting): its pages are its parent's
                        children += child.memory_info().rss / MIB
                        times = child.cpu_times()
                        self._cpu_of[child.pid] = times.user + times.system
                        if child.pid not in self.children:
                            self.children[child.pid] = " ".join(child.cmdline())[:200]
                    except psutil.Error:
                        continue
            except psutil.Error:
                continue
            self.samples.append((time.time(), own, children))
            self.cpu.append((time.time(), sum(self._cpu_of.values())))

    def peaks(self, start: float, end: float) -> dict[str, float]:
        inside = [sample for sample in self.samples if start <= sample[0] <= end] or [
            min(self.samples, key=lambda sample: abs(sample[0] - end))] if self.samples else []
        spent = [total for moment, total in self.cpu if start <= moment <= end]
        return {"cpu_seconds": round(spent[-1] - spent[0], 1) if len(spent) > 1 else 0.0,
                "worker_mib": round(max((own for _, own, _ in inside), default=0.0), 1),
                "children_mib": round(max((children for _, _, children in inside), default=0.0), 1),
                "total_mib": round(max((own + children for _, own, children in inside), default=0.0), 1)}


# -- in the worker interpreter -------------------------------------------------------------------------------

def wrap(owner: Any, attribute: str, steps: StepTimes, name: str | Callable[..., str]) -> None:
    """Record every call of `owner.attribute` as a step (`name` may read the call's arguments)."""
    original = getattr(owner, attribute)
    is_classmethod = isinstance(owner, type) and isinstance(owner.__dict__.get(attribute), classmethod)
    function = original.__func__ if is_classmethod else original

    @functools.wraps(function)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        with steps.step(name(*args, **kwargs) if callable(name) else name):
            return function(*args, **kwargs)

    setattr(owner, attribute, classmethod(recorded) if is_classmethod else recorded)


def instrument(steps: StepTimes) -> None:
    """Wrap the steps of AUTO's export and decision, wherever this release has them."""
    from setfit import SetFitModel

    from fewshot.serving import auto_backend, exporting, torch_loading

    wrap(SetFitModel, "from_pretrained", steps, "SetFit load")
    for attribute, name in [("export_onnx", "ONNX trace"), ("quantize_onnx", "ONNX Runtime int8 quantization"),
                            ("to_openvino", lambda source, target, body, calibration, *rest, **kw:
                             "OpenVINO conversion" if calibration is None else "OpenVINO int8 (NNCF)")]:
        if hasattr(exporting, attribute):
            wrap(exporting, attribute, steps, name)
    wrap(torch_loading, "numpy_pipeline_for", steps, "numpy-path check")
    wrap(auto_backend, "time_candidate", steps, "timing")
    measure = auto_backend.measure

    def measured(stored: Any, load: Callable, *args: Any, **kwargs: Any) -> Any:
        def candidate(choice: Any) -> Any:
            steps.candidate = choice.variant
            with steps.step("load (SetFit, export, check)"):
                return load(choice)

        with steps.step("AUTO measure (every candidate)"):
            try:
                return measure(stored, candidate, *args, **kwargs)
            finally:
                steps.candidate = None

    auto_backend.measure = measured
    try:
        from fewshot.serving import export_process
    except ImportError:  # before the exports ran in a process of their own
        return
    run_apart = export_process.run_apart

    def apart(stored: Any, runtime: Any, auto: bool) -> Any:
        with steps.step("export process (AUTO)" if auto else "export process"):
            result = run_apart(stored, runtime, auto)
        for record in result["steps"]:  # the process's own steps
            steps.add(record["step"], record["start"], record["end"], record["candidate"])
        return result

    export_process.run_apart = apart


def worker(version: Path, mode: str, texts: list[str], output: Path) -> None:
    """One inference worker's life with the version: `serving` (torch) or `auto` (until the swap)."""
    from fewshot.serving.model_cache import ModelCache
    from fewshot.serving.model_loading import InferenceRuntime
    from fewshot.store import StoredModel

    steps = StepTimes()
    stored = StoredModel(NAME, "v1", version, {"labels": json.loads((version.parent / "labels.json").read_text())})
    backend = "TORCH" if mode == "serving" else "AUTO"
    runtime = InferenceRuntime.resolve(backend=backend, quantize="NONE" if mode == "serving" else "AUTO")
    result: dict[str, Any] = {"mode": mode, "threads": runtime.threads}
    if mode == "auto":
        instrument(steps)
    from fewshot import store

    store.resolve = lambda reference: stored  # the bench's version is in no BentoML store
    with steps.step("first load (torch serves)"):
        cache = ModelCache.for_runtime(runtime, refresh_seconds=3600, max_models=3) if mode == "auto" else None
        if cache is not None:
            cache._resolve = store.resolve  # bound at its construction
            loaded = cache.get(NAME)
        else:
            from fewshot.serving.model_loading import LoadedModel

            loaded = LoadedModel.load(stored, runtime, record=False)
    started = steps.records[-1]["start"]
    with steps.step("serving requests (torch)"):
        for text in texts[:8]:
            loaded.predict_proba([text])
        loaded.predict_proba(texts)
    if cache is not None:
        while True:
            current = cache.version(NAME, "v1")
            if current is not None and not current.backend.exporting:
                break
            time.sleep(0.5)
        result["settled_seconds"] = round(time.time() - started, 1)
        result["backend"] = current.backend.model_dump(mode="json")
        with steps.step("serving requests (chosen backend)"):
            for text in texts[:8]:
                current.predict_proba([text])
            current.predict_proba(texts)
    result["steps"] = steps.records
    output.write_text(json.dumps(result))


# -- in the bench's own interpreter ---------------------------------------------------------------------------

def train_version(base: Path, model_path: Path, examples_per_label: int) -> Path:
    from fewshot.base_models import BaseModelSource
    from harness.fixtures import read_examples
    from trainers.training import TrainingOptions, split_examples, train_head

    per_label: dict[str, list[str]] = {}
    for example in read_examples("banking77_train_4labels.csv"):
        per_label.setdefault(example["label"], []).append(example["text"])
    examples = [(text, label) for label, texts in sorted(per_label.items())[:LABELS_USED]
                for text in texts[:examples_per_label]]
    options = TrainingOptions(base_model=BaseModelSource(requested=str(base), location=str(base), is_local=True))
    split = split_examples(examples, None, options.seed)
    classifier = train_head(split, options)
    directory = model_path / "versions" / NAME
    classifier.save(directory)
    (directory.parent / "labels.json").write_text(json.dumps(classifier.labels))
    return directory


def run_worker(version: Path, mode: str, texts: list[str], environment: dict[str, str], every: float,
               timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="export-cost-") as scratch:
        output = Path(scratch) / "result.json"
        request = json.dumps({"version": str(version), "mode": mode, "texts": texts, "output": str(output)})
        process = subprocess.Popen([sys.executable, "-m", "bench.export_cost", "--worker", request],
                                   cwd=PROJECT_ROOT, env=environment)
        try:
            with Timeline(process.pid, every) as timeline:
                process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"the {mode} worker exited with {process.returncode}")
        result = json.loads(output.read_text())
    for record in result["steps"]:
        record.update(timeline.peaks(record["start"], record["end"]))
    result["peak"] = timeline.peaks(0, float("inf"))
    result["children"] = sorted(set(timeline.children.values()))
    return result


def markdown(report: dict[str, Any]) -> str:
    serving = report["serving"]["peak"]["total_mib"]
    auto = report["auto"]
    lines = [f"# Export cost: AUTO on the default model's architecture ({report['setup']['layers']} layers)", "",
             f"- machine: {report['setup']['machine']}; worker threads {auto['threads']}",
             f"- version: `head`, {report['setup']['texts']} training texts (its calibration and timing texts)",
             f"- serving baseline (torch, worker RSS peak): **{serving:.0f} MiB**",
             f"- AUTO settled (first load to the chosen export swapped in): **{auto['settled_seconds']} s**; "
             f"chosen {auto['backend'].get('requested')}",
             f"- AUTO peak RSS, worker + its children: **{auto['peak']['total_mib']:.0f} MiB** "
             f"(worker {auto['peak']['worker_mib']:.0f}, children {auto['peak']['children_mib']:.0f}): "
             f"**{auto['peak']['total_mib'] - serving:+.0f} MiB** above serving",
             f"- processes the worker started: {', '.join(f'`{c}`' for c in auto['children']) or 'none'}", "",
             "| step | candidate | seconds | CPU seconds | peak worker MiB | peak children MiB | peak total MiB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for record in sorted(auto["steps"], key=lambda record: record["start"]):
        lines.append(f"| {record['step']} | {record['candidate'] or ''} | {record['seconds']} | "
                     f"{record.get('cpu_seconds', '')} | "
                     f"{record['worker_mib']:.0f} | {record['children_mib']:.0f} | {record['total_mib']:.0f} |")
    timings = (auto["backend"].get("auto") or {}).get("candidates", {})
    if timings:
        lines += ["", "| candidate | one text ms | texts/s (64-text pass) | agreement | eligible | error |",
                  "|---|---:|---:|---:|---|---|"]
        for variant, timing in timings.items():
            lines.append(f"| {variant} | {timing['one_text_ms']} | {timing['full_pass_texts_per_s']} | "
                         f"{timing['agreement']} | {timing['eligible']} | {timing['error'] or ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=PUBLISHED_LAYERS)
    parser.add_argument("--examples-per-label", type=int, default=8)
    parser.add_argument("--sample-seconds", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--label", default="", help="a word for the report (e.g. before, after)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        request = json.loads(arguments.worker)
        worker(Path(request["version"]), request["mode"], request["texts"], Path(request["output"]))
        return
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-export-cost-") as scratch:
        root = Path(scratch)
        environment = {**os.environ, "MODEL_PATH": str(root / "model-path"), "HF_HUB_OFFLINE": "1",
                       "PYTHONPATH": str(PROJECT_ROOT)}
        os.environ.update(environment)
        started = time.perf_counter()
        base = make_modernbert_standin(root / "gte-modernbert-standin", layers=arguments.layers)
        built = time.perf_counter() - started
        started = time.perf_counter()
        version = train_version(base, root / "model-path", arguments.examples_per_label)
        trained = time.perf_counter() - started
        texts = json.loads((version / CALIBRATION_TEXTS_FILE).read_text())
        print(f"stand-in built in {built:.1f}s, head version trained in {trained:.1f}s; measuring", flush=True)
        serving = run_worker(version, "serving", texts, environment, arguments.sample_seconds, arguments.timeout)
        auto = run_worker(version, "auto", texts, environment, arguments.sample_seconds, arguments.timeout)
    report = {"setup": {"layers": arguments.layers, "examples_per_label": arguments.examples_per_label,
                        "texts": len(texts), "machine": in_process_machine(), "label": arguments.label,
                        "standin_build_seconds": round(built, 1), "train_seconds": round(trained, 1)},
              "serving": serving, "auto": auto}
    stem = write_report(arguments.results, "export-cost", when, report, markdown(report))
    print(markdown(report))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
