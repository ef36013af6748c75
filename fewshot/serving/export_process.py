"""A version's exports made, checked and timed in a process of their own, which the inference worker
starts and waits for; the worker then only opens what it left in the backend cache (the export and its
saved numpy path: fewshot/serving/model_loading.py, no SetFit load).

Why apart: making an export holds the torch body, its traced ONNX graph, the quantizers' and OpenVINO's
working copies and every candidate's runtime at once, and glibc keeps most of that memory in the worker
after it is freed. gte-modernbert-base's stand-in (22 layers, bench/export_cost.py, 2 cores): AUTO's
exports and timing in the worker's own thread took it from 1.0 GB (serving the version with torch) to a
12.1 GB peak, and it kept 4.4 GB after; in a process of its own (3.1 GB at its peak, NNCF's int8), the
worker stayed at 1.0 GB and the memory went back to the OS when the process ended. The worker keeps
serving the version with torch meanwhile, as before.

    python -m fewshot.serving.export_process REQUEST_FILE     (started by `measure_apart` / `export_apart`)

The request (JSON): the stored version, the inference runtime, whether to time AUTO's candidates or make
the runtime's one export, the file to write the result to, and the worker's process id (the process ends
when the worker does). This module imports no torch itself: the process does, in `prepare_here`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fewshot import store
from fewshot.backend_cache import AutoChoice, ServingBackend
from fewshot.serving import auto_backend, backends
from fewshot.serving.backends import BackendChoice
from fewshot.serving.runtime import InferenceRuntime
from fewshot.serving.step_times import StepTimes

logger = logging.getLogger("fewshot.inference")

TIMEOUT_SECONDS = 3600
"""Beyond this the process is stopped and the version keeps being served with torch (said in its view).
gte-modernbert-base's stand-in, AUTO: 92 s on 2 cores (bench/export_cost.py; ~10 min before this process)."""


class ExportProcessFailed(Exception):
    """The export process ended without a result; the message says how."""


class ExportProcessStopped(ExportProcessFailed):
    """The export process was ended by a signal: the server is stopping (`docker stop` signals the whole
    container), or the system stopped it (e.g. out of memory). Not a bug to log with a traceback."""


def measure_apart(stored: store.StoredModel, runtime: InferenceRuntime) -> tuple[AutoChoice, list[dict[str, Any]]]:
    """AUTO's candidates exported, checked and timed in a process of their own: the decision, and the steps."""
    result = run_apart(stored, runtime, auto=True)
    return AutoChoice.model_validate(result["decision"]), result["steps"]


def export_apart(stored: store.StoredModel, runtime: InferenceRuntime) -> tuple[ServingBackend, list[dict[str, Any]]]:
    """The runtime's export of the version made and its numpy path checked and saved, in a process of its own:
    what would serve it (torch, with the reason, where the export failed), and the steps."""
    result = run_apart(stored, runtime, auto=False)
    return ServingBackend.model_validate(result["serving"]), result["steps"]


def run_apart(stored: store.StoredModel, runtime: InferenceRuntime, auto: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fewshot-export-process-") as scratch:
        request_file, result_file = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_file.write_text(json.dumps({
            "name": stored.name, "version": stored.version, "path": str(stored.path), "metadata": stored.metadata,
            "runtime": dataclasses.asdict(runtime), "auto": auto, "result": str(result_file), "parent": os.getpid()},
            default=str), encoding="utf8")
        package_root = str(Path(__file__).resolve().parents[2])
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        started = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "fewshot.serving.export_process", str(request_file)],
                                  env=environment, stdin=subprocess.DEVNULL, timeout=TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired as error:
            raise ExportProcessFailed(f"the export process ran past {TIMEOUT_SECONDS} s and was stopped") from error
        if done.returncode < 0:
            raise ExportProcessStopped(f"the export process was stopped by signal {-done.returncode}")
        if done.returncode != 0 or not result_file.is_file():
            raise ExportProcessFailed(f"the export process exited with {done.returncode} (its log says why)")
        result = json.loads(result_file.read_text(encoding="utf8"))
    logger.info("%s: %s in a process of its own in %.1fs: %s", stored.tag, "AUTO's candidates timed" if auto
                else f"its {runtime.backend.variant} export made", time.perf_counter() - started,
                StepTimes.summarize(result["steps"]))
    return result


def prepare_here(stored: store.StoredModel, runtime: InferenceRuntime, auto: bool) -> dict[str, Any]:
    """In the export process: the version loaded through SetFit once, its body traced to ONNX once, and every
    export it needs made from that trace (fewshot/serving/exporting.py), its numpy path checked and saved."""
    import torch

    from fewshot.serving import exporting, torch_loading
    from fewshot.serving.model_loading import LoadedModel

    steps = StepTimes()
    torch.set_num_threads(runtime.threads)  # torch runs here alone: the trace, and torch's own timing
    with steps.step("SetFit load"):
        model = torch_loading.load_setfit(stored, runtime)
    wanted = [choice for choice in (auto_backend.CANDIDATES if auto else (runtime.backend,))
              if choice.backend != backends.TORCH]
    with exporting.TracedOnnx(model.model_body) as traced:
        if not all(backends.is_exported(stored, choice) for choice in wanted):
            # before any export replaces the torch body (exporting.install): every variant is made from it
            with steps.step("ONNX trace"), contextlib.suppress(exporting.ExportFailed):
                traced.path()  # a failure is kept: each variant fails with its reason, and torch serves it

        if not auto:
            serving, _ = torch_loading.serve_with(model, stored, runtime, runtime.backend, traced=traced, steps=steps)
            return {"serving": serving.model_dump(mode="json"), "steps": steps.records}

        def candidate(choice: BackendChoice) -> tuple[ServingBackend, auto_backend.Predict]:
            """Torch first (auto_backend.CANDIDATES), before any export replaces the torch body; then each
            export plugged into the same SetFit model, no reload."""
            steps.candidate = choice.variant
            _release_previous(model, exporting)
            torch_loading.use_threads(runtime.serving(choice))  # torch's threads as a worker serving it has them
            serving, pipeline = torch_loading.serve_with(model, stored, runtime, choice, traced=traced, steps=steps,
                                                         check=False)
            timed_through[choice.variant] = serving.pipeline
            return serving, LoadedModel.of(stored, runtime, model, serving, pipeline,
                                           pipeline.head if pipeline is not None else model.model_head).predict_proba

        def confirm(choice: BackendChoice) -> tuple[ServingBackend, auto_backend.Predict] | None:
            """The chosen candidate's numpy path checked (and saved) as at any load: only the chosen one's, as
            the check was most of AUTO's time (22-layer stand-in: 46-180 s per candidate, 70% of its 568 s;
            bench/export_cost.py)."""
            if choice.backend == backends.TORCH or timed_through.get(choice.variant) != "numpy":
                return None  # as it was timed: torch, or sentence-transformers already
            steps.candidate = choice.variant
            _release_previous(model, exporting)
            torch_loading.use_threads(runtime.serving(choice))
            serving, pipeline = torch_loading.serve_with(model, stored, runtime, choice, traced=traced, steps=steps)
            if pipeline is not None:
                return None
            return serving, LoadedModel.of(stored, runtime, model, serving, None, model.model_head).predict_proba

        timed_through: dict[str, str] = {}
        decision = auto_backend.measure(stored, candidate, runtime.threads, steps=steps, confirm=confirm)
        steps.candidate = None
    return {"decision": decision.model_dump(mode="json"), "steps": steps.records}


def _release_previous(model: Any, exporting: Any) -> None:
    """The previous candidate's runtime closed and its memory given back before the next export is made:
    ONNX Runtime's and OpenVINO's copies of a 22-layer body are ~0.6 GB each (float32), and glibc kept
    what Python freed (bench/export_cost.py: the process's peak during OpenVINO int8, measured with the
    previous one still open, was 4.6 GB; 3.1 GB with it closed)."""
    import ctypes
    import gc

    inner = model.model_body[0].model
    if isinstance(inner, exporting.ExportedTransformerModel):
        inner.exported = None  # measure() dropped its predict; this was the last reference
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _end_with(parent: int) -> None:
    """Exit when the worker that started this process is gone (killed: nothing would read the result)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(3)

    threading.Thread(target=watch, name="export-process-parent", daemon=True).start()


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf8"))
    _end_with(request["parent"])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s export process: %(message)s")
    logging.getLogger("fewshot").setLevel(logging.INFO)  # ours, as in the worker; the libraries' warnings only
    fields = request["runtime"]
    runtime = InferenceRuntime(**{**fields, "backend": BackendChoice(**fields["backend"])})
    stored = store.StoredModel(request["name"], request["version"], Path(request["path"]), request["metadata"])
    result = prepare_here(stored, runtime, request["auto"])
    staged = Path(request["result"] + ".part")
    staged.write_text(json.dumps(result), encoding="utf8")
    staged.rename(request["result"])


if __name__ == "__main__":
    main()
