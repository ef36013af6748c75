"""The batch records and files on disk, without a server: uploads and their expiry, claims of shards
(a dead worker's is taken over, a live one's never), the input readers and the results writers."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batches import inputs, results, shards
from fewshot.records.batches import HOST, BatchRecord, BatchStore, ShardDone
from fewshot.records.files import FileStore, FileTooLarge


def record(**fields) -> BatchRecord:
    return BatchRecord(**{"id": "batch_0123", "endpoint": "/v1/predict", "input_file_id": "file-x",
                          "completion_window": "24h", "input_format": "csv", "created_at": 1, "expires_at": 2,
                          **fields})


def test_an_upload_over_the_limit_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path, keep_days=1)
    with pytest.raises(FileTooLarge, match="MAX_FILE_BYTES=10"):
        store.save([b"12345", b"678901"], "a.jsonl", "batch", max_bytes=10)
    assert list(tmp_path.iterdir()) == [] and store.list() == []
    kept = store.save([b"12345"], "a.jsonl", "batch", max_bytes=10)
    assert store.get(kept.id) == kept and store.path(kept.id).read_bytes() == b"12345"
    assert store.get("../../etc/passwd") is None and not store.delete("file-../x")


def test_files_expire_after_their_days(tmp_path: Path) -> None:
    store = FileStore(tmp_path, keep_days=1)
    kept = store.save([b"x"], "a.csv", "batch", max_bytes=10)
    assert kept.expires_at == kept.created_at + 86400
    assert store.delete_expired(now=kept.expires_at - 1) == []
    assert store.delete_expired(now=kept.expires_at) == [kept.id]
    assert store.get(kept.id) is None and not store.path(kept.id).exists()


def test_a_shard_is_held_by_one_live_worker_and_taken_from_a_dead_one(tmp_path: Path) -> None:
    batches = BatchStore(tmp_path, claim_seconds=60)
    batches.create(record())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    dead_worker = f"{HOST}:{int(dead.stdout)}"
    assert batches.claim("batch_0123", 0, dead_worker) == 1
    assert batches.claim("batch_0123", 0, "me:2") == 2  # its process is gone: taken, a second attempt
    assert batches.claim("batch_0123", 0, "other-machine:3") is None  # held by a live claim (fresh heartbeat)
    batches.finish_shard("batch_0123", 0, {}, ShardDone(requests=1, completed=1, failed=0, texts=1, worker="me:2",
                                                        attempts=2, seconds=0.1))
    assert batches.claim("batch_0123", 0, "me:2") is None  # done: nobody takes it again


def test_a_silent_worker_on_another_machine_loses_its_shard(tmp_path: Path) -> None:
    batches = BatchStore(tmp_path, claim_seconds=1)
    batches.create(record())
    assert batches.claim("batch_0123", 3, "elsewhere:10") == 1
    assert batches.claim("batch_0123", 3, "here:11") is None
    path = batches.shard_path("batch_0123", 3, "claim")
    claim = json.loads(path.read_text())
    path.write_text(json.dumps({**claim, "heartbeat": claim["heartbeat"] - 1.5}))  # its last report 1.5 s ago
    assert batches.claim("batch_0123", 3, "here:11") == 2


def test_updates_are_atomic_and_cannot_name_other_directories(tmp_path: Path) -> None:
    batches = BatchStore(tmp_path, claim_seconds=60)
    batches.create(record())
    changed = batches.update("batch_0123", lambda current: current.model_copy(update={"status": "in_progress"}))
    assert changed.status == "in_progress" == batches.get("batch_0123").status
    assert batches.update("batch_0123", lambda current: None).status == "in_progress"
    assert batches.get("batch_../../x") is None and batches.update("../x", lambda current: current) is None


def test_shards_hold_at_most_the_texts_asked_and_a_request_stays_whole(tmp_path: Path) -> None:
    lines = [{"custom_id": str(i), "method": "POST", "url": "/v1/predict",
              "body": {"model_name": "m" if i % 2 else "n:3", "texts": ["a"] * (i + 1)}} for i in range(5)]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(map(json.dumps, lines)) + "\n\n{broken\n")
    plan = inputs.split(source, "openai", 4, lambda shard: tmp_path / f"{shard}.in")
    sizes = [[len(json.loads(json.loads(line)["raw"]).get("body", {}).get("texts", [])) if "{broken" not in line else 1
              for line in (tmp_path / f"{shard}.in").read_text().splitlines()] for shard in range(plan.shards)]
    assert sizes == [[1, 2], [3], [4], [5], [1]]  # 5 texts in one request: a shard of its own
    assert (plan.requests, plan.texts, plan.models) == (6, 16, {"m", "n:3"})


def test_a_csv_table_needs_a_text_column_and_keeps_its_ids(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    source.write_text('id,text\n7,"a, quoted\nline"\n8,b\n')
    assert [entry for entry, _, _ in inputs.entries(source, "csv")] == [
        {"n": 0, "id": "7", "text": "a, quoted\nline"}, {"n": 1, "id": "8", "text": "b"}]
    source.write_text("id,body\n1,x\n")
    with pytest.raises(inputs.InputRejected, match="needs a `text` column"):
        list(inputs.entries(source, "csv"))


def test_parquet_rows_are_read_in_pieces_with_their_ids(tmp_path: Path) -> None:
    source = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(5000)], "id": list(range(5000))}), source)
    read = [entry for entry, _, _ in inputs.entries(source, "parquet")]
    assert len(read) == 5000 and read[4999] == {"n": 4999, "id": 4999, "text": "t4999"}
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(inputs.InputRejected, match="not a Parquet file"):
        list(inputs.entries(tmp_path / "bad.parquet", "parquet"))


def test_results_are_written_in_the_inputs_format(tmp_path: Path) -> None:
    shard = tmp_path / "0.out"
    shard.write_text(json.dumps({"id": 1, "text": "a", "label": "x", "score": 0.5, "labels": None, "abstained": None,
                                 "tokens": 3, "truncated": False}) + "\n")
    embedded = tmp_path / "1.out"
    embedded.write_text(json.dumps({"id": "e", "text": "b", "embedding": [0.5, 0.25], "tokens": 3,
                                    "truncated": False}) + "\n")
    assert results.write(record(input_format="csv"), [shard, shard], tmp_path / "r.csv", errors=False) == 2
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert rows[1] == {"id": "1", "text": "a", "label": "x", "score": "0.5", "labels": "", "abstained": "",
                       "tokens": "3", "truncated": "False"}
    assert results.write(record(input_format="parquet", endpoint="/v1/embeddings"), [embedded],
                         tmp_path / "r.parquet", errors=False) == 1
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.to_pylist() == [{"id": "e", "text": "b", "embedding": [0.5, 0.25], "tokens": 3, "truncated": False}]


def test_a_shard_given_up_answers_every_request_with_the_reason(tmp_path: Path) -> None:
    entries = tmp_path / "0.in"
    entries.write_text("".join(json.dumps({"n": n, "id": f"r{n}", "text": "hello"}) + "\n" for n in range(3)))
    outcome = shards.give_up(entries, record(model_name="m"), tmp_path / "out", tmp_path / "err", "died 3 times")
    assert (outcome.requests, outcome.completed, outcome.failed) == (3, 0, 3)
    assert [json.loads(line) for line in (tmp_path / "err").read_text().splitlines()] == [
        {"id": f"r{n}", "text": "hello", "error": "died 3 times"} for n in range(3)]
