"""End to end in a real browser: the console at /console and the API docs at /, in headless Chromium
(Debian's) driven by Playwright, against a live `bentoml serve` with an API key and its trainer,
with models really trained. Every page is checked to request nothing outside the service's origin
and to raise no JavaScript error or Content-Security-Policy violation; each screen's screenshot is
written to build/screenshots/."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, expect

from fewshot import __version__
from fewshot.api.errors import UNAUTHORIZED_MESSAGE
from fewshot.pages import description
from harness.browser import RecordedPage, chromium
from harness.fixtures import BASE_MODEL, LONG_FINE_TUNING, read_examples
from harness.live_server import LiveServer, listed_versions, wait_for_job

pytestmark = pytest.mark.e2e

KEY = "console-test-key"
MODEL = "intents"
LONG = 300_000  # ms: a training job on two CPU cores


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    # Batches of a few thousand rows run long enough to be seen running and cancelled (5 texts per engine call).
    return live_server_factory("console", API_KEY=KEY, BATCH_SHARD_TEXTS="500", BATCH_CHUNK_TEXTS="5")


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client(**{"X-API-Key": KEY})


def train(client: httpx.Client, model_name: str, examples: list[dict], **options) -> dict:
    response = client.post("/v1/train", json={"model_name": model_name, "base_model": BASE_MODEL,
                                              "strategy": "head", "examples": examples, **options})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    return job


@pytest.fixture(scope="module")
def versions(client: httpx.Client, train_examples: list[dict], test_examples: list[dict]) -> list[dict]:
    """Two versions of MODEL, newest first, scored on the same 20 evaluation texts: from 2 examples
    per label (it confuses some), then from all 8."""
    labels = sorted({example["label"] for example in train_examples})
    few = [example for label in labels for example in [e for e in train_examples if e["label"] == label][:2]]
    train(client, MODEL, few, eval_examples=test_examples)
    train(client, MODEL, train_examples, eval_examples=test_examples)
    return listed_versions(client, MODEL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@contextmanager
def checked_page(browser: Browser, origin: str) -> Iterator[RecordedPage]:
    """A fresh page; once the test is done with it, it must have requested nothing outside the
    service's origin and met no script error or CSP violation."""
    recorded = RecordedPage.open(browser, origin)
    try:
        yield recorded
        assert recorded.off_origin() == [], "requests that left the service's origin"
        assert recorded.errors == []
    finally:
        recorded.close()


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[RecordedPage]:
    with checked_page(browser, server.url) as recorded:
        yield recorded


def open_console(page: RecordedPage, screen: str = "models") -> None:
    """The console with the key typed into its dialog, as a user does on first visit."""
    page.page.goto(f"{page.origin}/console#{screen}")
    expect(page.page.locator("#key-dialog")).to_be_visible()
    page.page.fill("#key-input", KEY)
    page.page.press("#key-input", "Enter")
    expect(page.page.locator("#key-dialog")).to_be_hidden()


def csv_file(rows: list[list[str]], name: str = "examples.csv") -> dict:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return {"name": name, "mimeType": "text/csv", "buffer": out.getvalue().encode()}


# ------------------------------------------------------------------------------------ docs at /

@pytest.mark.parametrize("path", ["/", "/docs"])
def test_docs_page_is_ours_and_calls_no_one_else(page: RecordedPage, server: LiveServer, path: str) -> None:
    page.page.goto(f"{server.url}{path}")
    info = page.page.locator(".swagger-ui .info")
    expect(info.locator(".title")).to_contain_text("fewshot")
    expect(info.locator(".title")).to_contain_text(__version__)
    first_sentence = description().split(":")[0]  # "Few-shot text classification you host yourself"
    expect(info).to_contain_text(first_sentence)
    assert page.page.title() == f"fewshot {__version__} · API"
    html = page.page.content()
    for boilerplate in ("BentoML Prediction Service", "googletagmanager", "created with BentoML", "join-slack"):
        assert boilerplate not in html
    expect(page.page.locator(".opblock-summary-path", has_text="/v1/predict").first).to_be_visible()
    page.screenshot("docs" if path == "/" else "docs-at-docs")
    expect(info.get_by_role("link", name="the console")).to_have_attribute("href", "console")  # the description's
    page.page.get_by_role("navigation", name="Pages").get_by_role("link", name="Console").click()
    expect(page.page.locator("#key-dialog")).to_be_visible()
    assert page.page.url == f"{server.url}/console"


def test_the_docs_are_at_slash_and_slash_docs_open_and_locked_to_our_origin(server: LiveServer) -> None:
    """/docs is where the seed's users look; both answer without a key (the server has one) and carry the
    Content-Security-Policy that makes the browser refuse any other origin."""
    root, docs = httpx.get(f"{server.url}/"), httpx.get(f"{server.url}/docs")
    assert root.status_code == docs.status_code == 200 and root.text == docs.text
    for response in (root, docs):
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy
    moved = httpx.get(f"{server.url}/docs/")
    assert moved.status_code == 307 and moved.headers["location"] == "../docs"
    console = httpx.get(f"{server.url}/console")
    assert "script-src 'self'" in console.headers["content-security-policy"]


def test_openapi_info_says_what_the_docs_page_says(server: LiveServer) -> None:
    info = httpx.get(f"{server.url}/docs.json").json()["info"]
    assert info["title"] == "fewshot" and info["version"] == __version__
    assert info["description"] == description()
    assert "contact" not in info  # BentoML's team, not ours


# ------------------------------------------------------------------------------------- the key

def test_a_wrong_key_shows_the_apis_401_message(page: RecordedPage, server: LiveServer) -> None:
    refused = httpx.get(f"{server.url}/v1/models", headers={"X-API-Key": "wrong"})
    assert refused.status_code == 401 and refused.json()["error"] == UNAUTHORIZED_MESSAGE
    page.page.goto(f"{server.url}/console")
    expect(page.page.locator("#key-dialog")).to_be_visible()
    page.page.fill("#key-input", "wrong")
    page.page.press("#key-input", "Enter")
    expect(page.page.locator("#key-error")).to_have_text(f"The server refused this key: {UNAUTHORIZED_MESSAGE}")
    expect(page.page.locator("#key-dialog")).to_be_visible()
    page.screenshot("key-refused")
    assert page.page.evaluate("sessionStorage.getItem('fewshot.apiKey')") is None  # a refused key is not kept


def test_the_key_is_asked_once_kept_in_the_tab_and_never_in_a_url(page: RecordedPage, versions: list[dict]) -> None:
    open_console(page)
    expect(page.page.locator("#model-list")).to_contain_text(MODEL)
    assert page.page.evaluate("sessionStorage.getItem('fewshot.apiKey')") == KEY
    page.page.reload()  # same tab: no second question
    expect(page.page.locator("#model-list")).to_contain_text(MODEL)
    expect(page.page.locator("#key-dialog")).to_be_hidden()
    assert not [url for url in page.requests if KEY in url]
    page.page.get_by_role("button", name="Forget API key").click()
    expect(page.page.locator("#key-dialog")).to_be_visible()
    assert page.page.evaluate("sessionStorage.getItem('fewshot.apiKey')") is None


# ----------------------------------------------------------------------------------------- models

def test_models_screen_shows_versions_label_bars_and_the_confusion_matrix(
        page: RecordedPage, versions: list[dict]) -> None:
    open_console(page)
    newest = versions[0]
    rows = page.page.locator("table.versions tbody tr")
    expect(rows).to_have_count(len(versions))
    expect(rows.first).to_contain_text(newest["model_version"])
    expect(rows.first.locator(".badge.served")).to_be_visible()
    expect(rows.nth(1).locator(".badge.served")).to_have_count(0)
    expect(page.page.locator("#version-detail h3").first).to_have_text(f"Version {newest['model_version']}")
    # One row of bars per label, each bar's number the API's.
    metrics = newest["label_metrics"]
    bars = page.page.locator("table.label-metrics tbody tr")
    expect(bars).to_have_count(len(metrics))
    for label, scores in metrics.items():
        row = page.page.locator(f'table.label-metrics tr[data-label="{label}"]')
        for kind in ("precision", "recall", "f1"):
            expect(row.locator(f".meter.{kind}")).to_have_attribute(
                "aria-label", f"{label} {'F1' if kind == 'f1' else kind} {scores[kind]:.3f}")
    # The heat map holds the API's counts, true label by answer.
    matrix = newest["confusion_matrix"]
    cells = page.page.locator("table.matrix tbody tr")
    expect(cells).to_have_count(len(matrix["labels"]))
    shown = [[int(count) for count in row.locator("td").evaluate_all("cells => cells.map(c => c.dataset.count)")]
             for row in cells.all()]
    assert shown == matrix["counts"]
    assert sum(map(sum, shown)) == newest["eval_num_examples"]
    # How it says "none of these": the version's scope threshold and what set it.
    scope = newest["scope"]
    expect(page.page.locator("#scope-line")).to_contain_text(
        f"under {scope['threshold']:.3f} gets no label: set on {scope['calibration_examples']} texts")
    page.screenshot("models")


def test_two_versions_side_by_side(page: RecordedPage, versions: list[dict]) -> None:
    open_console(page)
    newer, older = versions[0], versions[1]
    expect(page.page.locator("#compare-a")).to_have_value(older["model_version"])
    expect(page.page.locator("#compare-b")).to_have_value(newer["model_version"])
    page.page.get_by_role("button", name="Compare", exact=True).click()
    table = page.page.locator("table.comparison")
    expect(table.locator("thead")).to_contain_text(older["model_version"])
    accuracy = table.locator('tr[data-metric="score"] td.delta')
    expect(accuracy).to_have_attribute("data-delta", f"{newer['accuracy'] - older['accuracy']:.6f}")
    changes = {label: scores["f1"] - older["label_metrics"][label]["f1"]
               for label, scores in newer["label_metrics"].items()}
    for label, change in changes.items():
        expect(table.locator(f'tr[data-label="{label}"] td.delta')).to_have_attribute("data-delta", f"{change:.6f}")
        expect(table.locator(f'tr[data-label="{label}"] td.delta')).to_have_class(
            "number delta up" if change > 0 else "number delta down" if change < 0 else "number delta")
    assert any(changes.values()), "the two versions should differ somewhere, or this shows nothing"
    page.screenshot("models-compare")


def test_a_version_is_deleted_only_after_confirmation(page: RecordedPage, client: httpx.Client) -> None:
    job = train(client, "disposable", read_examples("banking77_train_4labels.csv")[:16])
    tag = f"disposable:{job['model_version']}"
    open_console(page)
    page.page.locator('#model-list button[data-model="disposable"]').click()
    delete = page.page.get_by_role("button", name=f"Delete version {job['model_version']}")
    delete.click()
    dialog = page.page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(tag)
    page.screenshot("delete-confirmation")
    page.page.keyboard.press("Escape")  # keyboard: Escape cancels, nothing is deleted
    expect(dialog).to_be_hidden()
    assert client.get(f"/v1/models/{tag}").status_code == 200
    delete.click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.page.locator("#notice")).to_contain_text(f"Deleted {tag}")
    assert client.get(f"/v1/models/{tag}").status_code == 404
    expect(page.page.locator('#model-list button[data-model="disposable"]')).to_have_count(0)


def test_the_example_set_is_listed_added_to_deleted_and_retrained_from(page: RecordedPage, client: httpx.Client,
                                                                         train_examples: list[dict]) -> None:
    first = train(client, "taught", train_examples[:16])
    open_console(page)
    page.page.locator('#model-list button[data-model="taught"]').click()
    rows = page.page.locator("#example-set table.examples tbody tr")
    expect(rows).to_have_count(16)
    trained_on = page.page.locator("#trained-on")
    expect(trained_on).to_contain_text("was trained on exactly this set of 16 examples")
    notice = page.page.locator("#notice")
    page.page.fill("#example-text", "hello there, good morning")
    page.page.fill("#example-label", "greeting")
    page.page.get_by_role("button", name="Add example").click()
    expect(notice).to_contain_text("Added: the set has 17 examples")
    expect(rows).to_have_count(17)
    expect(trained_on).to_contain_text(f"{first['model_version']} was trained on 16 examples (+1 added since)")
    page.page.fill("#example-text", train_examples[0]["text"])  # in the set as card_arrival
    page.page.fill("#example-label", "top_up_failed")
    page.page.get_by_role("button", name="Add example").click()
    expect(notice).to_contain_text(f"Not added: the set has this text as {train_examples[0]['label']}")
    page.screenshot("example-set")
    page.page.get_by_role("button", name="Delete example: hello there, good morning").click()
    page.page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    expect(notice).to_contain_text("Deleted: the set has 16 examples")
    expect(rows).to_have_count(16)
    page.page.select_option("#retrain-strategy", "head")
    page.page.get_by_role("button", name="Retrain").click()
    expect(notice).to_contain_text("Retraining taught: job ")
    job_id = notice.inner_text().split("job ")[1].split(" ")[0]
    job = wait_for_job(client, job_id, {"completed", "failed"})
    assert (job["kind"], job["status"], job["promotion"]["rule"]) == ("retrain", "completed", "if_better"), job
    page.page.reload()  # the key stays in the tab
    page.page.locator('#model-list button[data-model="taught"]').click()
    promotion = job["promotion"]
    expect(page.page.locator("#retrain-effect")).to_contain_text(
        f"Retrained: accuracy {promotion['served_score']:.3f} ({first['model_version']}) → "
        f"{promotion['new_score']:.3f} on {promotion['evaluation_examples']} texts of the set, each left out of both "
        "versions' refitted heads")
    assert promotion["method"] == "cross_fitted" and promotion["evaluation_examples"] == 16, promotion


def test_the_inbox_labels_suggested_texts_by_keyboard_and_fixes_a_suspect(page: RecordedPage, client: httpx.Client,
                                                                          train_examples: list[dict],
                                                                          test_examples: list[dict]) -> None:
    train(client, "inboxed", train_examples)
    planted = "I ordered my card two weeks ago and it still hasn't arrived"
    response = client.post("/v1/models/inboxed/examples",
                           json={"examples": [{"text": planted, "label": "exchange_rate"}]})
    assert response.status_code == 200, response.text
    total = len(train_examples) + 1
    labels = client.get("/v1/models/inboxed").json()["labels"]
    open_console(page)
    page.page.locator('#model-list button[data-model="inboxed"]').click()
    rows = page.page.locator("#example-set table.examples tbody tr")
    expect(rows).to_have_count(total)
    expect(page.page.locator("#example-set")).not_to_contain_text("null")  # no stray `null` child under the table
    page.page.fill("#inbox-pool", "\n".join(e["text"] for e in test_examples))
    page.page.get_by_role("button", name="Suggest texts to label").click()
    card = page.page.locator("#inbox-card")
    expect(card).to_be_focused()
    expect(card).to_contain_text("1 of 10")
    first = page.page.locator("#inbox-card .card-text").inner_text()
    page.screenshot("inbox")
    page.page.keyboard.press("2")  # the second label
    notice = page.page.locator("#notice")
    expect(notice).to_contain_text(f'Labelled "{first}" as {labels[1]}: the set has {total + 1} examples')
    expect(card).to_contain_text("2 of 10")
    expect(card).to_be_focused()
    page.page.keyboard.press("s")  # skipped: nothing sent
    expect(card).to_contain_text("3 of 10")
    third = page.page.locator("#inbox-card .card-text").inner_text()
    page.page.keyboard.press("Enter")  # the model's guess
    expect(notice).to_contain_text(f'Labelled "{third}"')
    expect(rows).to_have_count(total + 2)
    held = {e["text"]: e for e in client.get("/v1/models/inboxed/examples", params={"limit": 1000}).json()["examples"]}
    assert (held[first]["label"], held[first]["source"]) == (labels[1], "feedback")
    assert held[third]["source"] == "feedback"

    page.page.get_by_role("button", name="Find suspect labels").click()
    suspect = page.page.locator("li.suspect", has_text=planted)
    expect(suspect).to_contain_text("labelled exchange_rate; looks like card_arrival")
    page.screenshot("suspects")
    suspect.focus()
    page.page.keyboard.press("f")
    expect(notice).to_contain_text(f'Labelled "{planted}" as card_arrival (was exchange_rate)')
    expect(suspect).to_have_count(0)
    fixed = client.get("/v1/models/inboxed/examples", params={"label": "card_arrival", "limit": 1000}).json()
    assert planted in [e["text"] for e in fixed["examples"]]


# ----------------------------------------------------------------------------------------- try it

def test_try_it_shows_the_labels_with_probability_bars(page: RecordedPage, client: httpx.Client,
                                                       versions: list[dict]) -> None:
    texts = ["my card still has not arrived", "what exchange rate do you use"]
    expected = client.post("/v1/predict", json={"model_name": MODEL, "texts": texts, "top_k": 2}).json()
    open_console(page, "try")
    page.page.select_option("#try-model", MODEL)
    page.page.fill("#try-texts", "\n".join(texts))
    page.page.fill("#try-top-k", "2")
    page.page.press("#try-texts", "Control+Enter")  # the keyboard shortcut
    cards = page.page.locator(".prediction")
    expect(cards).to_have_count(2)
    for card, prediction in zip(cards.all(), expected["predictions"], strict=True):
        expect(card.locator(".answer .label")).to_have_text(prediction["label"])
        bars = card.locator("table.scores tbody tr")
        expect(bars).to_have_count(2)
        for bar, score in zip(bars.all(), prediction["scores"], strict=True):
            expect(bar.locator("th")).to_have_text(score["label"])
            expect(bar.locator(".meter .value")).to_have_text(f"{score['score']:.3f}")
    page.screenshot("try-it")


def test_try_it_abstains_when_asked(page: RecordedPage, client: httpx.Client, versions: list[dict]) -> None:
    texts = ["the recipe needs two cups of flour", "my card still has not arrived"]
    expected = client.post("/v1/predict", json={"model_name": MODEL, "texts": texts, "abstain": True}).json()
    assert expected["predictions"][0]["abstained"] and not expected["predictions"][1]["abstained"]
    open_console(page, "try")
    page.page.fill("#try-texts", "\n".join(texts))
    page.page.check("#try-abstain")
    page.page.get_by_role("button", name="Predict").click()
    answers = page.page.locator(".prediction .answer .label")
    assert expected["predictions"][0]["reason"] == "out_of_scope"
    expect(answers).to_have_text(["none of these (far from every training example)",
                                  expected["predictions"][1]["label"]])


def test_try_it_predicts_with_a_pinned_version(page: RecordedPage, client: httpx.Client, versions: list[dict],
                                               test_examples: list[dict]) -> None:
    """With texts the two versions answer differently: the console's answers are the pinned one's."""
    older = versions[1]
    pool = [example["text"] for example in test_examples]
    def labels(model: str) -> list[str]:
        answered = client.post("/v1/predict", json={"model_name": model, "texts": pool}).json()["predictions"]
        return [prediction["label"] for prediction in answered]
    differing = [text for text, old, new in zip(pool, labels(older["tag"]), labels(MODEL), strict=True) if old != new]
    assert differing, "the two versions answer every test text alike: nothing would show which one answered"
    texts = differing[:3]
    expected = client.post("/v1/predict", json={"model_name": older["tag"], "texts": texts}).json()["predictions"]
    open_console(page, "try")
    page.page.select_option("#try-model", older["tag"])
    page.page.fill("#try-texts", "\n".join(texts))
    page.page.get_by_role("button", name="Predict").click()
    cards = page.page.locator(".prediction")
    expect(cards).to_have_count(len(texts))
    expect(page.page.locator(".prediction .answer .label")).to_have_text([p["label"] for p in expected])


MARKUP = '<img src=x onerror="document.title=1">'


def test_labels_and_texts_are_shown_as_text_never_as_markup(page: RecordedPage, client: httpx.Client) -> None:
    """Labels and texts are the API user's: the console must show `<img …>` as those characters, and
    create no element from them (the page's Content-Security-Policy would block an inline handler anyway:
    this checks the escaping itself)."""
    examples = read_examples("banking77_train_4labels.csv")
    markup_label = {"card_arrival": MARKUP, "top_up_failed": "<b>bold</b>"}
    train(client, "markup", [{"text": e["text"], "label": markup_label.get(e["label"], e["label"])}
                             for e in examples])
    open_console(page)
    page.page.locator('#model-list button[data-model="markup"]').click()
    expect(page.page.locator("table.label-metrics")).to_contain_text(MARKUP)
    expect(page.page.locator("table.label-metrics")).to_contain_text("<b>bold</b>")
    page.page.get_by_role("navigation", name="Screens").get_by_role("link", name="Try it").click()
    page.page.select_option("#try-model", "markup")
    page.page.fill("#try-texts", f"My card has not arrived yet. {MARKUP}")
    page.page.get_by_role("button", name="Predict").click()
    expect(page.page.locator(".prediction .answer .label")).to_have_text([MARKUP])
    expect(page.page.locator(".prediction")).to_contain_text(f"My card has not arrived yet. {MARKUP}")
    assert page.page.locator("img[src=x]").count() == 0
    assert page.page.locator("b").evaluate_all("found => found.filter(b => b.textContent === 'bold').length") == 0
    assert page.page.title().startswith("fewshot")
    assert client.delete("/v1/models/markup").status_code == 200  # the other tests' model list as it was


def test_try_it_shows_the_apis_error(page: RecordedPage, versions: list[dict]) -> None:
    open_console(page, "try")
    page.page.select_option("#try-model", MODEL)  # waits for the model list: clicked before it, "No model to ask"
    page.page.fill("#try-texts", "hello")
    page.page.fill("#try-top-k", "100000")
    page.page.get_by_role("button", name="Predict").click()
    expect(page.page.locator("#try-error")).to_contain_text("top_k")
    expect(page.page.locator("#try-error")).to_contain_text("(HTTP 400)")


# ----------------------------------------------------------------------------------- explanations

PLANTED = [{"text": text, "label": "crypto"} for text in (
    "Can I buy bitcoin here?", "Do you support bitcoin transfers?", "I want to sell my bitcoin",
    "How do I send bitcoin to a friend?")]
"""A label decided by one word, as in tests/test_e2e_explain.py: every example of it says bitcoin, no other does."""
DECIDED = "Can I get a bitcoin with my account?"
EXPLAINED = "explained"


@pytest.fixture(scope="module")
def explained_model(client: httpx.Client, train_examples: list[dict]) -> str:
    train(client, EXPLAINED, [*train_examples, *PLANTED])
    return EXPLAINED


def test_try_it_explains_an_answer_and_links_its_nearest_examples(page: RecordedPage, client: httpx.Client,
                                                                  explained_model: str) -> None:
    """Why? highlights the word that decides the answer, with the API's weights, lists the nearest training
    examples, and each one still in the set links to its row on the models screen."""
    asked = {"model_name": explained_model, "texts": [DECIDED], "method": "both"}
    nearest = client.post("/v1/explain", json=asked).json()["explanations"][0]["nearest"]
    # The nearest example leaves the set (the version keeps it): it is listed with no link.
    gone = nearest[0]
    assert client.delete(f"/v1/models/{explained_model}/examples/{gone['example_id']}").status_code == 200
    expected = client.post("/v1/explain", json=asked).json()["explanations"][0]
    assert expected["label"] == "crypto" and expected["nearest"][0]["example_id"] is None, expected
    open_console(page, "try")
    page.page.select_option("#try-model", explained_model)
    page.page.fill("#try-texts", f"{DECIDED}\nmy card still has not arrived")
    page.page.get_by_role("button", name="Predict").click()
    card = page.page.locator(".prediction").first
    expect(card.locator(".answer .label")).to_have_text("crypto")
    why = card.get_by_role("button", name="Why?")
    why.focus()
    page.page.keyboard.press("Enter")  # the keyboard opens it
    box = card.locator(".explanation")
    expect(box).to_be_visible()
    expect(why).to_have_attribute("aria-expanded", "true")
    explained = box.locator(".explained")
    expect(explained.locator(".label")).to_have_text("crypto")
    assert float(explained.get_attribute("data-score")) == pytest.approx(expected["score"], abs=1e-3)
    expect(box.locator(".granularity")).to_have_count(0)  # words: no fallback to sentences to say
    # The text as typed, each word weighted as the API weighs it; the most highlighted is "bitcoin".
    expect(box.locator(".weighted-text")).to_have_text(DECIDED)
    spans = box.locator(".weighted-text [data-weight]")
    expect(spans).to_have_count(len(expected["spans"]))
    shown = spans.evaluate_all("nodes => nodes.map(node => [node.textContent, Number(node.dataset.weight), "
                               "node.title, getComputedStyle(node).backgroundColor])")
    assert [text for text, *_ in shown] == [span["text"] for span in expected["spans"]]
    # abs: the same version, but a batch of other lengths pads the texts differently (test_e2e_explain.py)
    assert [weight for _, weight, *_ in shown] == pytest.approx([span["weight"] for span in expected["spans"]],
                                                                abs=1e-3)
    top = max(shown, key=lambda span: span[1])
    assert top[0] == "bitcoin" == max(expected["spans"], key=lambda span: span["weight"])["text"], shown
    assert top[2].startswith("bitcoin: +") and "probability of crypto falls by" in top[2], top
    assert top[2].endswith(f"rank 1 of {len(expected['spans'])})"), top  # the API's rank, first for the top word
    assert top[3] == "rgba(242, 169, 0, 0.85)", shown  # the darkest: set through the CSSOM, under the CSP
    expect(box.locator(".weights")).to_contain_text("carried it: bitcoin +")
    # The nearest training examples, with a link to each one the set still holds.
    rows = box.locator("table.nearest tbody tr")
    expect(rows).to_have_count(len(expected["nearest"]))
    for row, near in zip(rows.all(), expected["nearest"], strict=True):
        expect(row.locator("td").nth(0)).to_have_text(near["text"])
        expect(row.locator("td").nth(1)).to_have_text(near["label"])
        similarity = float(row.locator(".meter").get_attribute("aria-label").split()[-1])
        assert similarity == pytest.approx(near["similarity"], abs=2e-3)
        expect(row.get_by_role("link")).to_have_count(1 if near["example_id"] else 0)
    expect(rows.first).to_contain_text("no longer in the set")
    # and the nearest of the explained label: what taught it the answer
    support = box.locator("table.support tbody tr")
    expect(support).to_have_count(len(expected["support"]))
    heading = "Nearest examples labelled crypto: what taught it this answer"
    expect(box.get_by_role("heading", name=heading)).to_be_visible()
    for row, near in zip(support.all(), expected["support"], strict=True):
        expect(row.locator("td").nth(0)).to_have_text(near["text"])
        expect(row.locator("td").nth(1)).to_have_text("crypto")
    page.screenshot("try-it-explained")
    linked = expected["nearest"][1]
    link = rows.nth(1).get_by_role("link", name=f"Show in the example set: {linked['text']}")
    expect(link).to_have_attribute("href", f"#models/{explained_model}/examples/{linked['example_id']}")
    link.click()
    # The models screen, that model, its example set with the example highlighted and focused.
    expect(page.page.locator("#screen-models")).to_be_visible()
    expect(page.page.locator(f'#model-list button[data-model="{explained_model}"]')).to_have_attribute(
        "aria-pressed", "true")
    target = page.page.locator(f'#example-set tr[data-example="{linked["example_id"]}"]')
    expect(target).to_have_class("target")
    expect(target).to_have_attribute("aria-current", "true")
    expect(target.locator("td").first).to_have_text(linked["text"])
    expect(target).to_be_focused()
    expect(target).to_be_in_viewport()
    expect(page.page.locator("#example-set tr.target")).to_have_count(1)
    expect(page.page.locator("#notice")).to_contain_text(f"“{linked['text']}” is highlighted in the example set of "
                                                         f"{explained_model}")
    page.screenshot("example-linked")
    page.page.reload()  # the link is an address: the same view again
    expect(target).to_be_focused()
    # A model chosen in the list: the mark and the address go; Back returns to Try it.
    page.page.locator(f'#model-list button[data-model="{explained_model}"]').click()
    expect(page.page.locator("#example-set tr.target")).to_have_count(0)
    assert page.page.evaluate("location.hash") == "#models"
    page.page.go_back()
    expect(page.page.locator("#screen-try")).to_be_visible()


def test_try_it_shows_the_apis_error_for_an_explanation(page: RecordedPage, explained_model: str) -> None:
    text = " ".join(f"Sentence {n}." for n in range(65))  # over MAX_EXPLAIN_SPANS (64) sentences: not explained
    open_console(page, "try")
    page.page.select_option("#try-model", explained_model)
    page.page.fill("#try-texts", text)
    page.page.get_by_role("button", name="Predict").click()
    card = page.page.locator(".prediction")
    expect(card).to_have_count(1)
    card.get_by_role("button", name="Why?").click()
    error = card.locator(".explanation .error-box[role=alert]")
    expect(error).to_contain_text("Could not explain this answer: texts[0]: it has more than MAX_EXPLAIN_SPANS=")
    expect(error).to_contain_text("(HTTP 400)")


# ----------------------------------------------------------------------------------- jobs, train

@pytest.mark.parametrize(("rows", "message"), [
    ([["text", "category"], ["hello", "a"]], 'missing column "label"'),
    ([["text", "label"], ["card arrived?", "card"], ["", "rate"], ["rate today?", "rate"]], "row 3: empty text"),
    ([["text", "label"], ["card arrived?", "card"], ["where is my card", "card"]], 'only one label ("card")'),
    ([], "the file is empty"),
])
def test_a_bad_csv_is_named_before_anything_is_sent(page: RecordedPage, rows: list[list[str]], message: str) -> None:
    open_console(page, "train")
    page.page.set_input_files("#train-file", files=[csv_file(rows, "bad.csv")])
    expect(page.page.locator("#train-error")).to_contain_text(message)
    sent = len(page.requests)
    page.page.get_by_role("button", name="Train").click()
    expect(page.page.locator("#train-error")).to_contain_text(message)
    assert not [url for url in page.requests[sent:] if url.endswith("/v1/train")]
    if "missing column" in message:
        page.screenshot("train-bad-file")


def test_the_apis_own_message_for_a_refused_training(page: RecordedPage) -> None:
    open_console(page, "train")
    page.page.set_input_files("#train-file", files=[csv_file(
        [["text", "label"], ["card arrived?", "card"], ["rate today?", "rate"]])])
    page.page.fill("#train-name", "Not A Valid Name!")
    page.page.get_by_role("button", name="Train").click()
    expect(page.page.locator("#train-error")).to_contain_text("model_name")
    expect(page.page.locator("#train-error")).to_contain_text("(HTTP 400)")


def test_a_csv_upload_trains_a_model_whose_job_completes_on_screen(
        page: RecordedPage, client: httpx.Client, train_examples: list[dict]) -> None:
    open_console(page, "train")
    rows = [["label", "text"]] + [[example["label"], example["text"]] for example in train_examples]  # any column order
    page.page.set_input_files("#train-file", files=[csv_file(rows, "Banking Intents.csv")])
    expect(page.page.locator("#train-summary")).to_contain_text(f"{len(train_examples)} examples, 4 labels")
    expect(page.page.locator("#train-name")).to_have_value("banking-intents")  # from the file's name
    page.page.fill("#train-base", BASE_MODEL)
    page.page.select_option("#train-strategy", "head")
    page.screenshot("train")
    page.page.get_by_role("button", name="Train").click()
    expect(page.page.locator("#screen-jobs")).to_be_visible()
    row = page.page.locator("#job-table tbody tr.new")
    expect(row).to_have_count(1)
    expect(row.locator(".badge.status")).to_have_text("completed", timeout=LONG)
    expect(row.locator("progress")).to_have_attribute("value", "1")
    job = client.get(f"/v1/jobs/{row.get_attribute('data-job-id')}").json()
    assert job["status"] == "completed" and job["model_name"] == "banking-intents"
    page.screenshot("jobs")
    row.get_by_role("button", name=f"version {job['model_version']}").click()  # to the new version
    expect(page.page.locator("#version-detail h3").first).to_have_text(f"Version {job['model_version']}")


def test_a_running_job_shows_its_progress_and_can_be_cancelled(
        page: RecordedPage, client: httpx.Client, train_examples: list[dict]) -> None:
    # Fine-tuning long enough on any machine to be seen running, and to be cancelled.
    accepted = client.post("/v1/train", json={"model_name": "long-one", "base_model": BASE_MODEL,
                                              "strategy": "setfit", "examples": train_examples,
                                              **LONG_FINE_TUNING}).json()
    wait_for_job(client, accepted["job_id"], {"running"})
    open_console(page, "jobs")
    row = page.page.locator(f'#job-table tr[data-job-id="{accepted["job_id"]}"]')
    expect(row.locator(".badge.status")).to_have_text("running")
    expect(row.locator("td.progress")).to_contain_text("step", timeout=LONG)  # live: fine-tuning steps counted
    first = row.locator("progress").get_attribute("value")
    expect(row.locator("progress")).not_to_have_attribute("value", first, timeout=LONG)  # it moves
    page.screenshot("jobs-running")
    row.get_by_role("button", name=f"Cancel job {accepted['job_id']}").click()
    expect(row.locator(".badge.status")).to_have_text("cancelled", timeout=LONG)
    assert client.get(f"/v1/jobs/{accepted['job_id']}").json()["status"] == "cancelled"


def test_a_failed_job_shows_its_error(page: RecordedPage, client: httpx.Client) -> None:
    # A Hub id that cannot be downloaded (the test server is offline): the job fails in its trainer.
    accepted = client.post("/v1/train", json={"model_name": "doomed", "base_model": "no-such-org/no-such-model",
                                              "strategy": "head", "examples": [
                                                  {"text": "card arrived?", "label": "card"},
                                                  {"text": "rate today?", "label": "rate"}]}).json()
    job = wait_for_job(client, accepted["job_id"], {"failed", "completed"})
    assert job["status"] == "failed" and job["error"], job
    open_console(page, "jobs")
    row = page.page.locator(f'#job-table tr[data-job-id="{accepted["job_id"]}"]')
    expect(row.locator(".badge.status")).to_have_text("failed")
    expect(row.locator("td.error-text")).to_contain_text(job["error"])
    expect(row.get_by_role("button", name=f"Cancel job {accepted['job_id']}")).to_have_count(0)


@pytest.fixture(scope="module")
def open_server(live_server_factory) -> LiveServer:
    """No API key and no trainer: every accepted job stays pending."""
    return live_server_factory("console-open", EMBEDDED_TRAINER="false", MAX_QUEUED_JOBS="100")


def test_without_a_key_nothing_is_asked_and_older_jobs_page_in(browser: Browser, open_server: LiveServer) -> None:
    client = open_server.client()
    examples = [{"text": "card arrived?", "label": "card"}, {"text": "rate today?", "label": "rate"}]
    for n in range(52):  # one page (50) and two more
        response = client.post("/v1/train", json={"model_name": f"queued-{n}", "examples": examples})
        assert response.status_code == 202, response.text
    with checked_page(browser, open_server.url) as page:
        page.page.goto(f"{open_server.url}/console#jobs")
        rows = page.page.locator("#job-table tbody tr")
        expect(rows).to_have_count(50)
        expect(rows.first).to_contain_text("queued-51")
        expect(page.page.locator("#key-dialog")).to_be_hidden()
        expect(page.page.get_by_role("button", name="Forget API key")).to_be_hidden()
        older = page.page.get_by_role("button", name="Show older jobs")
        older.click()
        expect(rows).to_have_count(52)
        expect(rows.last).to_contain_text("queued-0")
        expect(older).to_be_hidden()  # no page after these
        page.page.get_by_role("navigation", name="Screens").get_by_role("link", name="Models").click()
        expect(page.page.locator("#model-list")).to_contain_text("No models yet")


# ---------------------------------------------------------------------------------------- batches

BATCH_ROWS = 30


def upload(client: httpx.Client, name: str, content: bytes) -> dict:
    response = client.post("/v1/files", files={"file": (name, content)}, data={"purpose": "batch"})
    assert response.status_code == 200, response.text
    return response.json()


def start_batch(client: httpx.Client, name: str, content: bytes, **options) -> dict:
    file = upload(client, name, content)
    response = client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/predict", **options})
    assert response.status_code == 200, response.text
    return response.json()


def batch_row(page: RecordedPage, batch_id: str) -> Locator:
    return page.page.locator(f'#batch-table tr[data-batch-id="{batch_id}"]')


def test_a_csv_batch_runs_on_screen_to_completion_and_its_results_download(
        page: RecordedPage, client: httpx.Client, versions: list[dict], train_examples: list[dict],
        test_examples: list[dict]) -> None:
    texts = [example["text"] for example in train_examples + test_examples][:BATCH_ROWS]
    rows = [["id", "text"]] + [[f"row-{n}", text] for n, text in enumerate(texts)]
    open_console(page, "batches")
    page.page.select_option("#batch-model", MODEL)  # waits for the model list
    page.page.set_input_files("#batch-file", files=[csv_file(rows, "tickets.csv")])
    page.page.get_by_role("button", name="Run batch").click()
    row = page.page.locator("#batch-table tbody tr.submitted")
    expect(row).to_have_count(1)
    batch_id = row.get_attribute("data-batch-id")
    expect(row).to_contain_text("tickets.csv")  # the input file's name (GET /v1/files/{id})
    # Polled while unfinished: the row reaches `completed` with no reload.
    expect(row.locator(".badge.status")).to_have_text("completed", timeout=LONG)
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert (batch["status"], batch["model_name"], batch["input_format"]) == ("completed", MODEL, "csv"), batch
    assert batch["request_counts"] == {"total": BATCH_ROWS, "completed": BATCH_ROWS, "failed": 0}, batch
    expect(row.locator("td.counts")).to_have_text(f"{BATCH_ROWS} completed · 0 failed · {BATCH_ROWS} in all")
    expect(row.locator("progress")).to_have_attribute("value", str(BATCH_ROWS))
    expect(row.locator("progress")).to_have_attribute("max", str(BATCH_ROWS))
    expect(row.locator("td.progress")).to_contain_text(f"{BATCH_ROWS} / {BATCH_ROWS} texts")
    expect(row).to_contain_text(f"{MODEL} ({batch['model_versions'][MODEL]})")  # the version it was pinned to
    expect(row.get_by_role("button", name=f"Cancel batch {batch_id}")).to_have_count(0)
    assert batch["error_file_id"] is None
    expect(row.get_by_role("button", name="Download errors")).to_have_count(0)
    assert page.page.evaluate("state.batchTimer") is None  # nothing unfinished: no more polling
    page.screenshot("batches")
    with page.page.expect_download() as downloading:
        row.get_by_role("button", name="Download results").click()
    download = downloading.value
    assert download.suggested_filename == "tickets_results.csv"
    content = Path(download.path()).read_bytes()
    assert content == client.get(f"/v1/files/{batch['output_file_id']}/content").content
    results = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    assert [(result["id"], result["text"]) for result in results] == [tuple(fields) for fields in rows[1:]]
    pinned = f"{MODEL}:{batch['model_versions'][MODEL]}"
    expected = client.post("/v1/predict", json={"model_name": pinned, "texts": texts}).json()["predictions"]
    assert [result["label"] for result in results] == [prediction["label"] for prediction in expected]
    assert not [url for url in page.requests if KEY in url]  # the download sent the key as a header


def test_a_batch_with_failed_rows_offers_its_errors_file(page: RecordedPage, client: httpx.Client,
                                                         versions: list[dict]) -> None:
    content = b"id,text\na,my card has not arrived\nb,\nc,what is the exchange rate\n"
    batch = start_batch(client, "mixed.csv", content, model_name=MODEL)
    open_console(page, "batches")
    row = batch_row(page, batch["id"])
    expect(row.locator(".badge.status")).to_have_text("completed", timeout=LONG)
    expect(row.locator("td.counts")).to_have_text("2 completed · 1 failed · 3 in all")
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["error_file_id"], done
    with page.page.expect_download() as downloading:
        row.get_by_role("button", name="Download errors").click()
    assert downloading.value.suggested_filename == "mixed_errors.csv"
    errors = list(csv.DictReader(io.StringIO(Path(downloading.value.path()).read_text(encoding="utf-8"))))
    assert [error["id"] for error in errors] == ["b"] and errors[0]["error"], errors
    expect(row.get_by_role("button", name="Download results")).to_have_count(1)


def test_a_failed_batch_shows_its_errors(page: RecordedPage, client: httpx.Client, versions: list[dict]) -> None:
    batch = start_batch(client, "no-text.csv", b"id,body\n1,hello\n", model_name=MODEL)
    open_console(page, "batches")
    row = batch_row(page, batch["id"])
    expect(row.locator(".badge.status")).to_have_text("failed", timeout=LONG)
    failed = client.get(f"/v1/batches/{batch['id']}").json()
    error = failed["errors"]["data"][0]
    expect(row.locator("td.error-text")).to_contain_text(f"{error['code']}: {error['message']}")
    expect(row.get_by_role("button", name=f"Cancel batch {batch['id']}")).to_have_count(0)
    expect(row.get_by_role("button", name="Download results")).to_have_count(0)


def test_a_running_batch_shows_its_rate_and_is_cancelled_from_the_console(
        page: RecordedPage, client: httpx.Client, versions: list[dict], train_examples: list[dict]) -> None:
    """A real batch of 4,000 rows, run BATCH_CHUNK_TEXTS (5) texts at a time: the console shows it running
    (its rate, time left and shard), cancels it, and offers what it finished."""
    rows = [["id", "text"], *([f"r{n}", train_examples[n % len(train_examples)]["text"]] for n in range(4000))]
    table = "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows).encode()
    batch = start_batch(client, "many.csv", table, model_name=MODEL)
    open_console(page, "batches")
    row = batch_row(page, batch["id"])
    expect(row.locator(".badge.status")).to_have_text("in_progress", timeout=LONG)
    expect(row.locator("td.progress .rate")).to_contain_text("texts/s", timeout=LONG)
    expect(row.locator("td.progress .rate")).to_contain_text(" left · shard ")
    page.screenshot("batches-running")
    row.get_by_role("button", name=f"Cancel batch {batch['id']}").click()
    expect(row.locator(".badge.status")).to_have_text("cancelled", timeout=60_000)
    expect(row.get_by_role("button", name=f"Cancel batch {batch['id']}")).to_have_count(0)
    expect(row.get_by_role("button", name="Download results")).to_be_visible()
    final = client.get(f"/v1/batches/{batch['id']}").json()
    assert final["status"] == "cancelled" and 0 < final["request_counts"]["completed"] < 4000, final
    expect(row.locator("td.counts")).to_have_text(f"{final['request_counts']['completed']} completed · 0 failed · "
                                                  f"4000 in all")
    assert page.page.evaluate("state.batchTimer") is None  # nothing unfinished: no more polling


def test_a_batch_table_needs_a_model_before_anything_is_sent(page: RecordedPage, versions: list[dict]) -> None:
    open_console(page, "batches")
    page.page.select_option("#batch-model", "")  # none: OpenAI request lines
    page.page.set_input_files("#batch-file", files=[csv_file([["text"], ["hello"]], "plain.csv")])
    sent = len(page.requests)
    page.page.get_by_role("button", name="Run batch").click()
    expect(page.page.locator("#batch-error")).to_contain_text("plain.csv is a table of texts: choose the model")
    assert not [url for url in page.requests[sent:] if url.endswith(("/v1/files", "/v1/batches"))]  # the POSTs


def test_an_unfinished_batch_is_cancelled_from_the_console(browser: Browser, open_server: LiveServer) -> None:
    """The open server runs no batch worker: a batch stays `validating` until cancelled (`cancelling`
    then, as no worker is there to put its results aside)."""
    line = {"custom_id": "first", "method": "POST", "url": "/v1/predict",
            "body": {"model_name": "anything", "texts": ["hello"]}}
    with checked_page(browser, open_server.url) as page:
        page.page.goto(f"{open_server.url}/console#batches")
        expect(page.page.locator("#batch-model")).to_have_value("")  # no model: OpenAI request lines
        page.page.set_input_files("#batch-file", files=[{
            "name": "requests.jsonl", "mimeType": "application/jsonl", "buffer": (json.dumps(line) + "\n").encode()}])
        page.page.get_by_role("button", name="Run batch").click()
        row = page.page.locator("#batch-table tbody tr.submitted")
        expect(row.locator(".badge.status")).to_have_text("validating")
        expect(row).to_contain_text("requests.jsonl")
        expect(row).to_contain_text("(OpenAI lines)")
        batch_id = row.get_attribute("data-batch-id")
        assert page.page.evaluate("state.batchTimer") is not None  # polled while unfinished
        row.get_by_role("button", name=f"Cancel batch {batch_id}").click()
        expect(row.locator(".badge.status")).to_have_text("cancelling")
        expect(row).to_contain_text("cancelling…")
        expect(row.get_by_role("button", name=f"Cancel batch {batch_id}")).to_have_count(0)
        assert open_server.client().get(f"/v1/batches/{batch_id}").json()["status"] == "cancelling"


# --------------------------------------------------------------------------------------- keyboard

def focus_by_tab(page: RecordedPage, text: str, backwards: bool = False) -> None:
    """Tab (or Shift+Tab) until the focused element says `text`; as many presses as the page has
    focusable elements at most (the model list grows with the models other tests trained)."""
    for _ in range(page.page.locator("a[href], button, select, input, textarea, [tabindex]").count() + 1):
        page.page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if page.page.evaluate("document.activeElement.textContent.trim()") == text:
            return
    pytest.fail(f"the keyboard never reached {text!r}")


def test_the_screens_are_reached_with_the_keyboard(page: RecordedPage, versions: list[dict]) -> None:
    open_console(page)
    focus_by_tab(page, "Jobs")
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#screen-jobs")).to_be_visible()
    assert page.page.evaluate("document.activeElement.id") == "jobs-title"  # focus moves to the screen
    focus_by_tab(page, "Models", backwards=True)
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#screen-models")).to_be_visible()
    expect(page.page.locator("table.versions tbody tr").first).to_be_visible()  # loaded before tabbing on
    focus_by_tab(page, "Show")  # the versions' buttons are next in line
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#version-detail h3").first).to_be_focused()
