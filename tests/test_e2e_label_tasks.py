"""End to end: multi-label models and "none of these" against a live `bentoml serve` with its
trainer: real SetFit training on all-MiniLM-L6-v2, thresholds read back from the model store
through the API, predictions over HTTP, and every rule a 400 that names its field."""

from __future__ import annotations

import io
import tarfile

import httpx
import pytest

from harness.fixtures import BASE_MODEL
from harness.live_server import LiveServer, wait_for_job

pytestmark = pytest.mark.e2e

BILLING, SHIPPING = "billing", "shipping"
MULTI_LABEL_EXAMPLES = [
    {"text": "my invoice shows the wrong amount", "labels": [BILLING]},
    {"text": "I was charged twice on my card", "labels": [BILLING]},
    {"text": "please refund the extra fee", "labels": [BILLING]},
    {"text": "the package has not arrived yet", "labels": [SHIPPING]},
    {"text": "where is my parcel, tracking is stuck", "labels": [SHIPPING]},
    {"text": "the courier delivered to the wrong address", "labels": [SHIPPING]},
    {"text": "I paid for express delivery but the parcel is a week late", "labels": [BILLING, SHIPPING]},
    {"text": "charged a shipping fee twice and the box never came", "labels": [BILLING, SHIPPING]},
    {"text": "what a lovely sunny day at the beach", "labels": []},
    {"text": "my cat likes to sleep on the sofa", "labels": []},
]
MULTI_LABEL_EVALUATION = [
    {"text": "the bill lists a charge I do not recognise", "labels": [BILLING]},
    {"text": "my order is stuck in transit", "labels": [SHIPPING]},
    {"text": "refund the delivery charge, the parcel never arrived", "labels": [BILLING, SHIPPING]},
    {"text": "I enjoy painting landscapes", "labels": []},
]
BOTH = "I was billed twice for a parcel that never arrived"
NEITHER = "the weather is nice today"

FOREIGN = "the recipe needs two cups of flour"
IN_SCOPE = "what exchange rate do you use"
NONE_OF_THESE = [{"text": text, "label": None} for text in (
    "bake bread at home", "the best hiking trails nearby", "what time does the cinema open",
    "is it going to rain tomorrow")]


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("label-tasks")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client()


def train(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/train", json={"base_model": BASE_MODEL, "strategy": "head", **body})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    return job


@pytest.fixture(scope="module")
def topics(client: httpx.Client) -> dict:
    """A multi-label model; its version's view."""
    job = train(client, {"model_name": "topics", "examples": MULTI_LABEL_EXAMPLES,
                         "eval_examples": MULTI_LABEL_EVALUATION})
    return client.get(f"/v1/models/topics:{job['model_version']}").json()


@pytest.fixture(scope="module")
def intents(client: httpx.Client, train_examples: list[dict], test_examples: list[dict]) -> dict:
    """A single-label model evaluated on in-scope examples: it learns an abstention threshold."""
    job = train(client, {"model_name": "intents", "examples": train_examples, "eval_examples": test_examples})
    return client.get(f"/v1/models/intents:{job['model_version']}").json()


REFUSING_FOREIGN = ["which team won the cup final", "how do I knit a scarf"]


@pytest.fixture(scope="module")
def refusing(client: httpx.Client, train_examples: list[dict], test_examples: list[dict]) -> dict:
    """A single-label model trained with "none of these" examples, evaluated on some too."""
    foreign = [{"text": text, "label": None} for text in REFUSING_FOREIGN]
    job = train(client, {"model_name": "refusing", "examples": train_examples + NONE_OF_THESE,
                         "eval_examples": test_examples + foreign})
    return client.get(f"/v1/models/refusing:{job['model_version']}").json()


def predict(client: httpx.Client, body: dict) -> list[dict]:
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_a_multi_label_model_stores_its_learned_thresholds_and_honest_metrics(topics: dict) -> None:
    assert topics["task"] == "multi_label" and topics["labels"] == [BILLING, SHIPPING]
    assert set(topics["thresholds"]) == {BILLING, SHIPPING}
    assert all(0 < value < 1 for value in topics["thresholds"].values())
    assert topics["eval_source"] == "eval_examples" and topics["eval_num_examples"] == 4
    assert 0 <= topics["accuracy"] <= 1 and 0 < topics["micro_f1"] <= 1 and 0 < topics["macro_f1"] <= 1
    assert {label: scores["support"] for label, scores in topics["label_metrics"].items()} == {BILLING: 2, SHIPPING: 2}
    assert topics["abstention"] is None and topics["confusion_matrix"] is None  # per label: label_metrics


def test_a_multi_label_model_predicts_every_label_of_a_text_and_none_for_a_foreign_one(
        client: httpx.Client, topics: dict) -> None:
    both, neither = predict(client, {"model_name": "topics", "texts": [BOTH, NEITHER]})
    assert sorted(both["labels"]) == [BILLING, SHIPPING]
    assert both["label"] in (BILLING, SHIPPING) and both["label"] == both["labels"][0]  # most probable first
    assert neither["labels"] == [] and neither["label"] in (BILLING, SHIPPING)  # still says its best guess
    for prediction in (both, neither):
        assert [s["label"] for s in prediction["scores"]] != [] and len(prediction["scores"]) == 2
        assert prediction["score"] == prediction["scores"][0]["score"]
        assert "abstained" not in prediction
        over = {s["label"] for s in prediction["scores"] if s["score"] >= topics["thresholds"][s["label"]]}
        assert set(prediction["labels"]) == over  # exactly the labels at or over their learned thresholds


def test_threshold_overrides_the_learned_ones_and_top_k_cuts_the_scores(client: httpx.Client, topics: dict) -> None:
    everything = predict(client, {"model_name": "topics", "texts": [NEITHER], "threshold": 0.0})[0]
    assert sorted(everything["labels"]) == [BILLING, SHIPPING]
    nothing = predict(client, {"model_name": "topics", "texts": [BOTH], "threshold": 1.0})[0]
    assert nothing["labels"] == []
    top = predict(client, {"model_name": "topics", "texts": [BOTH], "top_k": 1})[0]
    assert [s["label"] for s in top["scores"]] == [top["label"]]


def test_a_multi_label_model_serves_embeddings_pins_and_downloads_unchanged(client: httpx.Client,
                                                                          topics: dict) -> None:
    response = client.post("/v1/embeddings", json={"model_name": topics["tag"], "texts": [BOTH]})
    assert response.status_code == 200 and len(response.json()["embeddings"][0]) == 384
    archive = client.get(f"/v1/models/{topics['tag']}/download")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        card = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("README.md")))
        assert card is not None
        text = card.read().decode()
    assert "## Thresholds" in text and "micro F1" in text and f"| `{BILLING}` |" in text


def test_auto_and_setfit_strategies_train_multi_label_models(client: httpx.Client) -> None:
    job = train(client, {"model_name": "topics-auto", "examples": MULTI_LABEL_EXAMPLES, "strategy": "auto",
                         "num_iterations": 1, "eval_examples": MULTI_LABEL_EVALUATION})
    comparison = job["comparison"]
    assert comparison is not None and comparison["winner"] in ("head", "setfit") and comparison["metric"] == "micro_f1"
    assert (comparison["winner"] == "setfit") == (comparison["setfit_micro_f1"] > comparison["head_micro_f1"])
    versions = client.get("/v1/models").json()["models"]
    listed = next(model for model in versions if model["model_name"] == "topics-auto")["versions"]
    assert {version["strategy"] for version in listed} <= {"head", "setfit"}
    assert all(version["task"] == "multi_label" and set(version["thresholds"]) == {BILLING, SHIPPING}
               for version in listed)
    assert predict(client, {"model_name": "topics-auto", "texts": [BOTH]})[0]["labels"] != []


def test_a_single_label_version_learns_an_abstention_threshold(intents: dict) -> None:
    abstention = intents["abstention"]
    assert intents["task"] == "single_label" and intents["thresholds"] is None
    assert abstention["coverage"] == 0.95 and abstention["none_of_these_examples"] == 0
    assert 0 < abstention["threshold"] < 1
    # coverage 0.95 on 20 evaluation texts, each half's threshold fitted on the other half: most are kept
    assert 0.75 <= abstention["in_scope_kept"] <= 1 and abstention["out_of_scope_examples"] == 0, abstention
    assert abstention["out_of_scope_refused"] is None
    confusion = intents["confusion_matrix"]  # true label × answer, on the evaluation examples
    assert confusion["labels"] == intents["labels"] and not confusion["none_of_these"]
    assert sum(map(sum, confusion["counts"])) == intents["eval_num_examples"]
    right = sum(confusion["counts"][i][i] for i in range(len(confusion["labels"])))
    assert right / intents["eval_num_examples"] == pytest.approx(intents["accuracy"])


def test_abstain_refuses_a_foreign_text_and_keeps_an_in_scope_one(client: httpx.Client, intents: dict) -> None:
    plain = predict(client, {"model_name": "intents", "texts": [FOREIGN]})[0]
    # the original shape, and how the text was read
    assert plain["label"] is not None and set(plain) == {"text", "label", "score", "tokens", "truncated"}
    foreign, in_scope = predict(client, {"model_name": "intents", "texts": [FOREIGN, IN_SCOPE], "abstain": True})
    assert foreign["label"] is None and foreign["abstained"] is True and foreign["reason"] == "out_of_scope"
    assert foreign["scope_score"] < intents["scope"]["threshold"] <= in_scope["scope_score"]
    assert len(foreign["scores"]) == 4  # every label's probability, to see what it hesitated between
    assert in_scope["label"] == "exchange_rate" and in_scope["abstained"] is False and "scores" not in in_scope
    assert "reason" not in in_scope
    strict = predict(client, {"model_name": "intents", "texts": [IN_SCOPE], "threshold": 0.99})[0]
    assert strict["label"] is None and strict["abstained"] is True  # threshold alone implies abstain
    # an explicit threshold is on the top probability: it replaces the scope rule
    assert strict["reason"] == "low_confidence" and "scope_score" not in strict


# Clearly foreign texts: questions, film reviews, comments, none about a bank.
FAR_AWAY = ["the recipe needs two cups of flour", "who won the football match last night",
            "this film was a delight from start to finish", "what is the capital of australia",
            "my cat likes to sleep on the sofa", "how tall is mount everest", "I love hiking in the mountains",
            "the concert was far too loud", "what year did the war end", "please recommend a good novel"]
# Banking questions none of the 4 labels covers (banking77 intents cash_withdrawal_charge, change_pin,
# pin_blocked, transfer_not_received_by_recipient): in-domain out-of-scope text, the hard kind.
NEARBY_NEGATIVES = [{"text": text, "label": None} for text in (
    "Why is there a charge when I took out money?", "Why have I been charged a fee for cash withdrawal?",
    "Is it possible for me to change my PIN number?", "What are the steps to change my PIN to something else?",
    "I have exceeded the number of PIN attempts", "I mistook my pin and now I am locked.  Can you unlock me?",
    "I am worried that too much time has gone by for a transfer to be completed.",
    "My money transaction can't be seen by the person I sent it to")]
NEARBY = ["I see some fees for cash withdraw.", "How come I was charged extra when I withdrew cash?",
          "Why am I being charged when I withdraw cash?", "Where do I change my PIN?",
          "Is the bank the only place I can change my PIN>", "How do I get my PIN unlocked?",
          "Will you reinstate my PIN?", "My money transfer has not arrived.",
          "I am still waiting for a transaction to be completed"]


@pytest.fixture(scope="module")
def scoped(client: httpx.Client, train_examples: list[dict]) -> dict:
    """A single-label model on the default hold-out (2 of each label's 8 examples): the test texts are new to it."""
    job = train(client, {"model_name": "scoped", "examples": train_examples})
    return client.get(f"/v1/models/scoped:{job['model_version']}").json()


def refused(client: httpx.Client, model: str, texts: list[str]) -> list[dict]:
    return [p for p in predict(client, {"model_name": model, "texts": texts, "abstain": True}) if p["abstained"]]


def test_a_version_refuses_clearly_foreign_texts_and_keeps_its_own_at_the_documented_coverage(
        client: httpx.Client, scoped: dict, test_examples: list[dict]) -> None:
    scope = scoped["scope"]
    assert scope["score"] == "knn" and scope["coverage"] == 0.95 and scope["calibration"] == "cross_fitted"
    # a frozen body saw no example: all 32 in-scope ones calibrate it (24 cross-fitted, 8 held out)
    assert scope["calibration_examples"] == 32 and 0 < scope["threshold"] < 1 and scope["in_scope_kept"] >= 0.85
    far = refused(client, "scoped", FAR_AWAY)
    assert len(far) == len(FAR_AWAY) and all(p["reason"] == "out_of_scope" for p in far)
    assert all(p["scope_score"] < scope["threshold"] for p in far)
    own = predict(client, {"model_name": "scoped", "texts": [e["text"] for e in test_examples], "abstain": True})
    kept = [p for p in own if not p["abstained"]]
    # 20 new texts: 0.95 is 19 of them; one text more or less is 5 points, hence the margin
    assert len(kept) / len(own) >= 0.95 - 0.1
    assert all(p["scope_score"] >= scope["threshold"] for p in kept)


def test_none_of_these_examples_make_a_version_refuse_more_of_the_texts_like_them(
        client: httpx.Client, scoped: dict, train_examples: list[dict], test_examples: list[dict]) -> None:
    job = train(client, {"model_name": "scoped-null", "examples": train_examples + NEARBY_NEGATIVES})
    view = client.get(f"/v1/models/scoped-null:{job['model_version']}").json()
    assert view["scope"]["none_of_these_examples"] + view["scope"]["out_of_scope_examples"] == len(NEARBY_NEGATIVES)
    before, after = refused(client, "scoped", NEARBY), refused(client, "scoped-null", NEARBY)
    assert len(after) > len(before) and len(after) >= len(NEARBY) - 2, (before, after)
    assert {p["reason"] for p in after} <= {"out_of_scope", "none_of_these"}
    own = predict(client, {"model_name": "scoped-null", "texts": [e["text"] for e in test_examples], "abstain": True})
    assert sum(not p["abstained"] for p in own) / len(own) >= 0.95 - 0.1


def test_a_fine_tuned_version_is_calibrated_on_the_texts_its_body_never_saw(
        client: httpx.Client, train_examples: list[dict], test_examples: list[dict]) -> None:
    job = train(client, {"model_name": "scoped-tuned", "strategy": "setfit", "num_iterations": 1,
                         "examples": train_examples, "eval_examples": test_examples})
    scope = client.get(f"/v1/models/scoped-tuned:{job['model_version']}").json()["scope"]
    assert scope["calibration"] == "evaluation" and scope["calibration_examples"] == len(test_examples)
    assert len(refused(client, "scoped-tuned", FAR_AWAY)) >= len(FAR_AWAY) - 1


def test_a_model_trained_with_none_of_these_examples_always_refuses_foreign_texts(
        client: httpx.Client, refusing: dict) -> None:
    abstention = refusing["abstention"]
    assert abstention["none_of_these_examples"] == 4 and abstention["out_of_scope_examples"] == 2
    # its two `label: null` evaluation texts are clearly foreign (a cup final, knitting): both refused, by
    # the abstention rule and by the scope score, as the served version refuses them; the in-scope ones
    # mostly kept (coverage 0.95 on 20 texts, each half's threshold fitted on the other half) and answered right
    assert abstention["out_of_scope_refused"] == 1.0 and refusing["scope"]["out_of_scope_refused"] == 1.0, \
        (abstention, refusing["scope"])
    assert all(p["abstained"] for p in predict(client, {"model_name": "refusing", "texts": REFUSING_FOREIGN}))
    assert 0.75 <= abstention["in_scope_kept"] <= 1 and 0.8 <= abstention["in_scope_accuracy"] <= 1, abstention
    assert refusing["labels"] == ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]
    confusion = refusing["confusion_matrix"]
    assert confusion["none_of_these"] and len(confusion["counts"]) == 5 and sum(confusion["counts"][-1]) == 2
    foreign, in_scope = predict(client, {"model_name": "refusing", "texts": [FOREIGN, IN_SCOPE]})
    assert (foreign["label"], foreign["abstained"]) == (None, True)
    assert (in_scope["label"], in_scope["abstained"]) == ("exchange_rate", False)
    assert all(s["label"] is not None for s in foreign["scores"])  # "none of these" is not a label


def test_the_python_client_reads_label_sets_and_abstentions(server: LiveServer, topics: dict, intents: dict) -> None:
    from fewshot.client import FewshotClient

    with FewshotClient(server.url) as api:
        both = api.predict("topics", [BOTH]).predictions[0]
        assert both.labels is not None and sorted(both.labels) == [BILLING, SHIPPING]
        foreign = api.predict("intents", [FOREIGN], abstain=True).predictions[0]
        assert foreign.label is None and foreign.abstained is True and foreign.reason == "out_of_scope"
        assert api.model("intents").scope.threshold > foreign.scope_score  # type: ignore[union-attr,operator]
        model = api.model("topics")
        assert model.task == "multi_label" and model.thresholds == topics["thresholds"]


@pytest.mark.parametrize(("body", "message"), [
    ({"examples": [{"text": "a", "labels": "billing"}, *MULTI_LABEL_EXAMPLES]},
     "examples[0].labels: Input should be a valid array"),
    ({"examples": [{"text": "a", "label": "billing"}, *MULTI_LABEL_EXAMPLES]},
     "examples: must all give `label` (one label, or null for none of them) or all give `labels`"),
    ({"examples": MULTI_LABEL_EXAMPLES, "eval_examples": [{"text": "a", "labels": ["refunds"]}]},
     "eval_examples: labels must be among the training examples' labels; unknown: refunds"),
    ({"examples": MULTI_LABEL_EXAMPLES, "abstention_coverage": 0.9}, "abstention_coverage: is for single-label"),
    ({"examples": [{"text": "a", "label": "x"}, {"text": "b", "label": None}]},
     "examples: must contain at least 2 distinct labels (besides `label: null` examples)"),
])
def test_bad_training_requests_are_400_naming_the_field(client: httpx.Client, body: dict, message: str) -> None:
    response = client.post("/v1/train", json={"model_name": "bad", **body})
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_bad_predict_requests_are_400_naming_the_field(client: httpx.Client, topics: dict) -> None:
    outside = client.post("/v1/predict", json={"model_name": "topics", "texts": ["a"], "threshold": 1.5})
    assert outside.status_code == 400 and outside.json()["error"].startswith("threshold: "), outside.text
    meaningless = client.post("/v1/predict", json={"model_name": "topics", "texts": ["a"], "abstain": True})
    assert meaningless.status_code == 400, meaningless.text
    assert meaningless.json()["error"].startswith("abstain: is for single-label models")


def test_the_openapi_document_describes_the_new_fields(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/docs.json").json()
    schemas = spec["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema

    def body(path: str) -> dict:
        return resolve(spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])

    example = resolve(body("/v1/train")["properties"]["examples"]["items"])
    assert {"label", "labels"} <= set(example["properties"]) and "oneOf" in example
    assert "abstention_coverage" in body("/v1/train")["properties"]
    assert {"threshold", "abstain"} <= set(body("/v1/predict")["properties"])
    assert {"labels", "abstained", "reason", "scope_score"} <= set(schemas["Prediction"]["properties"])
    assert {"task", "thresholds", "micro_f1", "macro_f1", "abstention", "scope"} <= set(
        schemas["ModelView"]["properties"])
    assert "out_of_scope_refused" in schemas["Abstention"]["properties"]
    assert {"score", "threshold", "calibration", "calibration_examples", "in_scope_kept",
            "out_of_scope_refused"} <= set(schemas["Scope"]["properties"])
