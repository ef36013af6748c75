"""Explanations through a real `bentoml serve` and its trainer (POST /v1/explain): the word that decides a
planted label carries its explanation, each weight is what /v1/predict gives without the word, the
nearest examples are the set's (with their ids), multi-label and abstaining versions are explained, and
every limit is a 400 that names it. Through the Python client; raw HTTP for the errors."""

from __future__ import annotations

import httpx
import pytest

from fewshot.client import FewshotClient, FewshotError
from fewshot.learning.explanations import Span, without
from harness.fixtures import BASE_MODEL, CLEAR_TEXTS
from harness.live_server import LiveServer

pytestmark = pytest.mark.e2e

MAX_EXPLAIN_SPANS = 12
"""Low, so that a text of a few sentences is past it."""
PLANTED = [{"text": text, "label": "crypto"} for text in (
    "Can I buy bitcoin here?", "Do you support bitcoin transfers?", "I want to sell my bitcoin",
    "How do I send bitcoin to a friend?")]
"""A label decided by one word: every example of it says bitcoin, and no other example does."""
DECIDED = "Can I get a bitcoin with my account?"


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("explain", DEFAULT_BASE_MODEL=BASE_MODEL, MAX_EXPLAIN_SPANS=str(MAX_EXPLAIN_SPANS))


def _trained(server: LiveServer, name: str, examples: list[dict], **options: object) -> str:
    with FewshotClient(server.url) as client:
        job = client.wait(client.train(name, examples, base_model=BASE_MODEL, strategy="head", **options).job_id,
                          poll_seconds=0.2, timeout=300)
        assert job.status == "completed", job
    return name


@pytest.fixture(scope="module")
def model(server: LiveServer, train_examples: list[dict]) -> str:
    return _trained(server, "intents", [*train_examples, *PLANTED])


def probability(client: FewshotClient, model: str, text: str, label: str) -> float:
    answer = client.predict(model, [text], top_k=5).predictions[0]
    return next(scored.score for scored in answer.scores if scored.label == label)


def test_the_word_that_decides_a_planted_label_carries_its_explanation(server: LiveServer, model: str) -> None:
    with FewshotClient(server.url) as client:
        explained = client.explain(model, [DECIDED], top_k=3)
        explanation = explained.explanations[0]
        assert explanation.prediction.label == "crypto" and explanation.label == "crypto"
        assert explanation.granularity == "word"
        assert [span.text for span in explanation.spans] == ["Can", "I", "get", "a", "bitcoin", "with", "my",
                                                             "account"]
        assert all(DECIDED[span.start:span.end] == span.text for span in explanation.spans)
        top = max(explanation.spans, key=lambda span: span.weight)
        assert top.text == "bitcoin", explanation.spans
        # a weight is the fall of the label's probability without the span, as /v1/predict answers both texts
        # (abs: the same model, but a batch of other lengths pads the text differently)
        assert explanation.score == pytest.approx(probability(client, model, DECIDED, "crypto"), abs=1e-4)
        without_it = without(DECIDED, [Span(top.start, top.end)])
        assert top.weight == pytest.approx(explanation.score - probability(client, model, without_it, "crypto"),
                                           abs=1e-4)
        # ranks: the heaviest first, then by the fall with it left out (the second round), as /v1/predict answers
        spans = explanation.spans
        assert sorted(span.rank for span in spans) == list(range(1, len(spans) + 1)) and top.rank == 1
        others = sorted((span for span in spans if span is not top), key=lambda span: span.rank)
        pairs = [without(DECIDED, [Span(top.start, top.end), Span(span.start, span.end)]) for span in others]
        left = [next(scored.score for scored in answer.scores if scored.label == "crypto")
                for answer in client.predict(model, pairs, top_k=5).predictions]
        assert left == pytest.approx(sorted(left), abs=1e-4)  # the label's probability rises along the ranks
        # the nearest training examples are the planted ones, named by their ids in the set
        assert explained.model_version == client.model(model).tag
        ids = {example.text: example.id for example in client.examples(model, limit=100).examples}
        nearest = explanation.nearest
        assert len(nearest) == 3 and [near.similarity for near in nearest] == sorted(
            (near.similarity for near in nearest), reverse=True)
        assert nearest[0].label == "crypto" and nearest[0].text in {example["text"] for example in PLANTED}
        assert all(near.example_id == ids[near.text] for near in nearest)
        assert 0 < nearest[-1].similarity <= nearest[0].similarity <= 1
        # the examples that taught it the answer: the explained label's nearest
        assert [near.label for near in explanation.support] == ["crypto"] * 3
        assert explanation.support[0] == nearest[0]


def test_one_method_a_chosen_label_and_the_answer_as_predict_gives_it(server: LiveServer, model: str) -> None:
    texts = list(CLEAR_TEXTS)
    with FewshotClient(server.url) as client:
        predicted = client.predict(model, texts).predictions
        neighbours = client.explain(model, texts, method="neighbors", top_k=1).explanations
        occluded = client.explain(model, texts, method="occlusion", label="card_arrival").explanations
    for text, answer, near, occlusion in zip(texts, predicted, neighbours, occluded, strict=True):
        for explained in (near, occlusion):  # the answer as /v1/predict gives it
            assert explained.prediction.model_dump(exclude={"score"}) == answer.model_dump(exclude={"score"})
            assert explained.prediction.score == pytest.approx(answer.score, abs=1e-4)
        assert near.prediction.label == CLEAR_TEXTS[text]
        assert near.spans is None and near.granularity is None and len(near.nearest) == 1
        assert occlusion.nearest is None and occlusion.support is None
        assert occlusion.label == "card_arrival" and occlusion.spans
    raw = httpx.post(f"{server.url}/v1/explain", json={"model_name": model, "texts": texts[:1],
                                                        "method": "neighbors"}, timeout=60).json()
    assert set(raw["explanations"][0]) == {"text", "prediction", "label", "score", "nearest", "support"}


def test_a_long_text_is_explained_by_sentences_up_to_the_limit(server: LiveServer, model: str) -> None:
    sentences = ["My card has not arrived yet.", "I ordered it three weeks ago!", "Where is it now?"]
    text = " ".join(sentences)  # 15 words: over MAX_EXPLAIN_SPANS, 3 sentences under it
    with FewshotClient(server.url) as client:
        explanation = client.explain(model, [text], method="occlusion").explanations[0]
        assert explanation.granularity == "sentence"
        assert [span.text for span in explanation.spans] == sentences
        assert client.explain(model, [text], granularity="sentence").explanations[0].granularity == "sentence"
        too_many = " ".join(f"Sentence number {n}." for n in range(MAX_EXPLAIN_SPANS + 1))
        with pytest.raises(FewshotError) as refused:
            client.explain(model, ["My card is late.", too_many])
        assert refused.value.status == 400
        assert "texts[1]" in str(refused.value) and f"MAX_EXPLAIN_SPANS={MAX_EXPLAIN_SPANS}" in str(refused.value)
        # neighbours alone leave nothing out: no limit on spans
        assert client.explain(model, [too_many], method="neighbors").explanations[0].nearest


def test_multi_label_and_abstaining_versions_are_explained(server: LiveServer, train_examples: list[dict]) -> None:
    multi = _trained(server, "tags", [{"text": e["text"], "labels": [e["label"]] + (["urgent"] if i % 2 else [])}
                                      for i, e in enumerate(train_examples)])
    refusing = _trained(server, "refusing", [*train_examples, *({"text": t, "label": None} for t in (
        "What is the weather tomorrow?", "Recommend me a good film", "Who won the football match?",
        "How tall is the Eiffel tower?"))], holdout_fraction=0.0)  # every example trained on: a neighbour
    with FewshotClient(server.url) as client:
        tags = client.explain(multi, ["My card has not arrived yet."], top_k=2).explanations[0]
        assert tags.prediction.labels is not None and tags.label in {"urgent", *(e["label"] for e in train_examples)}
        assert tags.nearest[0].labels is not None and tags.nearest[0].label is None
        assert all(tags.label in near.labels for near in tags.support)
        weather = client.explain(refusing, ["Will it rain tomorrow?"], top_k=2).explanations[0]
        assert weather.prediction.abstained and weather.prediction.label is None
        # what an abstention was near: its most probable label, and the `label: null` example it resembles
        assert weather.label == weather.prediction.scores[0].label and weather.spans
        assert weather.nearest[0].label is None and weather.nearest[0].text == "What is the weather tomorrow?"
        assert [near.label for near in weather.support] == [weather.label] * 2


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"model_name": "nobody", "texts": ["hi"]}, 404, "model_name"),
    ({"model_name": "intents", "texts": ["hi"], "label": "weather"}, 400, "label"),
    ({"model_name": "intents", "texts": ["hi"] * 17}, 400, "texts"),
    ({"model_name": "intents", "texts": ["hi"], "method": "gradients"}, 400, "method"),
    ({"model_name": "intents", "texts": ["hi"], "top_k": 0}, 400, "top_k"),
    ({"model_name": "intents", "texts": ["hi"], "granularity": "token"}, 400, "granularity"),
    ({"model_name": "intents", "texts": ["  "]}, 400, "texts[0]"),
])
def test_bad_requests_name_their_field(server: LiveServer, model: str, body: dict, status: int, named: str) -> None:
    response = httpx.post(f"{server.url}/v1/explain", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(named), response.text
