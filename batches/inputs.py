"""A batch's input file, read a row at a time, and cut into shard files.

Two kinds of input:
- OpenAI's request lines (JSONL): `{"custom_id", "method": "POST", "url", "body"}`, each body a
  /v1/predict or /v1/embeddings request naming its own model;
- a table of texts with the batch's `model_name`: CSV (a header with `text`, optionally `id`), JSONL
  (one object per line with `text`, optionally `id`) or Parquet (columns `text`, optionally `id`).

Either way the file is read once, streaming, and written out as shard files of at most
BATCH_SHARD_TEXTS texts, one JSON object per line (`n`: the line or row; `raw`: an OpenAI line;
`id`, `text`: a table row): memory holds one row, whatever the file's size. Nothing is validated
here beyond what finding the rows needs: a bad line becomes an error line when its shard runs
(bytes that are not UTF-8 are read as U+FFFD).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewshot.records.batches import InputFormat

# A text may be up to TEXT_CHARS_CEILING characters: far above csv's default field limit (131,072).
csv.field_size_limit(2**31 - 1)

PARQUET_ROWS_PER_READ = 4096


class InputRejected(Exception):
    """The file cannot be read as its batch's kind (no `text` column, not Parquet): the batch fails."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line


@dataclass
class Plan:
    shards: int = 0
    requests: int = 0
    texts: int = 0
    models: set[str] = field(default_factory=set)
    """The model references the lines name (OpenAI lines), to pin to their served versions."""


def _openai_entries(path: Path) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    with open(path, encoding="utf-8", errors="replace", newline="\n") as lines:
        for number, read in enumerate(lines, start=1):
            line = read.rstrip("\r\n")
            if not line.strip():
                continue
            texts, model = 1, None
            try:
                body = json.loads(line).get("body")
                if isinstance(body, dict):
                    given = body.get("texts", body.get("input"))
                    texts = len(given) if isinstance(given, list) and given else 1
                    reference = body.get("model_name", body.get("model"))
                    model = reference if isinstance(reference, str) else None
            except (ValueError, AttributeError):
                pass  # an error line when its shard runs
            yield {"n": number, "raw": line}, texts, model


def _csv_entries(path: Path) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "text" not in columns:
            raise InputRejected("missing_column", f"input file: a CSV table needs a `text` column in its header "
                                                  f"line; it has {columns}", line=1)
        for row_number, row in enumerate(reader):
            yield {"n": row_number, "id": row["id"] if "id" in columns else row_number, "text": row["text"]}, 1, None


def _jsonl_rows(path: Path) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    row_number = 0
    with open(path, encoding="utf-8", errors="replace", newline="\n") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                problem = f"line {row_number + 1}: not JSON ({error})"
                yield {"n": row_number, "id": row_number, "problem": problem}, 1, None
            else:
                if isinstance(row, dict):
                    yield {"n": row_number, "id": row.get("id", row_number), "text": row.get("text")}, 1, None
                else:
                    yield {"n": row_number, "id": row_number,
                           "problem": f"line {row_number + 1}: must be a JSON object with `text`"}, 1, None
            row_number += 1


def _parquet_entries(path: Path) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow's errors (ArrowInvalid, OSError) name what it found
        raise InputRejected("invalid_file", f"input file: not a Parquet file ({error})") from None
    columns = table.schema_arrow.names
    if "text" not in columns:
        raise InputRejected("missing_column", f"input file: a Parquet table needs a `text` column; it has {columns}")
    wanted = ["text", "id"] if "id" in columns else ["text"]
    row_number = 0
    for chunk in table.iter_batches(batch_size=PARQUET_ROWS_PER_READ, columns=wanted):
        for row in chunk.to_pylist():
            yield {"n": row_number, "id": row.get("id", row_number), "text": row["text"]}, 1, None
            row_number += 1


def entries(path: Path, input_format: InputFormat) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    """(shard entry, its texts, the model it names) for each request of the file, in order."""
    readers = {"openai": _openai_entries, "csv": _csv_entries, "jsonl": _jsonl_rows, "parquet": _parquet_entries}
    return readers[input_format](path)


def split(path: Path, input_format: InputFormat, shard_texts: int, shard_path: Any) -> Plan:
    """Write the file's requests as shard files (`shard_path(k)`) of at most `shard_texts` texts (a
    request with more stays whole)."""
    plan = Plan()
    out: io.TextIOWrapper | None = None
    in_shard = 0
    try:
        for entry, texts, model in entries(path, input_format):
            if out is None or (in_shard and in_shard + texts > shard_texts):
                if out is not None:
                    out.close()
                out = open(shard_path(plan.shards), "w", encoding="utf-8")  # noqa: SIM115 - closed above or below
                plan.shards += 1
                in_shard = 0
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            in_shard += texts
            plan.requests += 1
            plan.texts += texts
            if model is not None:
                plan.models.add(model)
    finally:
        if out is not None:
            out.close()
    return plan
