"""End to end with API_KEY set: every documented route is closed without the key, open with it."""

from __future__ import annotations

import http.client
import re

import bentoml
import httpx
import pytest

from fewshot.records.jobs import SqliteJobStore
from harness.live_server import LiveServer

pytestmark = pytest.mark.e2e

KEY = "s3cret-key-for-tests"
OPEN = {"/health", "/livez", "/readyz", "/healthz"}
BODIES = {
    "/v1/train": {"model_name": "m", "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]},
    "/v1/predict": {"model_name": "m", "texts": ["hello"]},
    "/v1/embeddings": {"model_name": "m", "texts": ["hello"]},
    "/v1/explain": {"model_name": "m", "texts": ["hello"]},
    "/v1/models/import": {"model_name": "m", "source": "some-org/some-setfit-model"},
    "/v1/models/{model_name}/examples": {"examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]},
    "/v1/models/{model_name}/delete-examples": {"ids": ["some-id"]},
    "/v1/models/{model_name}/suggest": {"texts": ["hello"]},
    "/v1/models/{model_name}/feedback": {"text": "hello", "label": "x"},
    "/v1/batches": {"input_file_id": "file-" + "0" * 32, "endpoint": "/v1/predict"},
}
UPLOADS = {"/v1/files": {"files": {"file": ("requests.jsonl", b"{}\n")}, "data": {"purpose": "batch"}}}
"""Routes that take a multipart upload instead of a JSON body."""


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    # No trainer needed: nothing here waits for a job to run.
    return live_server_factory("auth", API_KEY=KEY, EMBEDDED_TRAINER="false", MAX_QUEUED_JOBS="5")


def documented_routes(server: LiveServer) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/docs.json").json()
    return [(method, path) for path, item in spec["paths"].items() for method in item
            if method in {"get", "post", "put", "patch", "delete"}]


def call(server: LiveServer, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    url = server.url + path.replace("{job_id}", "some-job").replace("{model_name}", "some-model")
    if method == "post" and path in UPLOADS:
        return httpx.request(method, url, headers=headers, timeout=60, **UPLOADS[path])
    return httpx.request(method, url, headers=headers, json=BODIES.get(path), timeout=60)


def test_docs_stay_open_and_list_every_route(server: LiveServer) -> None:
    for path in ("/", "/docs.json", "/schema.json"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path
    routes = documented_routes(server)
    for expected in [("post", "/v1/train"), ("post", "/v1/predict"), ("post", "/v1/embeddings"),
                     ("post", "/v1/explain"), ("get", "/v1/jobs/{job_id}"), ("get", "/v1/models/{model_name}"),
                     ("get", "/health"),
                     ("get", "/metrics"), ("delete", "/v1/models/{model_name}"), ("get", "/v1/jobs"),
                     ("get", "/v1/models"), ("post", "/v1/jobs/{job_id}/cancel"), ("post", "/v1/models/import"),
                     ("get", "/v1/models/{model_name}/download"), ("get", "/v1/models/{model_name}/examples"),
                     ("post", "/v1/models/{model_name}/examples"), ("post", "/v1/models/{model_name}/retrain"),
                     ("delete", "/v1/models/{model_name}/examples/{example_id}"),
                     ("post", "/v1/models/{model_name}/delete-examples"),
                     ("post", "/v1/models/{model_name}/suggest"), ("post", "/v1/models/{model_name}/feedback"),
                     ("get", "/v1/models/{model_name}/suspects"),
                     ("delete", "/v1/models/{model_name}/prediction-log"), ("post", "/v1/files"),
                     ("get", "/v1/files/{file_id}/content"), ("post", "/v1/batches"),
                     ("post", "/v1/batches/{batch_id}/cancel")]:
        assert expected in routes


def test_every_protected_route_needs_the_key(server: LiveServer) -> None:
    for method, path in documented_routes(server):
        if path in OPEN:
            assert call(server, method, path, {}).status_code == 200, path
            continue
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": f"Bearer {KEY}x"}, {"X-API-Key": ""}):
            response = call(server, method, path, headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert set(response.json()) == {"error", "detail"}
            assert KEY not in response.text
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            response = call(server, method, path, headers)
            # past the key check: answered (429: the queue, 5 jobs with no trainer, filled up by the job routes)
            assert response.status_code in {200, 202, 404, 429}, (path, headers, response.text)


def test_metrics_take_the_key_as_a_bearer_token_like_prometheus_or_as_x_api_key(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        response = httpx.get(f"{server.url}/metrics", headers=headers)
        assert response.status_code == 200 and "fewshot_request_total" in response.text, headers


def test_the_pages_and_their_assets_are_open(server: LiveServer) -> None:
    """The docs page (Swagger UI's assets included) and the console load without a key; the console
    then asks for it."""
    for page_path in ("/", "/docs", "/console"):
        page = httpx.get(f"{server.url}{page_path}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page_path
        assets = re.findall(r'(?:src|href)="((?:static_content|assets)/[^"]+)"', page.text)
        assert any(asset.endswith(".js") for asset in assets), page.text[:2000]
        for asset in assets:
            assert httpx.get(f"{server.url}/{asset}").status_code == 200, asset
    for method, path, status in (("GET", "/assets/missing.js", 404), ("POST", "/console", 405)):
        response = httpx.request(method, f"{server.url}{path}")
        assert response.status_code == status and set(response.json()) == {"error", "detail"}, response.text


def raw_get(server: LiveServer, raw_path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (clients normalise `..` away before sending)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("GET", raw_path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("raw_path", [
    "/assets/../v1/models", "/assets/%2e%2e/v1/models", "/assets/..%2fv1%2fmodels", "/assets/%2E%2E/%2E%2E/etc/passwd",
    "/assets/../../../../etc/passwd", "/assets/../service.py", "/assets/..%2f..%2fpyproject.toml",
    "/assets//etc/passwd", "/assets/%2fetc%2fpasswd"])
def test_the_open_assets_prefix_leads_nowhere_else(server: LiveServer, raw_path: str) -> None:
    """/assets/ is open without the key: dot segments, encoded or not, must neither reach a closed route
    nor a file outside the pages' assets."""
    status, body = raw_get(server, raw_path)
    assert status in (400, 404), (status, body[:300])
    for leaked in (b'"models"', b"root:", b"import bentoml", b"[project]"):
        assert leaked not in body, (raw_path, body[:300])
    assert raw_get(server, "/assets/console.js")[0] == 200  # the control: the prefix does serve its files


def test_bentoml_client_with_token_gets_through(server: LiveServer) -> None:
    for token, status in ((KEY, 404), ("wrong", 401)):  # 404: past auth, the model does not exist
        with bentoml.SyncHTTPClient(server.url, token=token) as client, \
                pytest.raises(bentoml.exceptions.BentoMLException) as caught:
            client.predict({"model_name": "some-model", "texts": ["hello"]})
        assert caught.value.error_code == status


def test_a_full_queue_answers_429_and_queues_nothing_more(server: LiveServer) -> None:
    """No trainer runs here, so every accepted job stays pending (other tests queue some: this one fills the
    queue up from whatever they left); the 6th pending one is refused."""
    headers = {"X-API-Key": KEY}
    statuses = []
    for _ in range(6):
        response = httpx.post(f"{server.url}/v1/train", json=BODIES["/v1/train"], headers=headers, timeout=60)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {202}, statuses
    assert "MAX_QUEUED_JOBS=5" in response.json()["error"] and response.headers["retry-after"] == "30"
    again = httpx.post(f"{server.url}/v1/train", json=BODIES["/v1/train"], headers=headers, timeout=60)
    assert again.status_code == 429
    assert len(SqliteJobStore(server.model_path / "queue" / "jobs.db").with_status("pending")) == 5


def test_the_key_never_appears_in_logs_or_job_records(server: LiveServer) -> None:
    """Runs last: every test above sent the key (right and wrong variants) through this server."""
    headers = {"X-API-Key": KEY}
    submitted = httpx.post(f"{server.url}/v1/train", json=BODIES["/v1/train"], headers=headers, timeout=60)
    job_ids = [submitted.json()["job_id"]] if submitted.status_code == 202 else []
    records = [httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).text for job_id in job_ids]
    store = SqliteJobStore(server.model_path / "queue" / "jobs.db")
    records += [record.model_dump_json() for status in ("pending", "running") for record in store.with_status(status)]
    assert records  # the full queue's jobs at least
    logs = server.all_logs()
    assert "method=POST,path=/v1/train" in logs  # the access log was written, and read here
    for text in (*records, logs):
        assert KEY not in text
