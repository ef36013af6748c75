"""End to end: the official `openai` client (PyPI) against a live server's /v1/embeddings, the way
users point it at TEI, Infinity or vLLM: `OpenAI(base_url="http://host:8000/v1", api_key=KEY)`.
Both encodings, a string and a list, `dimensions`, pinned versions, token usage, errors; and the
API's own body keeps its own shape beside it.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
from transformers import AutoTokenizer

from fewshot.base_models import resolve_base_model
from harness.fixtures import BASE_MODEL
from harness.live_server import LiveServer, wait_for_job

pytestmark = pytest.mark.e2e

KEY = "openai-compatible-key"
TEXTS = ["My card has not arrived yet", "How do I top up by bank transfer?", "what's the euro exchange rate"]


@pytest.fixture(scope="module")
def server(live_server_factory) -> LiveServer:
    return live_server_factory("openai", API_KEY=KEY)


@pytest.fixture(scope="module")
def version(server: LiveServer, train_examples: list[dict]) -> str:
    client = server.client(**{"X-API-Key": KEY})
    response = client.post("/v1/train", json={"model_name": "intents", "base_model": BASE_MODEL,
                                              "examples": train_examples, "strategy": "head"})
    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    return job["model_version"]


@pytest.fixture(scope="module")
def client(server: LiveServer, version: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def ours(server: LiveServer, version: str) -> np.ndarray:
    """The same texts' embeddings in the API's own shape."""
    response = httpx.post(f"{server.url}/v1/embeddings", json={"model_name": "intents", "texts": TEXTS},
                          headers={"X-API-Key": KEY}, timeout=60)
    assert response.status_code == 200 and set(response.json()) == {"embeddings", "tokens", "truncated"}
    return np.asarray(response.json()["embeddings"], dtype=np.float32)


def vectors(response) -> np.ndarray:
    assert response.object == "list" and [item.index for item in response.data] == list(range(len(response.data)))
    assert all(item.object == "embedding" for item in response.data)
    # The client decodes base64 itself only when it chose it (no encoding_format given): else it is a str.
    return np.asarray([np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") if isinstance(item.embedding, str)
                       else item.embedding for item in response.data], dtype=np.float32)


def test_the_client_default_base64_gives_the_same_vectors_as_our_shape(client: openai.OpenAI,
                                                                       ours: np.ndarray) -> None:
    response = client.embeddings.create(model="intents", input=TEXTS)  # numpy installed: base64 on the wire
    assert response.model == "intents"
    np.testing.assert_array_equal(vectors(response), ours)


def test_floats_a_single_string_and_a_pinned_version(client: openai.OpenAI, ours: np.ndarray, version: str) -> None:
    as_floats = client.embeddings.create(model="intents", input=TEXTS, encoding_format="float")
    np.testing.assert_array_equal(vectors(as_floats), ours)
    single = client.embeddings.create(model=f"intents:{version}", input=TEXTS[1], user="someone")
    assert single.model == f"intents:{version}" and len(single.data) == 1
    np.testing.assert_allclose(vectors(single)[0], ours[1], rtol=0, atol=1e-6)  # alone: padded differently


def test_base64_on_the_wire_is_little_endian_float32(server: LiveServer, ours: np.ndarray) -> None:
    response = httpx.post(f"{server.url}/v1/embeddings", timeout=60, headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "intents", "input": TEXTS, "encoding_format": "base64"})
    assert response.status_code == 200
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in response.json()["data"]]
    np.testing.assert_array_equal(np.stack(decoded), ours)


def test_dimensions_keep_the_first_components_renormalised(client: openai.OpenAI, ours: np.ndarray) -> None:
    for encoding in ("float", "base64"):
        cut = vectors(client.embeddings.create(model="intents", input=TEXTS, dimensions=64, encoding_format=encoding))
        assert cut.shape == (len(TEXTS), 64)
        expected = ours[:, :64] / np.linalg.norm(ours[:, :64], axis=1, keepdims=True)
        np.testing.assert_allclose(cut, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    assert vectors(client.embeddings.create(model="intents", input=TEXTS, dimensions=384)).shape == (3, 384)


def test_usage_counts_the_tokens_the_model_read(client: openai.OpenAI) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(BASE_MODEL).location)
    expected = sum(len(tokenizer(text)["input_ids"]) for text in TEXTS)
    usage = client.embeddings.create(model="intents", input=TEXTS).usage
    assert usage.prompt_tokens == usage.total_tokens == expected
    # A text longer than the model reads counts what it read: the model's 256 tokens, special ones included.
    long_text = " ".join(["card"] * 1000)
    assert len(tokenizer(long_text)["input_ids"]) > 1000
    truncated = client.embeddings.create(model="intents", input=[long_text, TEXTS[0]]).usage
    read = 256 + len(tokenizer(TEXTS[0])["input_ids"])
    assert truncated.prompt_tokens == truncated.total_tokens == read


def test_errors_reach_the_client_with_our_message(server: LiveServer, client: openai.OpenAI) -> None:
    """Our one error shape, {"error": message, "detail": ...}: the client raises the status's
    exception with our `error` message as its `.body` (openai 3.x puts only an OpenAI-shaped
    {"error": {"message": ...}} into the exception's text)."""
    cases = [
        (openai.NotFoundError, {"model": "nothing", "input": "hello"}, "model: no model named 'nothing'"),
        (openai.BadRequestError, {"model": "intents", "input": "hello", "dimensions": 385},
         "dimensions: must be at most 384, the embedding size of model 'intents'; got 385"),
        (openai.BadRequestError, {"model": "intents", "input": ["  "]},
         "input[0]: must not be empty or only whitespace"),
        (openai.BadRequestError, {"model": "intents", "input": []}, "input: List should have at least 1 item"),
        (openai.BadRequestError, {"model": "intents", "input": "hello", "encoding_format": "int8"},
         "encoding_format: Input should be 'float' or 'base64'"),
    ]
    for error, arguments, message in cases:
        with pytest.raises(error) as caught:
            client.embeddings.create(**arguments)
        assert message in caught.value.body, (arguments, caught.value.body)
        assert set(caught.value.response.json()) == {"error", "detail"}
    wrong_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong_key.embeddings.create(model="intents", input="hello")
    assert "missing or invalid API key" in caught.value.body


@pytest.mark.parametrize(("body", "message"), [
    ({"model_name": "intents", "input": "x"}, "not fields of both (got model_name, input)"),
    ({"model": "intents"}, "input: field required"),
    ({"input": "x"}, "model: field required"),
    ({}, "model_name, texts: field required (or OpenAI's shape: model and input)"),
    ({"model": "intents", "input": [1, 2, 3]}, "input[0]: Input should be a valid string"),
])
def test_mixed_or_incomplete_shapes_are_400_naming_the_fields(server: LiveServer, version: str, body: dict,
                                                             message: str) -> None:
    response = httpx.post(f"{server.url}/v1/embeddings", json=body, headers={"X-API-Key": KEY}, timeout=60)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_the_openapi_document_describes_both_shapes(server: LiveServer) -> None:
    operation = httpx.get(f"{server.url}/docs.json").json()["paths"]["/v1/embeddings"]["post"]
    shapes = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [sorted(shape["required"]) for shape in shapes] == [["model_name", "texts"], ["input", "model"]]
    answers = operation["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"]
    assert {"$ref": "#/components/schemas/OpenAIEmbeddingsResponse"} in answers
