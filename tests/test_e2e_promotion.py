"""A retrain that is better gets served, through a real `bentoml serve` and its trainer: the issue-40
session on intents this project's other tests never use (8 intents x 2 examples, then 6 more of each
and a 9th intent with 8), judged on evidence neither version was trained on; and a retrain that
forgets nothing it was taught with no text to compare on is served, while one that drops a label is
held. (A retrain taught wrong labels is held: tests/test_e2e_examples.py.)"""

from __future__ import annotations

import csv

import httpx
import pytest

from fewshot.client import FewshotClient
from harness.fixtures import BASE_MODEL, DATA
from harness.live_server import LiveServer

pytestmark = pytest.mark.e2e


def intents() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    with open(DATA / "banking77_9intents.csv", newline="", encoding="utf8") as handle:
        for row in csv.DictReader(handle):
            (train if row["split"] == "train" else test).setdefault(row["label"], []).append(row["text"])
    return train, test


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("promotion")


def test_more_examples_and_a_new_intent_are_served(server: LiveServer) -> None:
    train, test = intents()
    labels = sorted(train)
    first, new_label = labels[:8], labels[8]
    with FewshotClient(server.url) as client:
        job = client.wait(client.train("intents", [{"text": text, "label": label} for label in first
                                                   for text in train[label][:2]],
                                       base_model=BASE_MODEL, strategy="head").job_id, poll_seconds=0.2, timeout=300)
        served = job.model_version
        client.add_examples("intents", [{"text": text, "label": label} for label in first
                                        for text in train[label][2:]]
                            + [{"text": text, "label": new_label} for text in train[new_label]])
        retrained = client.wait(client.retrain("intents", strategy="head").job_id, poll_seconds=0.2, timeout=300)
        promotion = retrained.promotion
        assert promotion is not None and promotion.promoted, promotion
        assert (promotion.rule, promotion.method, promotion.served_version) == ("if_better", "cross_fitted", served)
        assert promotion.evaluation_examples == 8 * 8 + 8  # every text of the set, none relabelled
        assert promotion.new_score > promotion.served_score and promotion.new_better > promotion.served_better
        assert f"version {retrained.model_version} is served" in retrained.note
        view = client.model("intents")
        assert view.model_version == retrained.model_version != served and view.held is None
        assert view.promotion == promotion
        # held-out texts: the served version answers the new intent, and beats the first one
        texts = [text for label in labels for text in test[label]]
        truth = [label for label in labels for _ in test[label]]

        def accuracy(version: str) -> float:
            answers = client.predict(f"intents:{version}", texts).predictions
            return sum(answer.label == label for answer, label in zip(answers, truth, strict=True)) / len(truth)

        assert accuracy(retrained.model_version) > accuracy(served) + 0.05
        answers = client.predict("intents", test[new_label]).predictions
        assert sum(answer.label == new_label for answer in answers) >= len(answers) // 2


def test_without_texts_to_compare_a_superset_is_served_and_a_dropped_label_held(server: LiveServer) -> None:
    """2 examples per label: no fixed evaluation, every text trained on by both versions."""
    train, _ = intents()
    labels = sorted(train)[:3]
    with FewshotClient(server.url) as client:
        client.wait(client.train("small", [{"text": text, "label": label} for label in labels
                                           for text in train[label][:2]],
                                 base_model=BASE_MODEL, strategy="setfit", num_iterations=1).job_id,
                    poll_seconds=0.2, timeout=600)
        # `full` fine-tunes: its version cannot be refitted per fold, and no text is left to compare on
        client.add_examples("small", [{"text": train[labels[0]][2], "label": labels[0]}])
        grown = client.wait(client.retrain("small", strategy="full", num_iterations=1).job_id, poll_seconds=0.2,
                            timeout=600)
        assert grown.promotion.promoted and grown.promotion.method == "no_evidence", grown.promotion
        assert "trained on every example the served version was" in grown.promotion.reason
        doomed = client.examples("small", label=labels[2], limit=10).examples
        client.delete_examples("small", [example.id for example in doomed])
        shrunk = client.wait(client.retrain("small", strategy="full", num_iterations=1).job_id, poll_seconds=0.2,
                             timeout=600)
        assert not shrunk.promotion.promoted and f"no longer knows {labels[2]}" in shrunk.promotion.reason
        assert client.model("small").model_version == grown.model_version
    with httpx.Client(base_url=server.url) as http:
        assert http.get(f"/v1/models/small:{shrunk.model_version}").json()["held"] == shrunk.promotion.reason
