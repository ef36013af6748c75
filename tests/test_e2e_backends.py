"""Every serving backend (INFERENCE_BACKEND, INFERENCE_QUANTIZE) through a real `bentoml serve`.

One server and one MODEL_PATH: models are trained once (torch serves them: the reference), then the
server restarts with each backend, its trainer off (nothing trains after that). A version not exported
yet answers at once (torch) while its export is made in the background, then switches. Every backend
must answer the labels torch answers on the clear test texts and embeddings close to torch's; the
export lives in MODEL_PATH/backends and is read back after a restart; a version whose export fails
(the disk fills up) is served with torch and says so; deleting a version removes its exports.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.fixtures import BASE_MODEL
from harness.live_server import LiveServer, metric, wait_for_job, wait_for_log

pytestmark = pytest.mark.e2e

VARIANTS = [("onnx", "none"), ("onnx", "int8"), ("openvino", "none"), ("openvino", "int8")]
MIN_COSINE = {"none": 0.9999, "int8": 0.97}
"""Per text, to torch's embedding (docs/cpu-backends.md): float32 exports compute the same function
(measured min 0.99998); int8 rounds weights and activations (measured min 0.986 ONNX Runtime, 0.990
OpenVINO on these texts)."""
CLEAR_MARGIN = 0.1
"""Texts whose two most probable labels torch sets this far apart are clear: every backend must agree
on them (int8 moves a 4-label head model's probabilities by ~0.01-0.03 on these texts)."""

NO_TRAINER = {"EMBEDDED_TRAINER": "false"}
"""Every restart's: the models are trained by then, and each trainer started would import torch and SetFit
beside the model loads and exports the test waits for."""


def train(client: httpx.Client, names: list[str], base_model: str, examples: list[dict[str, str]]) -> list[str]:
    """Each model trained (all queued at once); their versions."""
    jobs = []
    for name in names:
        response = client.post("/v1/train", json={"model_name": name, "base_model": base_model,
                                                  "examples": examples, "strategy": "head"})
        assert response.status_code == 202, response.text
        jobs.append(response.json()["job_id"])
    finished = [wait_for_job(client, job_id, {"completed", "failed"}) for job_id in jobs]
    assert all(job["status"] == "completed" for job in finished), finished
    return [job["model_version"] for job in finished]


def answers(client: httpx.Client, model: str, texts: list[str]) -> tuple[list[dict], np.ndarray]:
    predicted = client.post("/v1/predict", json={"model_name": model, "texts": texts, "top_k": 2})
    assert predicted.status_code == 200, predicted.text
    embedded = client.post("/v1/embeddings", json={"model_name": model, "texts": texts})
    assert embedded.status_code == 200, embedded.text
    return predicted.json()["predictions"], np.array(embedded.json()["embeddings"], dtype=np.float32)


PIPELINES = ("numpy", "sentence-transformers")


def computed(client: httpx.Client) -> dict[tuple[str, str, str], float]:
    """fewshot_inference_texts_total by (route, backend, pipeline): which backend, and which path around it,
    really answered (the loaded model that ran the texts), not what the model view says."""
    text = client.get("/metrics").text
    return {(route, backend, pipeline): metric(text, "fewshot_inference_texts_total", backend=backend, route=route,
                                               pipeline=pipeline)
            for route in ("predict", "embeddings") for backend in ("torch", "onnx", "openvino")
            for pipeline in PIPELINES}


def computed_since(client: httpx.Client,
                   before: dict[tuple[str, str, str], float]) -> dict[tuple[str, str, str], float]:
    """Texts computed since `before`, where any were."""
    return {key: count - before[key] for key, count in computed(client).items() if count != before[key]}


def settled_backend(client: httpx.Client, model: str, timeout: float = 180) -> dict:
    """The version's `backend` once no export is running for it (torch serves it while one runs)."""
    deadline = time.monotonic() + timeout
    while True:
        backend = client.get(f"/v1/models/{model}").json()["backend"]
        if backend is not None and not backend["exporting"]:
            return backend
        assert time.monotonic() < deadline, f"{model}: still exporting after {timeout}s: {backend}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(live_server_factory, train_examples, test_examples) -> dict:
    server: LiveServer = live_server_factory("backends")
    with server.client() as client:
        # "plain": the same model, never loaded before the full disk; "uncalibrated": nor before its test
        version, _, uncalibrated = train(client, ["intents", "plain", "uncalibrated"], BASE_MODEL, train_examples)
        texts = [example["text"] for example in test_examples]
        predictions, embeddings = answers(client, "intents", texts)
        scoped = abstaining(client, "intents", [*texts, FOREIGN])
        assert client.get("/v1/models/intents").json()["backend"]["backend"] == "torch"
    return {"server": server, "version": version, "texts": texts, "predictions": predictions,
            "embeddings": embeddings, "scope_scores": [p["scope_score"] for p in scoped],
            "uncalibrated": uncalibrated}


FOREIGN = "the recipe needs two cups of flour"


def abstaining(client: httpx.Client, model: str, texts: list[str]) -> list[dict]:
    """Predictions with `abstain`: the scope score reads the body's embeddings of the texts."""
    predicted = client.post("/v1/predict", json={"model_name": model, "texts": texts, "abstain": True})
    assert predicted.status_code == 200, predicted.text
    return predicted.json()["predictions"]


def export_directory(server: LiveServer, version: str, variant: str) -> Path:
    return server.model_path / "backends" / "intents" / version / variant


@pytest.mark.parametrize(("backend", "quantize"), VARIANTS, ids=[f"{b}-{q}" for b, q in VARIANTS])
def test_every_backend_answers_as_torch(served: dict, backend: str, quantize: str) -> None:
    server: LiveServer = served["server"]
    server.restart(**NO_TRAINER, INFERENCE_BACKEND=backend, INFERENCE_QUANTIZE=quantize)
    texts = served["texts"]
    with server.client() as client:
        before = computed(client)
        first, _ = answers(client, "intents", texts[:1])  # its first load answers at once with torch, and exports
        at_once = computed_since(client, before)
        served_with = settled_backend(client, f"intents:{served['version']}")
        before = computed(client)
        predictions, embeddings = answers(client, "intents", texts)
        then = computed_since(client, before)
    assert at_once == {("predict", "torch", "sentence-transformers"): 1,
                       ("embeddings", "torch", "sentence-transformers"): 1}, at_once
    # swapped in, and run by the numpy path: no sentence-transformers code per batch
    assert then == {("predict", backend, "numpy"): len(texts), ("embeddings", backend, "numpy"): len(texts)}, then
    assert first[0]["label"] == served["predictions"][0]["label"]
    assert served_with == {"requested": f"{backend}-{quantize}", "backend": backend, "quantize": quantize,
                           "error": None, "prepare_seconds": served_with["prepare_seconds"], "exporting": False,
                           "pipeline": "numpy", "pipeline_error": None, "auto": None}
    assert served_with["prepare_seconds"] > 0  # exported after this first load
    workers = server.workers("fewshot-inference")
    assert workers and all(has_torch(worker) for worker in workers), workers  # its torch phase
    clear = [i for i, p in enumerate(served["predictions"])
             if p["scores"][0]["score"] - p["scores"][1]["score"] >= CLEAR_MARGIN]
    assert len(clear) >= len(served["texts"]) // 2, "too few clear texts to compare on"
    assert [predictions[i]["label"] for i in clear] == [served["predictions"][i]["label"] for i in clear]
    assert embeddings.shape == served["embeddings"].shape
    cosines = (embeddings * served["embeddings"]).sum(axis=1)  # both are unit vectors
    assert cosines.min() >= MIN_COSINE[quantize], cosines.min()
    if quantize == "none":
        assert all(abs(ours["score"] - theirs["score"]) < 1e-3
                   for ours, theirs in zip(predictions, served["predictions"], strict=True))
    # abstention by the scope score, on the numpy path's embeddings too
    with server.client() as client:
        before = computed(client)
        scoped = abstaining(client, "intents", [*texts, FOREIGN])
        assert computed_since(client, before) == {("predict", backend, "numpy"): len(texts) + 1}
    assert scoped[-1]["abstained"] is True and scoped[-1]["reason"] == "out_of_scope"
    differences = np.abs(np.array([p["scope_score"] for p in scoped]) - served["scope_scores"])
    assert differences.max() < (1e-3 if quantize == "none" else 0.05), differences.max()
    assert any(export_directory(server, served["version"], f"{backend}-{quantize}").iterdir())


def has_torch(process) -> bool:
    """Whether torch's library is mapped into `process` (imported, by us or by anything we import)."""
    return "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()


def test_the_export_is_read_back_after_a_restart(served: dict) -> None:
    """A restart loads the export and the numpy path saved at its checked load: no torch phase,
    nothing exported again, and the inference worker never imports torch at all."""
    server: LiveServer = served["server"]
    variant = export_directory(server, served["version"], "openvino-int8")
    written = {path.name: path.stat().st_mtime_ns for path in variant.iterdir()}
    server.restart(**NO_TRAINER, INFERENCE_BACKEND="openvino", INFERENCE_QUANTIZE="int8")
    with server.client() as client:
        before = computed(client)
        predictions, _ = answers(client, "intents", served["texts"][:3])
        answered_by = computed_since(client, before)
        backend = client.get("/v1/models/intents").json()["backend"]
    # loaded with the export straight away: no torch phase, nothing exported again
    assert answered_by == {("predict", "openvino", "numpy"): 3, ("embeddings", "openvino", "numpy"): 3}, answered_by
    assert backend["backend"] == "openvino" and backend["prepare_seconds"] == 0 and not backend["exporting"]
    assert {path.name: path.stat().st_mtime_ns for path in variant.iterdir()} == written
    assert [p["label"] for p in predictions] == [p["label"] for p in served["predictions"][:3]]
    wait_for_log(server, f"loaded model intents:{served['version']} in")
    assert "its saved numpy path, no torch" in server.logs_since_start()
    workers = server.workers("fewshot-inference")
    assert workers and not any(has_torch(worker) for worker in workers)


def test_a_version_without_calibration_texts_is_served_by_openvino_without_int8(served: dict) -> None:
    """OpenVINO int8 calibrates on the version's training texts; a version that kept none (trained before
    they were kept, imported without eval_examples) gets OpenVINO's float32, `error` saying why."""
    server: LiveServer = served["server"]
    server.running_with(**NO_TRAINER, INFERENCE_BACKEND="openvino", INFERENCE_QUANTIZE="int8")  # not loaded yet
    version = served["uncalibrated"]  # trained with the others, and loaded first here
    with server.client() as client:
        kept = server.model_path / "bentoml" / "models" / "uncalibrated" / version / "fewshot_calibration_texts.json"
        kept.unlink()  # as a version trained before the trainer kept them
        answers(client, "uncalibrated", served["texts"][:1])
        backend = settled_backend(client, "uncalibrated")
        before = computed(client)
        predictions, _ = answers(client, "uncalibrated", served["texts"][:3])
        answered_by = computed_since(client, before)
    assert (backend["requested"], backend["backend"], backend["quantize"]) == ("openvino-int8", "openvino", "none")
    assert "keeps no training texts to calibrate int8 on" in backend["error"], backend
    assert answered_by == {("predict", "openvino", "numpy"): 3, ("embeddings", "openvino", "numpy"): 3}, answered_by
    assert [p["label"] for p in predictions] == [p["label"] for p in served["predictions"][:3]]
    assert list((server.model_path / "backends" / "uncalibrated" / version).glob("openvino-none"))


def test_a_version_whose_export_fails_is_served_with_torch_and_says_why(served: dict) -> None:
    server: LiveServer = served["server"]
    # A full disk: every file write of the server stops at 20 MB, and MiniLM's ONNX graph is ~90 MB.
    server.restart(max_file_bytes=20_000_000, **NO_TRAINER, INFERENCE_BACKEND="openvino", INFERENCE_QUANTIZE="none")
    with server.client() as client:
        predictions, _ = answers(client, "plain", served["texts"][:3])
        backend = settled_backend(client, "plain")
    assert [p["label"] for p in predictions] == [p["label"] for p in served["predictions"][:3]]
    assert backend["requested"] == "openvino-none" and backend["backend"] == "torch", backend
    assert backend["error"] == "ONNX export failed (OSError: [Errno 27] File too large)"
    wait_for_log(server, "with torch: its openvino-none body could not be prepared: ONNX export failed")
    assert not list((server.model_path / "backends" / "plain").glob("*/openvino-none"))
    # tried again at the next load: with room on the disk, the export is made and answers
    server.restart(max_file_bytes=None, **NO_TRAINER)
    with server.client() as client:
        answers(client, "plain", served["texts"][:1])
        backend = settled_backend(client, "plain")
        before = computed(client)
        predictions, _ = answers(client, "plain", served["texts"][:3])
        answered_by = computed_since(client, before)
    assert backend["backend"] == "openvino" and backend["error"] is None, backend
    assert answered_by == {("predict", "openvino", "numpy"): 3, ("embeddings", "openvino", "numpy"): 3}, answered_by
    assert [p["label"] for p in predictions] == [p["label"] for p in served["predictions"][:3]]


def test_auto_times_the_backends_on_this_machine_and_serves_the_fastest(served: dict) -> None:
    """INFERENCE_BACKEND and INFERENCE_QUANTIZE left at AUTO, as users run it (the suite's servers run
    TORCH): torch answers at once while every candidate is exported and timed on this CPU; then the
    fastest eligible one answers, the model view shows the timings it was chosen by, and a restart
    loads the kept choice straight away."""
    server: LiveServer = served["server"]
    server.restart(**NO_TRAINER, INFERENCE_BACKEND="AUTO", INFERENCE_QUANTIZE="AUTO")
    texts = served["texts"]
    with server.client() as client:
        before = computed(client)
        answers(client, "intents", texts[:1])
        at_once = computed_since(client, before)
        backend = settled_backend(client, f"intents:{served['version']}")
        before = computed(client)
        predictions, _ = answers(client, "intents", texts)
        answered_by = computed_since(client, before)
    assert at_once == {("predict", "torch", "sentence-transformers"): 1,
                       ("embeddings", "torch", "sentence-transformers"): 1}, at_once
    auto = backend["auto"]
    timed = {variant for variant, timing in auto["candidates"].items() if timing["one_text_ms"]}
    assert timed == {"torch-none", "onnx-none", "onnx-int8", "openvino-none", "openvino-int8"}, auto
    eligible = {variant: timing for variant, timing in auto["candidates"].items() if timing["eligible"]}
    fastest = max(eligible, key=lambda variant: (1000 / eligible[variant]["one_text_ms"]
                                                 * eligible[variant]["full_pass_texts_per_s"]))
    assert auto["chosen"] == fastest == backend["requested"] == f"{backend['backend']}-{backend['quantize']}", auto
    pipeline = "sentence-transformers" if backend["backend"] == "torch" else "numpy"
    assert answered_by == {("predict", backend["backend"], pipeline): len(texts),
                           ("embeddings", backend["backend"], pipeline): len(texts)}, answered_by
    clear = [i for i, p in enumerate(served["predictions"])
             if p["scores"][0]["score"] - p["scores"][1]["score"] >= CLEAR_MARGIN]
    assert [predictions[i]["label"] for i in clear] == [served["predictions"][i]["label"] for i in clear]
    wait_for_log(server, f"AUTO backend for intents:{served['version']} on this CPU: {fastest}")
    # kept: after a restart the choice loads at once, through sentence-transformers when asked to
    server.restart(**NO_TRAINER, INFERENCE_BACKEND="AUTO", INFERENCE_QUANTIZE="AUTO",
                   INFERENCE_PIPELINE="SENTENCE_TRANSFORMERS")
    with server.client() as client:
        before = computed(client)
        answers(client, "intents", texts[:3])
        answered_by = computed_since(client, before)
        again = client.get(f"/v1/models/intents:{served['version']}").json()["backend"]
    assert answered_by == {("predict", backend["backend"], "sentence-transformers"): 3,
                           ("embeddings", backend["backend"], "sentence-transformers"): 3}, answered_by
    assert again["auto"] == auto and again["pipeline"] == "sentence-transformers" and not again["exporting"]


def test_deleting_a_version_removes_its_exports(served: dict) -> None:
    server: LiveServer = served["server"]
    exports = server.model_path / "backends" / "intents" / served["version"]
    assert exports.is_dir()
    with server.client() as client:
        assert client.delete(f"/v1/models/intents:{served['version']}").status_code == 200
    assert not exports.exists()
