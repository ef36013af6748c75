"""Model and job lifecycle over HTTP against a real server, in both deployment modes: cancel
(pending and running), versions listed and pinned, top-k scores, deletion (one version, the
latest, every version), and the job listing with filters and pages.

Tests share one server per mode and run in file order; each also passes run alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from harness.fixtures import BASE_MODEL, LONG_FINE_TUNING
from harness.live_server import (
    LiveServer,
    fine_tuning_lasting,
    listed_versions,
    wait_for_fine_tuning,
    wait_for_job,
    wait_for_log,
)

pytestmark = pytest.mark.e2e

TWO_LABELS = {"card_arrival", "exchange_rate"}


# No background refresh during the tests: a deletion must reach the inference service by itself.
NO_REFRESH = {"MODEL_REFRESH_SECONDS": "3600"}


@pytest.fixture(scope="module", params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, live_server_factory, trainer_factory) -> Iterator[LiveServer]:
    """One mode's server, stopped when that mode's tests end: the other mode's does not run beside it."""
    if request.param == "embedded":
        server = live_server_factory("lifecycle", **NO_REFRESH)
        yield server
        server.close()
        return
    redis_url = request.getfixturevalue("fresh_redis_database")()
    server = live_server_factory("lifecycle-redis", REDIS_URL=redis_url, EMBEDDED_TRAINER="false", **NO_REFRESH)
    # One trainer, as the embedded mode has: a second job stays pending while the first runs.
    trainer = trainer_factory(server, "trainer").wait_until_consuming()
    yield server
    trainer.stop()
    server.close()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpx.Client:
    return server.client()


def submit(client: httpx.Client, model: str, examples: list[dict[str, str]], **options) -> str:
    response = client.post("/v1/train", json={"model_name": model, "base_model": BASE_MODEL,
                                              "examples": examples, "num_iterations": 2, **options})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def train(client: httpx.Client, model: str, examples: list[dict[str, str]], **options) -> dict:
    job = wait_for_job(client, submit(client, model, examples, **options), {"completed", "failed", "cancelled"})
    assert job["status"] == "completed", job
    return job


def predict(client: httpx.Client, model: str, **options) -> httpx.Response:
    return client.post("/v1/predict", json={"model_name": model, "texts": ["My card is lost! What can I do?"],
                                            **options})


def test_cancel_stops_a_running_job_and_ends_a_pending_one_at_once(server: LiveServer, client: httpx.Client,
                                                                    train_examples) -> None:
    slow = submit(client, "slow", train_examples, **LONG_FINE_TUNING)
    queued = submit(client, "queued", train_examples)
    assert wait_for_fine_tuning(client, slow)["status"] == "running"

    pending = client.post(f"/v1/jobs/{queued}/cancel")
    assert pending.status_code == 200, pending.text
    assert pending.json()["status"] == "cancelled" and pending.json()["finished_at"]

    running = client.post(f"/v1/jobs/{slow}/cancel")
    assert running.status_code == 200, running.text
    assert running.json()["status"] == "running" and running.json()["cancel_requested"] is True
    asked = time.monotonic()
    stopped = wait_for_job(client, slow, {"completed", "failed", "cancelled"}, timeout=90)
    assert stopped["status"] == "cancelled", stopped
    assert time.monotonic() - asked < 60  # at its next step: long before the minutes its steps would take
    assert stopped["step"] < stopped["total_steps"] and "no model was registered" in stopped["note"]
    assert client.get("/v1/models/slow").status_code == 404
    # Its queued task reached the trainer once the running job had stopped, and did nothing.
    wait_for_log(server, f"job {queued}: not ours to run (status cancelled); skipped", timeout=60)
    assert client.get(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
    assert client.get("/v1/models/queued").status_code == 404
    again = client.post(f"/v1/jobs/{slow}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert client.post("/v1/jobs/no-such-job/cancel").status_code == 404


@pytest.fixture(scope="module")
def versions(client: httpx.Client, train_examples) -> dict[str, str]:
    """life:v1 on four labels, life:v2 on two (so the two are told apart), then other:v1: heads on
    MiniLM (seconds each), as versions, listings and pins do not depend on how a version was trained."""
    four = train(client, "life", train_examples, strategy="head")
    two = train(client, "life", [e for e in train_examples if e["label"] in TWO_LABELS], strategy="head")
    other = train(client, "other", train_examples, strategy="head")
    return {"v1": four["model_version"], "v2": two["model_version"], "other": other["model_version"],
            "v1_job": four["job_id"]}


def test_a_finished_job_cannot_be_cancelled(client: httpx.Client, versions: dict[str, str]) -> None:
    refused = client.post(f"/v1/jobs/{versions['v1_job']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["error"].startswith("job_id: ") and "completed" in refused.json()["error"]


def test_models_list_every_version_newest_first(client: httpx.Client, versions: dict[str, str]) -> None:
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    models = listing.json()["models"]
    assert [m["model_name"] for m in models] == ["other", "life"]  # most recently trained first
    life = models[1]["versions"]
    assert [v["model_version"] for v in life] == [versions["v2"], versions["v1"]]
    assert [v["tag"] for v in life] == [f"life:{versions['v2']}", f"life:{versions['v1']}"]
    assert [sorted(v["labels"]) for v in life] == [sorted(TWO_LABELS), sorted(life[1]["labels"])]
    assert len(life[1]["labels"]) == 4
    assert all(v["created_at"] and v["num_examples"] > 0 and "accuracy" in v for v in life)


def test_a_version_is_addressed_as_name_colon_version(client: httpx.Client, versions: dict[str, str]) -> None:
    assert client.get(f"/v1/models/life:{versions['v1']}").json()["model_version"] == versions["v1"]
    assert client.get("/v1/models/life").json()["model_version"] == versions["v2"]
    assert client.get("/v1/models/life:latest").json()["model_version"] == versions["v2"]
    missing = client.get("/v1/models/life:nope")
    assert missing.status_code == 404 and "no version 'nope'" in missing.json()["error"]
    bad = client.get("/v1/models/life:NOPE")
    assert bad.status_code == 400 and bad.json()["error"].startswith("model_name: must be a model name or")


def test_predict_top_k_scores_and_pinned_versions(client: httpx.Client, versions: dict[str, str]) -> None:
    plain = predict(client, "life").json()["predictions"][0]
    assert set(plain) == {"text", "label", "score", "tokens", "truncated"}  # without top_k: the original shape

    latest = predict(client, "life", top_k=3).json()["predictions"][0]
    assert len(latest["scores"]) == 2 and {s["label"] for s in latest["scores"]} == TWO_LABELS  # v2: 2 labels
    pinned = predict(client, f"life:{versions['v1']}", top_k=3).json()["predictions"][0]
    scores = pinned["scores"]
    assert len(scores) == 3
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert (scores[0]["label"], scores[0]["score"]) == (pinned["label"], pinned["score"])
    assert sum(s["score"] for s in scores) <= 1 + 1e-6
    assert pinned["label"] == "lost_or_stolen_card"  # only v1 knows this label

    embedded = client.post("/v1/embeddings", json={"model_name": f"life:{versions['v1']}", "texts": ["x"]})
    assert embedded.status_code == 200 and len(embedded.json()["embeddings"][0]) == 384
    assert predict(client, "life:nope").status_code == 404
    assert predict(client, "life", top_k=0).status_code == 400


def test_deleting_the_latest_version_serves_the_previous_at_once(client: httpx.Client,
                                                                  versions: dict[str, str]) -> None:
    deleted = client.delete(f"/v1/models/life:{versions['v2']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": [f"life:{versions['v2']}"], "examples_deleted": 0}  # one version: set kept
    # No wait: the gateway told the inference service, which re-read the store.
    latest = predict(client, "life", top_k=4).json()["predictions"][0]
    assert len(latest["scores"]) == 4 and latest["label"] == "lost_or_stolen_card"
    assert client.get("/v1/models/life").json()["model_version"] == versions["v1"]
    assert predict(client, f"life:{versions['v2']}").status_code == 404


def test_deleting_a_model_stops_serving_it_at_once_and_leaves_others(client: httpx.Client,
                                                                     versions: dict[str, str]) -> None:
    present = [f"life:{version['model_version']}" for version in listed_versions(client, "life")]
    assert f"life:{versions['v1']}" in present  # and v2, unless the test above deleted it
    held = client.get("/v1/models/life/examples").json()["total"]
    deleted = client.delete("/v1/models/life")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": present, "examples_deleted": held} and held
    assert client.get("/v1/models/life/examples").status_code == 404  # the set went with the model
    gone = predict(client, "life")
    assert gone.status_code == 404 and "no model named 'life'" in gone.json()["error"]
    assert client.get("/v1/models/life").status_code == 404
    assert [m["model_name"] for m in client.get("/v1/models").json()["models"]] == ["other"]
    assert predict(client, "other").status_code == 200
    assert client.delete("/v1/models/life").status_code == 404
    assert client.delete("/v1/models/Life").status_code == 400


def test_jobs_list_newest_first_with_filters_and_pages(client: httpx.Client, versions: dict[str, str]) -> None:
    """Reads the jobs of `versions` (three completed) and any others on the server (run in file order: the
    cancel test's two, cancelled)."""
    listing = client.get("/v1/jobs")
    assert listing.status_code == 200
    jobs = listing.json()["jobs"]
    assert [j["model_name"] for j in jobs if j["model_name"] in ("life", "other")] == ["other", "life", "life"]
    assert listing.json()["next_cursor"] is None
    created = [j["created_at"] for j in jobs]
    assert created == sorted(created, reverse=True)

    life = client.get("/v1/jobs", params={"model_name": "life"}).json()["jobs"]
    assert [j["job_id"] for j in life] == [j["job_id"] for j in jobs if j["model_name"] == "life"]
    assert len(life) == 2
    for status in ("completed", "cancelled"):
        filtered = client.get("/v1/jobs", params={"status": status}).json()["jobs"]
        assert [j["job_id"] for j in filtered] == [j["job_id"] for j in jobs if j["status"] == status]

    seen, cursor = [], None
    while True:  # pages of two
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [j["job_id"] for j in jobs]


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"limit": "x"}, "limit"),
    ({"model_name": "Bad Name"}, "model_name"), ({"cursor": "no-such-job"}, "cursor"), ({"colour": "red"}, "colour"),
])
def test_bad_job_queries_are_400_naming_the_parameter(client: httpx.Client, params: dict, field: str) -> None:
    response = client.get("/v1/jobs", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}: "), response.json()


def test_python_client_covers_the_lifecycle(server: LiveServer, versions: dict[str, str], train_examples) -> None:
    from fewshot.client import FewshotClient, FewshotError, JobFailed

    other = f"other:{versions['other']}"
    with FewshotClient(server.url) as client:
        # what the other tests left of "life" is theirs: this one reads "other", its own
        listed = {m.model_name: [v.model_version for v in m.versions] for m in client.models().models}
        assert listed["other"] == [versions["other"]], listed
        page = client.jobs(model_name="other", limit=1)
        assert page.jobs[0].model_version == versions["other"] and page.next_cursor is None
        top = client.predict(other, ["where is my card?"], top_k=2).predictions[0]
        assert top.scores[0].label == top.label and len(top.scores) == 2
        with pytest.raises(FewshotError) as refused:
            client.cancel(page.jobs[0].job_id)
        assert refused.value.status == 409

        job = client.train("doomed", train_examples, base_model=BASE_MODEL, **LONG_FINE_TUNING)
        assert client.cancel(job.job_id).status in ("cancelled", "running")
        with pytest.raises(JobFailed) as cancelled:
            client.wait(job.job_id, poll_seconds=0.3, timeout=120)
        assert cancelled.value.job.status == "cancelled"

        assert client.delete_model(other) == [other]
        with pytest.raises(FewshotError) as gone:
            client.model("other")
        assert gone.value.status == 404


def test_a_wrong_method_is_405_listing_every_method_of_the_path(client: httpx.Client) -> None:
    for method in ("PUT", "OPTIONS"):
        response = client.request(method, "/v1/models/life")
        assert response.status_code == 405
        assert response.headers["allow"] == "DELETE, GET"
        assert response.json()["error"] == "Method Not Allowed"


def test_head_strategy_trains_in_seconds_with_per_label_metrics(client: httpx.Client, train_examples) -> None:
    job = wait_for_job(client, submit(client, "quick", train_examples, strategy="head"),
                       {"completed", "failed", "cancelled"})
    assert job["status"] == "completed" and job["comparison"] is None and job["warnings"] == []
    model = client.get("/v1/models/quick").json()
    assert model["strategy"] == "head" and model["eval_source"] == "holdout"
    assert model["training_duration_seconds"] > 0  # how fast: bench/, not here
    metrics = model["label_metrics"]
    assert set(metrics) == set(model["labels"]) and len(metrics) == 4
    assert sum(m["support"] for m in metrics.values()) == model["eval_num_examples"] > 0
    assert all(0 <= m[key] <= 1 for m in metrics.values() for key in ("precision", "recall", "f1"))
    # Accuracy is the support-weighted recall: the two are computed on the same predictions.
    weighted_recall = sum(m["recall"] * m["support"] for m in metrics.values()) / model["eval_num_examples"]
    assert abs(weighted_recall - model["accuracy"]) < 1e-3
    assert predict(client, "quick").status_code == 200


@pytest.fixture(scope="module")
def tiny(server: LiveServer, tiny_base_model) -> str:
    """A base model that fine-tunes in a fraction of MiniLM's time, where the labels are not the point."""
    return tiny_base_model(server.model_path / "base-models")


def test_auto_serves_the_head_first_then_keeps_the_better_model(client: httpx.Client, train_examples,
                                                                tiny: str) -> None:
    # Fine-tuning that lasts ~10 s on this machine, whatever its speed: the head version is read while it runs.
    job_id = submit(client, "auto", train_examples, strategy="auto", base_model=tiny,
                    **fine_tuning_lasting(client, tiny, train_examples, 10))
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").json())["model_version"] is None:
        assert time.monotonic() < deadline and job["status"] in ("pending", "running"), job
        time.sleep(0.1)
    assert job["status"] == "running", job  # the head serves while the body is still fine-tuned
    head_version = job["model_version"]
    assert "fine-tuning now" in job["note"]
    assert predict(client, "auto").status_code == 200
    assert client.get("/v1/models/auto").json()["strategy"] == "head"

    done = wait_for_job(client, job_id, {"completed", "failed", "cancelled"})
    assert done["status"] == "completed", done
    comparison = done["comparison"]
    assert comparison["winner"] in ("head", "setfit")
    assert comparison["head_accuracy"] is not None and comparison["setfit_accuracy"] is not None
    assert (comparison["winner"] == "setfit") == (comparison["setfit_accuracy"] > comparison["head_accuracy"])
    versions = listed_versions(client, "auto")
    served = client.get("/v1/models/auto").json()
    assert served["model_version"] == done["model_version"]
    assert served["comparison"] == comparison  # the version that won says so, whichever it is
    # The note now tells the outcome, no longer "fine-tuning now".
    kept = "the fine-tuned" if comparison["winner"] == "setfit" else "the head-only"
    assert done["note"].startswith(f"{kept} version {done['model_version']} is served: "), done["note"]
    assert comparison["reason"] in done["note"] and "fine-tuning now" not in done["note"]
    if comparison["winner"] == "head":
        assert done["model_version"] == head_version and len(versions) == 1
    else:
        assert [v["strategy"] for v in versions] == ["setfit", "head"]


def test_own_evaluation_examples_and_warnings_about_the_examples(client: httpx.Client, train_examples,
                                                                  test_examples) -> None:
    evaluation = test_examples[:12]
    job = wait_for_job(client, submit(client, "judged", train_examples, strategy="head", eval_examples=evaluation),
                       {"completed", "failed", "cancelled"})
    assert job["status"] == "completed", job
    model = client.get("/v1/models/judged").json()
    assert model["eval_source"] == "eval_examples"
    assert model["eval_num_examples"] == len(evaluation) and model["num_examples"] == len(train_examples)

    unknown = client.post("/v1/train", json={"model_name": "judged", "examples": train_examples,
                                             "eval_examples": [{"text": "hi", "label": "greeting"}]})
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("eval_examples: labels must be")
    both = client.post("/v1/train", json={"model_name": "judged", "examples": train_examples,
                                          "eval_examples": evaluation, "holdout_fraction": 0.2})
    assert both.status_code == 400 and both.json()["error"].startswith("eval_examples: cannot be combined")

    lopsided = [e for e in train_examples if e["label"] == "card_arrival"] + [
        next(e for e in train_examples if e["label"] == "top_up_failed")]
    response = client.post("/v1/train", json={"model_name": "lopsided", "base_model": BASE_MODEL,
                                              "examples": lopsided, "strategy": "head"})
    assert response.status_code == 202
    accepted = response.json()["job_id"]
    assert response.json()["warnings"] == client.get(f"/v1/jobs/{accepted}").json()["warnings"]
    warnings = response.json()["warnings"]
    assert any("'top_up_failed' (1)" in w for w in warnings) and any("imbalanced" in w for w in warnings)
    assert wait_for_job(client, accepted, {"completed", "failed", "cancelled"})["status"] == "completed"
    unscored = client.get("/v1/models/lopsided").json()  # a label of 1 example: no hold-out, nothing to score
    assert (unscored["accuracy"], unscored["label_metrics"], unscored["eval_source"]) == (None, None, None)
    assert unscored["eval_num_examples"] == 0 and unscored["num_examples"] == len(lopsided)
