"""MAX_REQUEST_BYTES through a real `bentoml serve`: a body over the cap is a 413 in the error shape,
naming the limit, on BentoML's APIs and on the mounted routes alike, whether its Content-Length says so
or a body sent without one (chunked) grows past it; a body under the cap reaches its route whole."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from harness.live_server import LiveServer

pytestmark = pytest.mark.e2e

CAP = 4096
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    # No trainer needed: nothing here runs a job.
    return live_server_factory("body-limit", MAX_REQUEST_BYTES=str(CAP), EMBEDDED_TRAINER="false")


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """The body as an iterator: httpx sends it without Content-Length, in chunks."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def test_a_body_over_the_cap_is_a_413_naming_the_limit(server: LiveServer) -> None:
    texts = [f"text number {n} " + "x" * 500 for n in range(10)]
    over = {  # each over 4,096 bytes
        "/v1/predict": {"model_name": "m", "texts": texts},  # a BentoML API, dispatched directly
        "/v1/train": {"model_name": "m", "examples": [{"text": t, "label": "a"} for t in texts]},  # a BentoML API
        "/v1/models/m/suggest": {"texts": texts},  # a mounted FastAPI route
        "/v1/models/m/examples": {"examples": [{"text": t, "label": "a"} for t in texts]},
    }
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for path, payload in over.items():
            body = json.dumps(payload).encode()
            declared = http.post(path, content=body, headers=JSON)
            assert declared.status_code == 413, (path, declared.text)
            assert declared.json() == {"error": f"request body: {len(body)} bytes is more than MAX_REQUEST_BYTES="
                                                f"{CAP}", "detail": None}
            streamed = http.post(path, content=chunked(body), headers=JSON)
            assert streamed.status_code == 413, (path, streamed.text)
            assert streamed.json()["error"].startswith(f"request body: more than MAX_REQUEST_BYTES={CAP} bytes "
                                                       "(sent without Content-Length; refused after ")
        # Far past the cap: refused on its Content-Length, and the client still reads the answer.
        assert http.post("/v1/predict", content=b" " * 5_000_000, headers=JSON).status_code == 413
        assert http.post("/v1/predict", content=chunked(b" " * 5_000_000, 65536), headers=JSON).status_code == 413
        assert http.get("/v1/models/m/examples").status_code == 404  # nothing over the cap was added


def test_a_body_under_the_cap_reaches_its_route_whole(server: LiveServer) -> None:
    examples = {"examples": [{"text": "hello there", "label": "greeting"}, {"text": "bye now", "label": "farewell"}]}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        added = http.post("/v1/models/small/examples", content=chunked(json.dumps(examples).encode(), 7),
                          headers=JSON)
        assert added.status_code == 200 and added.json()["total"] == 2, added.text
        assert http.post("/v1/models/small/examples", json=examples).json()["total"] == 2  # duplicates now
        predict = json.dumps({"model_name": "nobody", "texts": ["hi"]}).encode()
        for sent in (predict, chunked(predict, 5)):  # read whole by the route: its own 404, not a parse error
            answer = http.post("/v1/predict", content=sent, headers=JSON)
            assert answer.status_code == 404 and answer.json()["error"].startswith("model_name: no model"), answer.text
        start, end = b'{"model_name": "nobody", "texts": ["', b'"]}'
        exactly = start + b"x" * (CAP - len(start) - len(end)) + end  # exactly the cap: allowed
        assert len(exactly) == CAP and http.post("/v1/predict", content=exactly, headers=JSON).status_code == 404
