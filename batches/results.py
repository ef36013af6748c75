"""A batch's shard results → its output and error files, in its input's format, a shard at a time.

OpenAI lines and JSONL tables: the shards' JSONL concatenated in order. CSV: the same rows with a
header (lists, such as `embedding` and `labels`, as JSON). Parquet: typed columns (`embedding` a list
of float32), one row group per shard. Memory holds one shard's rows at most.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fewshot.records.batches import BatchRecord

PREDICT_COLUMNS = ["id", "text", "label", "score", "labels", "abstained", "tokens", "truncated"]
EMBEDDING_COLUMNS = ["id", "text", "embedding", "tokens", "truncated"]
ERROR_COLUMNS = ["id", "text", "error"]
SUFFIXES = {"openai": ".jsonl", "jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _columns(record: BatchRecord, errors: bool) -> list[str]:
    if errors:
        return ERROR_COLUMNS
    return PREDICT_COLUMNS if record.endpoint == "/v1/predict" else EMBEDDING_COLUMNS


def _parquet_schema(record: BatchRecord, errors: bool):
    import pyarrow as pa

    if errors:
        return pa.schema([("id", pa.string()), ("text", pa.string()), ("error", pa.string())])
    if record.endpoint == "/v1/predict":
        return pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("score", pa.float64()),
                          ("labels", pa.list_(pa.string())), ("abstained", pa.bool_()), ("tokens", pa.int64()),
                          ("truncated", pa.bool_())])
    return pa.schema([("id", pa.string()), ("text", pa.string()), ("embedding", pa.list_(pa.float32())),
                      ("tokens", pa.int64()), ("truncated", pa.bool_())])


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else value)


def write(record: BatchRecord, shard_files: list[Path], target: Path, errors: bool) -> int:
    """Write the shards' lines (`shard_files`, in order) to `target`; the number of lines written."""
    count = 0
    if record.input_format in ("openai", "jsonl"):
        with open(target, "wb") as out:
            for path in shard_files:
                with open(path, "rb") as shard:
                    shutil.copyfileobj(shard, out)
        for path in shard_files:
            with open(path, "rb") as shard:
                count += sum(1 for _ in shard)
        return count
    if record.input_format == "csv":
        columns = _columns(record, errors)
        with open(target, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for path in shard_files:
                for row in _rows(path):
                    writer.writerow([_cell(row.get(column)) for column in columns])
                    count += 1
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(record, errors)
    with pq.ParquetWriter(target, schema) as out:
        for path in shard_files:
            rows = [{**row, "id": None if row.get("id") is None else str(row["id"]),
                     "text": None if row.get("text") is None else str(row["text"])} for row in _rows(path)]
            if rows:
                out.write_table(pa.Table.from_pylist(rows, schema=schema))
                count += len(rows)
    return count
