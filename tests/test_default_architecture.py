"""The default base model's architecture through our own code (issue 42): Alibaba-NLP/gte-modernbert-base is a
ModernBERT (global attention every third layer, a 128-token local window in the others, 8192 positions, CLS
pooling), and the Hub is out of reach here, so a random-weight stand-in of its published shape stands for it
(bench/modernbert_standin.py; 2 layers: one global, one local). In-process, no server: it loads with
sentence-transformers as the real one does; our trainer fits a head on it and fine-tunes it; our exporter
makes every backend of it (ONNX Runtime and OpenVINO, float32 and int8); and the numpy path answers as
sentence-transformers does on each export, by the load-time rule (fewshot/serving/numpy_pipeline.py), and as
torch does, by the backends' rule (test_e2e_backends.py), a short and a long text in one padded pass included.
The same checks on the bench's MiniLM-shaped bodies: test_numpy_pipeline.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.modernbert_standin import MAX_TOKENS, PUBLISHED, SPECIAL_TOKENS
from fewshot.base_models import BaseModelSource
from fewshot.serving.numpy_pipeline import EMBEDDING_COSINE, PROBE_TEXTS, mismatch
from fewshot.settings import get_settings
from fewshot.store import StoredModel
from tests.test_e2e_backends import MIN_COSINE
from tests.test_numpy_pipeline import OPEN_SAVED_PIPELINES, TEXTS_FILE, assert_same_answers, load, saved_pipeline

EXPORTS = [("head", "onnx-none"), ("head", "onnx-int8"), ("setfit", "openvino-none"), ("setfit", "openvino-int8")]
"""Every backend variant, of a version with the base body (head) or a fine-tuned one (setfit): the same
architecture, each export made and checked once."""
EXAMPLES_PER_LABEL = 2
"""Few examples: they are the version's calibration texts, and so the load-time check's own probe texts too,
all in one pass with a 600-token probe (ONNX Runtime float32, 3 layers: 5.5 s a pass for 21 texts, 2.7 s for 13)."""
SHORT = "Where is my new card?"
"""8 tokens: in one pass with `long_text`, padded far past the local window (64 tokens either side)."""


@pytest.fixture(scope="module")
def base(modernbert_standin: Callable[[Path], str], tmp_path_factory: pytest.TempPathFactory) -> str:
    return modernbert_standin(tmp_path_factory.mktemp("base-models"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return json.loads(TEXTS_FILE.read_text())[:24]


@pytest.fixture(scope="module")
def long_text() -> str:
    """Banking texts run together: a few hundred tokens, past the local window of every position."""
    return " ".join(json.loads(TEXTS_FILE.read_text())[:40])


def test_it_loads_as_the_published_model_does(base: str) -> None:
    from sentence_transformers import SentenceTransformer

    body = SentenceTransformer(base)
    assert [type(module).__name__ for module in body] == ["Transformer", "Pooling"]  # no Normalize
    assert body[1].pooling_mode in ("cls", ("cls",))
    assert body.get_sentence_embedding_dimension() == 768
    assert body.max_seq_length == MAX_TOKENS
    config = body[0].model.config
    assert config.model_type == "modernbert"
    assert config.layer_types == ["full_attention", "sliding_attention"]  # the fixture's 2 layers: both kinds
    assert config.sliding_window == 64
    published = {key: value for key, value in PUBLISHED.items() if not key.endswith(("rope_theta", "every_n_layers"))}
    assert {key: getattr(config, key) for key in published} == published
    assert {kind: parameters["rope_theta"] for kind, parameters in config.rope_parameters.items()} == {
        "full_attention": 160000.0, "sliding_attention": 10000.0}
    encoded = body.tokenizer(["a", SHORT], padding=True)
    assert set(encoded) == {"input_ids", "attention_mask"}  # ModernBERT takes no token type ids
    assert encoded["input_ids"][0][:3] == [SPECIAL_TOKENS["[CLS]"], body.tokenizer.convert_tokens_to_ids("a"),
                                           SPECIAL_TOKENS["[SEP]"]]
    assert encoded["input_ids"][0][-1] == SPECIAL_TOKENS["[PAD]"] == body.tokenizer.pad_token_id
    assert body.tokenizer.padding_side == "right"
    assert body.encode([SHORT, ""]).shape == (2, 768)


@pytest.fixture(scope="module")
def trained(base: str, module_model_path: Path, train_examples: list[dict[str, str]]) -> Callable[[str], StoredModel]:
    """The stand-in trained by our trainer with `strategy` (head or setfit: one iteration), saved as the trainer
    saves a version."""
    from trainers.training import TrainingOptions, fine_tune, split_examples, train_head

    options = TrainingOptions(base_model=BaseModelSource(requested=base, location=base, is_local=True),
                              num_iterations=1)
    per_label: dict[str, list[str]] = {}
    for example in train_examples:
        per_label.setdefault(example["label"], []).append(example["text"])
    examples = [(text, label) for label, label_texts in per_label.items() for text in label_texts[:EXAMPLES_PER_LABEL]]
    made: dict[str, StoredModel] = {}

    def version(strategy: str) -> StoredModel:
        if strategy not in made:
            split = split_examples(examples, None, options.seed)
            classifier = (train_head if strategy == "head" else fine_tune)(split, options)
            assert classifier.strategy == strategy
            predicted = classifier.model.predict([text for text, _ in split.evaluation or split.train])
            assert set(predicted) <= set(split.labels)
            directory = module_model_path / "versions" / strategy
            classifier.save(directory)
            made[strategy] = StoredModel(strategy, "v1", directory, {"labels": classifier.labels})
        return made[strategy]

    return version


@pytest.mark.parametrize("strategy", ["head", "setfit"])
def test_our_trainer_trains_it_both_ways(trained: Callable[[str], StoredModel], strategy: str) -> None:
    stored = trained(strategy)
    loaded = load(stored, "torch-none", "AUTO")
    probabilities = loaded.predict_proba([SHORT, "", *PROBE_TEXTS])
    assert probabilities.shape == (2 + len(PROBE_TEXTS), len(stored.labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(("strategy", "variant"), EXPORTS)
def test_every_export_answers_as_sentence_transformers_and_as_torch(
        trained: Callable[[str], StoredModel], texts: list[str], long_text: str, measured: Callable[[str], None],
        strategy: str, variant: str) -> None:
    stored = trained(strategy)
    torch_served = load(stored, "torch-none", "AUTO")  # what the export is measured against
    ours = load(stored, variant, "AUTO")  # exports, then checks the numpy path on the probes and saves it
    assert (ours.backend.backend, ours.backend.quantize, ours.backend.error) == (*variant.split("-"), None)
    assert (ours.backend.pipeline, ours.backend.pipeline_error) == ("numpy", None)
    assert (saved_pipeline(stored, variant) / "pipeline.json").is_file()
    lengths = ours.pipeline.token_lengths([SHORT, long_text])
    assert lengths[0] <= 12 and lengths[1] > 300, lengths
    mixed = [SHORT, long_text]
    # As sentence-transformers on the same export, by the load-time rule: each text alone, then one padded pass...
    assert mismatch(ours.pipeline, lambda group: ours.model.model_body.encode(group, batch_size=len(group)),
                    lambda group: ours.model.predict_proba(group, batch_size=len(group), as_numpy=True), mixed) is None
    # ... and on many texts in the passes serving plans (its sentence-transformers path: the same load, no pipeline)
    assert_same_answers(ours, dataclasses.replace(ours, pipeline=None), [*texts, *PROBE_TEXTS, *mixed])
    # As torch does, by the backends' rule: the same function in float32, close to it in int8.
    quantize = variant.split("-")[1]
    reference = torch_served.model.model_body
    cosines = [(unit(ours_rows) * unit(torch_rows)).sum(axis=1) for ours_rows, torch_rows in [
        (ours.embed([*texts, *PROBE_TEXTS]).vectors, torch_served.embed([*texts, *PROBE_TEXTS]).vectors),  # as served
        (ours.pipeline.embed(mixed, one_pass=True), reference.encode(mixed, batch_size=2))]]  # one padded pass
    measured(f"gte-modernbert stand-in, {strategy} version, {variant}: cosine to torch min "
             f"{cosines[0].min():.6f} (served passes), {cosines[1].min():.6f} (short and long text in one pass)")
    assert min(cosine.min() for cosine in cosines) >= MIN_COSINE[quantize], cosines
    # no position of that pass is NaN, padding included (rows of a local layer whose window holds only padding
    # see no key at all): a NaN anywhere stays in its row (residuals) and reaches every text through the next
    # global layer of a deeper model (gte-modernbert-base: 22 layers, global every third)
    feeds = ours.model.model_body.tokenizer(mixed, padding=True, return_tensors="np")
    assert np.isfinite(ours.model.model_body[0].model.exported.run(
        {name: feeds[name].astype(np.int64) for name in ("input_ids", "attention_mask")})).all()
    if quantize == "none":
        np.testing.assert_allclose(ours.predict_proba(texts), torch_served.predict_proba(texts), atol=1e-3, rtol=0)
        # padding a short text past the local window in a long text's pass leaves its embedding as it was alone
        alone, together = ours.pipeline.embed([SHORT], one_pass=True), ours.pipeline.embed(mixed, one_pass=True)[:1]
        assert (unit(alone) * unit(together)).sum() >= EMBEDDING_COSINE
    # A restarted worker opens the saved numpy path with no SetFit load, and it answers the same.
    again = load(stored, variant, "AUTO")
    assert again.model is None and again.backend.pipeline == "numpy"
    np.testing.assert_allclose(again.pipeline.embed(mixed, one_pass=True), ours.pipeline.embed(mixed, one_pass=True),
                               atol=1e-5, rtol=0)


def test_every_export_serves_after_a_restart_with_no_torch(trained: Callable[[str], StoredModel], texts: list[str],
                                                           long_text: str) -> None:
    """What a restarted inference worker does with the default model's exports: each variant loads from the
    export and the numpy path checked and saved at its first load, in an interpreter that never imports torch,
    SetFit, sentence-transformers or transformers, and answers as that checked load did."""
    sample = [*texts[:8], SHORT, long_text, *PROBE_TEXTS]
    checked = {}
    for strategy, variant in EXPORTS:
        stored = trained(strategy)
        checked[(str(stored.path), variant)] = load(stored, variant, "AUTO")  # exported and checked (or opened) here
        assert (saved_pipeline(stored, variant) / "pipeline.json").is_file()
    assert trained("head").labels == trained("setfit").labels
    environment = {**os.environ, "MODEL_PATH": str(get_settings().model_path)}
    for restart in (EXPORTS[0::2], EXPORTS[1::2]):  # its answers are by version: one variant of each per restart
        request = {"versions": [[str(trained(strategy).path), variant] for strategy, variant in restart],
                   "labels": trained("head").labels, "texts": sample}
        done = subprocess.run([sys.executable, "-c", OPEN_SAVED_PIPELINES], input=json.dumps(request), text=True,
                              capture_output=True, check=True, env=environment, timeout=300)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["heavy_modules"] == []
        for (strategy, variant), (directory, answer) in zip(restart, result["answers"].items(), strict=True):
            assert (answer["model"], answer["pipeline"], answer["backend"]) == ("none", "numpy", variant), strategy
            reference = checked[(directory, variant)]
            expected_read = reference.embed(sample)
            expected, expected_tokens = expected_read.vectors, expected_read.tokens
            cosines = (unit(np.asarray(answer["embeddings"], dtype=np.float32)) * unit(expected)).sum(axis=1)
            assert cosines.min() >= EMBEDDING_COSINE, (strategy, variant, cosines.min())
            assert answer["tokens"] == expected_tokens
            np.testing.assert_allclose(answer["probabilities"], reference.predict_proba(sample), atol=1e-5, rtol=0,
                                       err_msg=f"{strategy} {variant}")


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
