"""A model's example set through a real `bentoml serve` and its trainer: training makes the set,
examples are added (duplicates and conflicts reported, not stored), listed a page at a time,
deleted, and retrained on; `mode: add` trains on the whole set; each version says which set it was
trained on; the set survives a restart and goes with the model. Through the Python client, as
scripts use it, and raw HTTP for the errors."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from fewshot.client import FewshotClient, FewshotError
from fewshot.records.outcomes import fixed_evaluation
from harness.fixtures import BASE_MODEL, CLEAR_TEXTS
from harness.live_server import LiveServer, wait_for_job, wait_for_log

pytestmark = pytest.mark.e2e

GREETINGS = [{"text": "hello there, good morning", "label": "greeting"},
             {"text": "hi! nice to meet you", "label": "greeting"}]
GREETINGS_UNSEEN = ["good evening everyone, how are you?", "hey, hello!", "hi there, lovely to see you"]
"""Greetings in no example set: a version that learned the label answers them with it."""


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("examples", DEFAULT_BASE_MODEL=BASE_MODEL)


def finished(client: FewshotClient, job_id: str) -> str:
    job = client.wait(job_id, poll_seconds=0.2, timeout=300)
    assert job.model_version is not None
    return job.model_version


def test_an_example_set_grows_is_retrained_on_and_survives_a_restart(server: LiveServer,
                                                                      train_examples: list[dict]) -> None:
    with FewshotClient(server.url) as client:
        first = finished(client, client.train("intents", train_examples, base_model=BASE_MODEL,
                                              strategy="head").job_id)
        listed = client.examples("intents", limit=1000)
        assert listed.total == len(train_examples) and {e.source for e in listed.examples} == {"train"}
        assert [e.text for e in listed.examples] == [e["text"] for e in train_examples]  # in the order sent
        assert client.model("intents").examples_digest == listed.digest  # trained on exactly this set

        known = train_examples[0]
        added = client.add_examples("intents", [*GREETINGS, known, {"text": known["text"], "label": "top_up_failed"}])
        assert [e.text for e in added.added] == [g["text"] for g in GREETINGS]
        assert {e.source for e in added.added} == {"added"}
        assert [e.text for e in added.duplicates] == [known["text"]]
        assert [(c.existing.label, c.label) for c in added.conflicts] == [(known["label"], "top_up_failed")]
        assert added.total == len(train_examples) + 2
        assert client.examples("intents").digest != listed.digest  # the version no longer has the whole set

        # a page at a time, by label
        greetings = client.examples("intents", label="greeting", limit=1)
        assert (greetings.total, [e.text for e in greetings.examples]) == (2, [GREETINGS[0]["text"]])
        rest = client.examples("intents", label="greeting", limit=1, cursor=greetings.next_cursor)
        assert ([e.text for e in rest.examples], rest.next_cursor) == ([GREETINGS[1]["text"]], None)

        # retrain on the set: the new label is learned, the version names the set it was trained on
        retrained = finished(client, client.retrain("intents", strategy="head", promote="always").job_id)
        version = client.model("intents")
        assert version.model_version == retrained != first
        assert "greeting" in version.labels and version.num_examples == added.total
        # learned, not just listed: greetings in no set are answered with it, and the old labels still are
        learned = client.predict(f"intents:{retrained}", [*GREETINGS_UNSEEN, *CLEAR_TEXTS]).predictions
        assert [p.label for p in learned] == ["greeting"] * len(GREETINGS_UNSEEN) + list(CLEAR_TEXTS.values()), \
            [(p.text, p.label, p.score) for p in learned]
        assert version.examples_digest == client.examples("intents").digest
        assert version.base_model == BASE_MODEL and version.strategy == "head"
        assert version.promotion is not None and version.promotion.promoted and version.held is None

        # delete: one by id, several at once
        doomed = client.examples("intents", label="card_arrival", limit=3).examples
        with httpx.Client(base_url=server.url) as http:
            one = http.delete(f"/v1/models/intents/examples/{doomed[0].id}")
            assert one.status_code == 200 and one.json()["deleted"] == [doomed[0].id]
            again = http.delete(f"/v1/models/intents/examples/{doomed[0].id}")
            assert again.status_code == 404 and "no example" in again.json()["error"]
        bulk = client.delete_examples("intents", [doomed[1].id, doomed[2].id, doomed[0].id])
        assert (bulk.deleted, bulk.not_found, bulk.total) == ([doomed[1].id, doomed[2].id], [doomed[0].id],
                                                             added.total - 3)

        # `mode: add` on /v1/train: the new examples join the set and the whole set is trained on
        more = [{"text": "good evening to you", "label": "greeting"},
                {"text": GREETINGS[0]["text"], "label": "exchange_rate"}]
        accepted = client.train("intents", more, base_model=BASE_MODEL, strategy="head", mode="add")
        assert any("another label" in warning for warning in accepted.warnings), accepted.warnings
        finished(client, accepted.job_id)
        after_add = client.examples("intents", limit=1000)
        assert after_add.total == bulk.total + 1
        assert client.model("intents").examples_digest == after_add.digest
        assert client.model("intents").num_examples == after_add.total

    server.restart()
    with FewshotClient(server.url) as client:
        assert client.examples("intents", limit=1000).digest == after_add.digest  # kept across restarts
        # deleting the model deletes its set
        with httpx.Client(base_url=server.url) as http:
            deleted = http.delete("/v1/models/intents").json()
        assert deleted["examples_deleted"] == after_add.total and len(deleted["deleted"]) >= 1
        with pytest.raises(FewshotError) as gone:
            client.examples("intents")
        assert gone.value.status == 404


def test_a_set_collected_before_any_version_trains_a_model(server: LiveServer) -> None:
    """Examples sent to a new name make its set; retrain then trains the first version (the default
    base model: this suite's server sets it to the offline MiniLM)."""
    with FewshotClient(server.url) as client:
        with pytest.raises(FewshotError) as nothing:
            client.retrain("collected")
        assert nothing.value.status == 404 and "no example set" in str(nothing.value)
        client.add_examples("collected", GREETINGS)
        with pytest.raises(FewshotError) as one_label:
            client.retrain("collected")
        assert one_label.value.status == 400 and "at least 2 distinct labels" in str(one_label.value)
        client.add_examples("collected", [{"text": "my card was stolen", "label": "lost_card"},
                                          {"text": "I lost my card yesterday", "label": "lost_card"}])
        version = finished(client, client.retrain("collected", strategy="head").job_id)
        assert client.model("collected").model_version == version
        assert client.model("collected").labels == ["greeting", "lost_card"]


def test_bad_example_requests_get_400s_that_name_the_field(server: LiveServer, train_examples: list[dict]) -> None:
    with httpx.Client(base_url=server.url) as http:
        blank = http.post("/v1/models/shapes/examples", json={"examples": [{"text": " ", "label": "a"}]})
        assert blank.status_code == 400 and blank.json()["error"].startswith("examples[0].text:"), blank.text
        missing = http.post("/v1/models/shapes/examples", json={})
        assert missing.status_code == 400 and missing.json()["error"].startswith("examples:"), missing.text
        not_json = http.post("/v1/models/shapes/examples", content=b"{", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400, not_json.text
        bad_name = http.post("/v1/models/Bad%20Name/examples", json={"examples": GREETINGS})
        assert bad_name.status_code == 400 and bad_name.json()["error"].startswith("model_name:")
        assert http.post("/v1/models/shapes/examples", json={"examples": GREETINGS}).status_code == 200
        other_form = http.post("/v1/models/shapes/examples", json={"examples": [{"text": "x", "labels": ["a"]}]})
        assert other_form.status_code == 400 and "single-label" in other_form.json()["error"]
        # `mode: add` joins the set inside the store's write too: the other form is refused, nothing queued
        other_add = http.post("/v1/train", json={"model_name": "shapes", "base_model": BASE_MODEL, "mode": "add",
                                                 "examples": [{"text": "y", "labels": ["a"]},
                                                              {"text": "z", "labels": ["b"]}]})
        assert other_add.status_code == 400 and other_add.json()["error"].startswith("examples:"), other_add.text
        assert "single-label" in other_add.json()["error"]
        assert http.get("/v1/models/shapes/examples").json()["total"] == len(GREETINGS)
        page = http.get("/v1/models/shapes/examples", params={"limit": 0})
        assert page.status_code == 400 and page.json()["error"].startswith("limit:")
        cursor = http.get("/v1/models/shapes/examples", params={"cursor": "nope"})
        assert cursor.status_code == 400 and cursor.json()["error"].startswith("cursor:")
        assert http.get("/v1/models/never-made/examples").status_code == 404
        ids = http.post("/v1/models/shapes/delete-examples", json={"ids": ["a", "a"]})
        assert ids.status_code == 400 and ids.json()["error"].startswith("ids:")
        strategy = http.post("/v1/models/shapes/retrain", json={"strategy": "magic"})
        assert strategy.status_code == 400 and strategy.json()["error"].startswith("strategy:")
        # `mode: add` may send one label; the set it joins must then have two
        lonely = http.post("/v1/train", json={"model_name": "lonely", "base_model": BASE_MODEL, "mode": "add",
                                              "examples": GREETINGS})
        assert lonely.status_code == 400 and "at least 2 distinct labels" in lonely.json()["error"], lonely.text
        assert http.get("/v1/models/lonely/examples").status_code == 404  # a refused request changes no set
        job = http.post("/v1/train", json={"model_name": "lonely", "base_model": BASE_MODEL, "strategy": "head",
                                           "examples": train_examples})
        wait_for_job(http, job.json()["job_id"], {"completed"})
        assert http.get("/v1/models/lonely/examples").json()["total"] == len(train_examples)


def test_a_worse_retrain_is_kept_but_not_served_and_says_why(server: LiveServer, train_examples: list[dict]) -> None:
    """Deliberately wrong labels: examples are relabelled (deleted, added again with the next label) as
    long as the fixed evaluation of the set they make takes none of them, so that the retrained head
    learns wrong answers and is scored on right ones. It scores worse than the served version, is kept
    (name:version) and not served; with `promote: always` it is served anyway."""
    with FewshotClient(server.url) as client:
        served = finished(client, client.train("gated", train_examples, base_model=BASE_MODEL,
                                               strategy="head", holdout_fraction=0).job_id)
        labels = sorted({example["label"] for example in train_examples})
        listed = client.examples("gated", limit=1000).examples
        truth = {example.text: example.label for example in listed}
        wrong = {text: labels[(labels.index(label) + 1) % len(labels)] for text, label in truth.items()}
        while True:  # the evaluation part of the relabelled set: only right labels in it
            relabelled = [(text, wrong.get(text, label)) for text, label in truth.items()]
            evaluated = [relabelled[i][0] for i in fixed_evaluation(relabelled)[1]]
            if not any(text in wrong for text in evaluated):
                break
            for text in evaluated:
                wrong.pop(text, None)
        assert evaluated and len(wrong) >= len(truth) // 2
        client.delete_examples("gated", [example.id for example in listed if example.text in wrong])
        client.add_examples("gated", [{"text": text, "label": label} for text, label in wrong.items()])
        job = client.wait(client.retrain("gated", strategy="head").job_id, poll_seconds=0.2, timeout=300)
        assert job.kind == "retrain" and job.promotion is not None and not job.promotion.promoted, job
        assert job.promotion.served_version == served and job.promotion.new_score < job.promotion.served_score
        assert "kept but not served" in job.note and served in job.note
        assert client.model("gated").model_version == served  # still served
        held = client.model(f"gated:{job.model_version}")
        assert held.held == job.promotion.reason and held.promotion == job.promotion
        assert client.predict(f"gated:{job.model_version}", ["where is my card?"]).predictions  # reachable
        forced = client.wait(client.retrain("gated", strategy="head", promote="always").job_id, poll_seconds=0.2,
                             timeout=300)
        assert forced.promotion.promoted and forced.promotion.rule == "always"
        assert client.model("gated").model_version == forced.model_version


def test_continue_fine_tunes_the_served_body_further(server: LiveServer, train_examples: list[dict]) -> None:
    """Proven by the bodies themselves: fine-tuning is seeded, so `continue` from the served (fine-tuned)
    body and `full` from the base model, on the same set with the same options, would give the same body
    if `continue` started from the base model too; they give different ones, and `continue`'s differs
    from the served body it started from (one more iteration)."""
    probe = [*GREETINGS_UNSEEN, *(example["text"] for example in train_examples[::4])]
    with FewshotClient(server.url) as client:
        first = finished(client, client.train("tuned", train_examples, base_model=BASE_MODEL, strategy="setfit",
                                              num_iterations=1).job_id)
        client.add_examples("tuned", GREETINGS)
        job = client.wait(client.retrain("tuned", strategy="continue", promote="always", num_iterations=1).job_id,
                          poll_seconds=0.2, timeout=600)
        version = client.model("tuned")
        assert job.kind == "retrain" and version.model_version == job.model_version != first
        assert version.strategy == "setfit" and "greeting" in version.labels
        # the control: the same set and options, fine-tuned from the base model
        full = finished(client, client.retrain("tuned", strategy="full", promote="always", num_iterations=1).job_id)

        def body(model_version: str) -> np.ndarray:
            return np.array(client.embeddings(f"tuned:{model_version}", probe).embeddings)

        served, continued, from_base = body(first), body(job.model_version), body(full)
    # the largest 1 - cosine similarity over the probe texts (unit vectors): measured 0.005-0.007 here, and
    # 1e-7 (float rounding) between `continue` and `full` when `continue` started from the base model
    apart = {"continue vs full": 1 - (continued * from_base).sum(axis=1).min(),
             "continue vs served": 1 - (continued * served).sum(axis=1).min()}
    assert min(apart.values()) > 1e-4, apart
    wait_for_log(server, f"retrain (continue, promote always) on the example set of {len(train_examples) + 2}; "
                         f"head from the base model, fine-tuning from tuned:{first}")


def test_a_model_from_label_names_alone_answers_the_obvious_label(server: LiveServer) -> None:
    """No examples: sentences made from the names (one described) are trained on and kept in the set
    (`template`), and clear texts get their label; real examples then join the same set."""
    names = ["card_arrival", "exchange_rate", {"name": "lost_or_stolen_card", "description": "a lost or stolen card"},
             "top_up_failed"]
    clear = {"When will my card arrive?": "card_arrival", "What is the exchange rate for euros?": "exchange_rate",
             "Someone stole my card": "lost_or_stolen_card", "My top up failed": "top_up_failed"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        job = http.post("/v1/train", json={"model_name": "named", "base_model": BASE_MODEL, "strategy": "head",
                                           "labels": names})
        assert job.status_code == 202, job.text
        assert wait_for_job(http, job.json()["job_id"], {"completed", "failed"})["status"] == "completed"
        model = http.get("/v1/models/named").json()
        assert model["labels"] == sorted(clear.values()) and model["accuracy"] is None  # nothing real to score on
        answers = http.post("/v1/predict", json={"model_name": "named", "texts": list(clear)}).json()["predictions"]
        assert [answer["label"] for answer in answers] == list(clear.values())
        listed = http.get("/v1/models/named/examples", params={"limit": 1000}).json()
        assert {e["source"] for e in listed["examples"]} == {"template"} and listed["total"] == 4 * 8
        assert "This text is about a lost or stolen card." in {e["text"] for e in listed["examples"]}
        # wrong shapes are 400s naming the field
        for body, field in (({"labels": ["only"]}, "labels"), ({"labels": ["a", "a"]}, "labels"),
                            ({"labels": ["a", "b"], "examples": [{"text": "x", "label": "c"}]}, "examples"),
                            ({"labels": ["a", "b"], "examples": [{"text": "x", "labels": ["a"]}]}, "labels"),
                            ({}, "examples")):
            refused = http.post("/v1/train", json={"model_name": "named", "base_model": BASE_MODEL, **body})
            assert refused.status_code == 400 and refused.json()["error"].startswith(f"{field}"), refused.text
