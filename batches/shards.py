"""One shard computed: its lines validated and answered exactly as the online routes would answer them.

Each line is validated with the route's own request model (fewshot/api/inference_schemas.py) and
answered with the route's own answer (fewshot/api/inference.py `prediction_answer`,
`embeddings_answer`), so a line's `response.body` is what POST /v1/predict or /v1/embeddings gives
for that body. In between, every text of the shard runs through the serving engine sorted by length
(no padding to a long neighbour), BATCH_CHUNK_TEXTS at a time (512: ~0.3 s of MiniLM int8 on 2
cores for short texts); after each chunk the worker reports its
progress and looks whether the batch was asked to stop. A line that fails (malformed, unknown model,
a text over the limits) is an error line with its `custom_id`: the batch goes on.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response

from fewshot.api.errors import describe_validation_errors, error_body
from fewshot.api.inference import embeddings_answer, prediction_answer
from fewshot.api.inference_schemas import EmbeddingsRequest, PredictRequest
from fewshot.api.schemas import NonBlankText
from fewshot.records.batches import BatchRecord
from fewshot.serving.items import TextItem
from fewshot.store import split_reference

logger = logging.getLogger("fewshot.batches")

TEXT = TypeAdapter(NonBlankText)
"""A table row's text, by the rule of a request's `texts[i]`."""

Engine = Callable[[Sequence[TextItem]], list[Any]]
"""fewshot.serving.engine's predict_items or embed_items over the worker's loaded models."""


@dataclass
class Line:
    """One request of the shard: an OpenAI line, or a table row (a request of one text)."""

    n: int
    custom_id: str | None = None
    row_id: Any = None
    text: Any = None
    request: PredictRequest | EmbeddingsRequest | None = None
    items: list[TextItem] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    failure: tuple[int, dict[str, Any]] | None = None
    """(status, error body): the request was refused as its route would refuse it."""
    error: dict[str, str] | None = None
    """OpenAI's line `error` ({code, message}): the line is not a request at all."""

    @property
    def answered(self) -> bool:
        return self.failure is not None or self.error is not None or (
            bool(self.items) and all(result is not None for result in self.results))


@dataclass
class ShardOutcome:
    requests: int
    completed: int
    failed: int
    texts: int
    stopped: bool


def _request_model(endpoint: str) -> type[PredictRequest] | type[EmbeddingsRequest]:
    return PredictRequest if endpoint == "/v1/predict" else EmbeddingsRequest


def _plain(error: ValidationError) -> list[dict[str, Any]]:
    return error.errors(include_url=False, include_input=False)


def _invalid(error: ValidationError, rename: tuple[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    message = describe_validation_errors(_plain(error))
    if rename is not None:
        message = message.replace(*rename)
    return 400, error_body(message)


def parse(entry: dict[str, Any], record: BatchRecord) -> Line:
    """A shard entry → a Line with its items, or its failure."""
    model = _request_model(record.endpoint)
    if "raw" not in entry:  # a table row: one text, the batch's model
        line = Line(n=entry["n"], row_id=entry.get("id"), text=entry.get("text"))
        if "problem" in entry:
            line.failure = 400, error_body(entry["problem"])
            return line
        # The route's rules for a text, without validating the batch's model name (checked when the batch
        # was made) and the request around it again for every row: a million rows spent ~10 µs each on it.
        try:
            text = TEXT.validate_python(line.text)
        except ValidationError as error:
            line.failure = 400, error_body(f"text: {describe_validation_errors(_plain(error))}")
            return line
        line.request = model.model_construct(model_name=record.model_name, texts=[text])
        line.items = [TextItem.model_construct(model_name=pinned(record.model_name, record.model_versions),
                                               text=text)]
        line.results = [None]
        return line
    else:
        line = Line(n=entry["n"])
        try:
            parsed = json.loads(entry["raw"])
        except ValueError as error:
            line.error = {"code": "invalid_json", "message": f"line {line.n}: not JSON ({error})"}
            return line
        if not isinstance(parsed, dict) or not isinstance(parsed.get("custom_id"), str):
            line.error = {"code": "invalid_request", "message": f"line {line.n}: custom_id: must be a string"}
            return line
        line.custom_id = parsed["custom_id"]
        problem = ("method: must be POST" if parsed.get("method") != "POST" else
                   f"url: must be the batch's endpoint {record.endpoint!r}" if parsed.get("url") != record.endpoint
                   else "body: must be a JSON object" if not isinstance(parsed.get("body"), dict) else None)
        if problem:
            line.error = {"code": "invalid_request", "message": f"line {line.n}: {problem}"}
            return line
        try:
            line.request = model.model_validate(parsed["body"])
        except ValidationError as error:
            line.failure = _invalid(error)
            return line
    line.items = line.request.items()
    for item in line.items:
        item.model_name = pinned(item.model_name, record.model_versions)
    line.results = [None] * len(line.items)
    return line


def pinned(reference: str, versions: dict[str, str]) -> str:
    """`name` → `name:<the version served when the batch was planned>`: one version for the whole batch."""
    name, version = split_reference(reference)
    return f"{name}:{versions[name]}" if version is None and name in versions else reference


def compute(lines: list[Line], engine: Engine, report: Callable[[int], None], stop: Callable[[], bool],
            chunk_texts: int) -> bool:
    """Run every text of the lines, shortest first; False if asked to stop before all were run."""
    pending = sorted(((line, position) for line in lines for position in range(len(line.items))),
                     key=lambda pair: len(pair[0].items[pair[1]].text))
    done = 0
    for start in range(0, len(pending), chunk_texts):
        chunk = pending[start:start + chunk_texts]
        try:
            results = engine([line.items[position] for line, position in chunk])
        except Exception as error:  # a broken version must not stop the batch: its lines fail, and say why
            logger.exception("inference failed for %d texts of a batch", len(chunk))
            for line, _ in chunk:
                line.failure = 500, error_body(f"inference failed: {type(error).__name__}: {error}")
        else:
            for (line, position), result in zip(chunk, results, strict=True):
                line.results[position] = result
        done += len(chunk)
        report(done)
        if done < len(pending) and stop():
            return False
    return True


def _answer(line: Line, endpoint: str) -> tuple[int, dict[str, Any]]:
    if line.failure is not None:
        return line.failure
    if endpoint == "/v1/predict":
        answer: BaseModel | Response = prediction_answer(line.request, line.results)  # type: ignore[arg-type]
    else:
        answer = embeddings_answer(line.request, line.results)  # type: ignore[arg-type]
    if isinstance(answer, Response):
        return answer.status_code, json.loads(answer.body)
    return 200, answer.model_dump(mode="json")


def _openai_line(line: Line, endpoint: str) -> tuple[bool, dict[str, Any]]:
    request_id = f"batch_req_{uuid.uuid4().hex}"
    if line.error is not None:
        return False, {"id": request_id, "custom_id": line.custom_id, "response": None, "error": line.error}
    status, body = _answer(line, endpoint)
    return status == 200, {"id": request_id, "custom_id": line.custom_id,
                           "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}


def _table_row(line: Line, endpoint: str) -> tuple[bool, dict[str, Any]]:
    result = line.results[0] if line.failure is None and line.results else None
    if result is not None and result.found and not result.text_refused and not getattr(result, "error", None):
        # What the route answers, read from the result (prediction_answer copies these fields as they are):
        # building the route's response and its JSON for one row cost more than the row's other work.
        if endpoint == "/v1/predict":
            return True, {"id": line.row_id, "text": line.text, "label": result.label, "score": result.score,
                          "labels": result.labels, "abstained": result.abstained, "tokens": result.tokens,
                          "truncated": result.truncated}
        return True, {"id": line.row_id, "text": line.text, "embedding": result.floats(), "tokens": result.tokens,
                      "truncated": result.truncated}
    status, body = _answer(line, endpoint)
    if status != 200:
        return False, {"id": line.row_id, "text": line.text, "error": body.get("error")}
    if endpoint == "/v1/predict":
        prediction = body["predictions"][0]
        return True, {"id": line.row_id, "text": line.text, "label": prediction.get("label"),
                      "score": prediction.get("score"), "labels": prediction.get("labels"),
                      "abstained": prediction.get("abstained"), "tokens": prediction.get("tokens"),
                      "truncated": prediction.get("truncated")}
    return True, {"id": line.row_id, "text": line.text, "embedding": body["embeddings"][0],
                  "tokens": body["tokens"][0], "truncated": body["truncated"][0]}


def _read(entries_path: Path, record: BatchRecord) -> list[Line]:
    with open(entries_path, encoding="utf-8") as handle:
        return [parse(json.loads(entry), record) for entry in handle]


def _write(lines: list[Line], record: BatchRecord, out_path: Path, err_path: Path, stopped: bool) -> ShardOutcome:
    write = _openai_line if record.input_format == "openai" else _table_row
    requests = completed = texts = 0
    with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
        for line in lines:
            if not line.answered:  # stopped before all its texts ran: not run, not counted
                continue
            ok, written = write(line, record.endpoint)
            (out if ok else err).write(json.dumps(written, ensure_ascii=False) + "\n")
            requests += 1
            completed += ok
            texts += len(line.items)
    return ShardOutcome(requests=requests, completed=completed, failed=requests - completed, texts=texts,
                        stopped=stopped)


def run(entries_path: Path, record: BatchRecord, engine: Engine, out_path: Path, err_path: Path,
        report: Callable[[int], None], stop: Callable[[], bool], chunk_texts: int) -> ShardOutcome:
    """Compute the shard whose entries are in `entries_path`; write its result and error lines (JSONL)."""
    lines = _read(entries_path, record)
    finished = compute(lines, engine, report, stop, chunk_texts)
    return _write(lines, record, out_path, err_path, stopped=not finished)


def give_up(entries_path: Path, record: BatchRecord, out_path: Path, err_path: Path, why: str) -> ShardOutcome:
    """Every request of the shard as an error line (status 500, `why`), computing nothing: for a shard
    whose workers died on it again and again (e.g. killed for memory), so the batch still ends."""
    lines = _read(entries_path, record)
    for line in lines:
        if line.error is None and line.failure is None:
            line.failure = 500, error_body(why)
    return _write(lines, record, out_path, err_path, stopped=False)
