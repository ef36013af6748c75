"""The HTTP layer's pure parts: error shape, API-key parsing, the corrected OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

from fewshot.api.auth import is_open_path, presented_key
from fewshot.api.errors import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, normalise
from fewshot.bentoml_fixes.openapi_document import correct_document


def test_bentoml_validation_errors_name_every_field() -> None:
    body = json.dumps({"error": "2 validation errors for Input", "detail": [
        {"type": "missing", "loc": ["model_name"], "msg": "Field required"},
        {"type": "value_error", "loc": ["examples", 3, "text"], "msg": "Value error, must not be empty"},
    ]}).encode()
    shaped = normalise(400, body)
    assert shaped["error"] == "model_name: Field required; examples[3].text: must not be empty"
    assert len(shaped["detail"]) == 2


def test_other_error_bodies_take_the_one_shape() -> None:
    assert normalise(404, b'[{"error": "gone"}]') == {"error": "gone", "detail": None}
    assert normalise(405, b"Method Not Allowed") == {"error": "Method Not Allowed", "detail": None}
    assert normalise(422, b'{"detail": "bad"}') == {"error": "bad", "detail": None}
    assert normalise(404, b"") == {"error": "not found", "detail": None}
    assert normalise(503, b'{"error": "An unexpected error"}')["error"] == UNAVAILABLE_MESSAGE
    # Internal details never reach the client.
    assert normalise(500, b"Traceback (most recent call last): ...") == {"error": INTERNAL_MESSAGE, "detail": None}


def test_presented_key_accepts_header_or_bearer() -> None:
    assert presented_key([(b"x-api-key", b"k1")]) == b"k1"
    assert presented_key([(b"authorization", b"Bearer k2")]) == b"k2"
    assert presented_key([(b"authorization", b"bearer  k3 ")]) == b"k3"
    assert presented_key([(b"authorization", b"Basic abc")]) is None
    assert presented_key([]) is None


def test_only_health_probes_docs_and_the_consoles_page_are_open() -> None:
    for path in ("/health", "/livez", "/readyz", "/healthz", "/", "/docs", "/docs.json", "/schema.json",
                 "/static_content/swagger-ui.css", "/console", "/assets/console.js"):
        assert is_open_path(path), path
    for path in ("/metrics", "/v1/train", "/v1/predict", "/v1/jobs/x", "/v1/models/m", "/health/x", "/consoles",
                 "/console/v1/models", "/docs/v1/models", "/documents"):
        assert not is_open_path(path), path


def test_document_correction() -> None:
    spec = {"paths": {
        "/v1/train": {"post": {"responses": {200: {"description": "ok"}, 400: {"$ref": "x"}, 500: {}},
                               "requestBody": {"content": {}}}},
        "/health": {"get": {"responses": {"200": {"description": "ok"}, "422": {}}}},
        "/v1/jobs/{job_id}": {"get": {"responses": {"200": {"description": "ok"}, "422": {}}},
                              "parameters": []},
    }, "components": {"schemas": {"InvalidArgument": {}, "HTTPValidationError": {}}}}
    fixed = correct_document(spec, {("/v1/train", "post"): (202, (400,)), ("/v1/jobs/{job_id}", "get"): (200, (404,))})
    train = fixed["paths"]["/v1/train"]["post"]
    assert set(train["responses"]) == {"202", "400", "401", "413", "500"}  # a body: MAX_REQUEST_BYTES
    assert train["requestBody"]["required"]
    assert train["security"] == [{"APIKeyHeader": []}, {"BearerAuth": []}]
    health = fixed["paths"]["/health"]["get"]
    assert set(health["responses"]) == {"200"} and "security" not in health
    assert set(fixed["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]) == {"200", "401", "404", "500"}
    schemas = fixed["components"]["schemas"]
    assert "ErrorResponse" in schemas and "InvalidArgument" not in schemas and "HTTPValidationError" not in schemas
    assert spec["paths"]["/v1/train"]["post"]["responses"][200]  # the input is left as it was


def test_client_errors_are_logged_as_one_warning_line_without_the_input() -> None:
    import logging
    import sys

    from pydantic import ValidationError

    from fewshot.api.inference_schemas import PredictRequest
    from fewshot.bentoml_fixes.worker_logging import ClientErrorsWithoutTracebacks

    def record_for(error: BaseException) -> logging.LogRecord:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
        return logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]",
                                 ("/v1/predict", "POST"), exc_info)

    try:
        PredictRequest.model_validate({"model_name": "m", "texts": ["secret text", "   "]})
    except ValidationError as invalid:
        rejected = record_for(invalid)
    assert ClientErrorsWithoutTracebacks().filter(rejected)
    assert (rejected.levelname, rejected.exc_info) == ("WARNING", None)
    assert rejected.getMessage() == "rejected /v1/predict [POST]: 400: 1 validation error(s) for PredictRequest"
    assert "secret text" not in logging.Formatter().format(rejected)

    crashed = record_for(RuntimeError("a real bug"))
    assert ClientErrorsWithoutTracebacks().filter(crashed)
    assert crashed.levelname == "ERROR" and crashed.exc_info is not None  # server errors keep their traceback


def test_allow_lists_every_method_of_every_matching_path_template() -> None:
    from fewshot.bentoml_fixes.allow_header import allowed_methods

    paths = {"/v1/models/{model_name}": {"get": {}, "delete": {}, "parameters": []}, "/v1/models": {"get": {}},
             "/v1/jobs/{job_id}/cancel": {"post": {}}}
    assert allowed_methods(paths, "/v1/models/a:b") == ["DELETE", "GET"]
    assert allowed_methods(paths, "/v1/models") == ["GET"]
    assert allowed_methods(paths, "/v1/jobs/x/cancel") == ["POST"]
    assert allowed_methods(paths, "/v1/models/a/b") == [] and allowed_methods(paths, "/v1/jobs/x") == []
    # A path documented as it is wins over the templates it matches too.
    assert allowed_methods({**paths, "/v1/models/import": ["post"]}, "/v1/models/import") == ["POST"]


def test_the_bentoml_workarounds_refuse_an_untested_bentoml_version() -> None:
    import pytest

    from fewshot.bentoml_fixes import WRITTEN_FOR_BENTOML, UntestedBentoML, check_bentoml_version

    check_bentoml_version()  # the pinned version is installed
    with pytest.raises(UntestedBentoML, match=r"bentoml 1\.5\.0 is installed.*fewshot/bentoml_fixes/"):
        check_bentoml_version("1.5.0")
    requirements = (Path(__file__).resolve().parents[1] / "requirements.txt").read_text()
    assert f"bentoml=={WRITTEN_FOR_BENTOML}\n" in requirements  # the pin and the fixes move together


def test_only_the_serving_routes_skip_bentomls_api_dispatch(tmp_path: Path) -> None:
    """Direct dispatch is for routes where BentoML's would only parse, await and serialise: not for
    /v1/train (it takes the context to answer 202/429), nor any FastAPI route."""
    import os
    import subprocess
    import sys

    script = ("import json, service\n"
              "from fewshot.bentoml_fixes.direct_dispatch import direct_routes\n"
              "print(json.dumps(sorted(direct_routes(service.Gateway))))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, env={**os.environ, "MODEL_PATH": str(tmp_path)}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["/v1/embeddings", "/v1/predict"]
