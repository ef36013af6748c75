"""A model's example set: the labelled texts it is trained from, kept as data of their own.

Beside the job records and on the same backends (SQLite in the queue directory by default, Redis
when REDIS_URL is set): the set survives restarts and every trainer and gateway sees the same one.
A text is in a model's set once: adding it again with the same label is a duplicate (reported, not
added), with another label a conflict (reported, the set keeps what it had). Every change is one
transaction (SQLite) or a watched multi-key update (Redis), so two writers never leave half a change.

No HTTP here (an import contract): the API's schemas turn requests into `NewExample`s.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from fewshot.settings import Settings
from fewshot.timestamps import UtcTimestamp, utc_now
from trainers.sqlite_file import SqliteFile

ExampleSource = Literal["train", "added", "template", "feedback", "import"]
EXAMPLE_SOURCES: tuple[ExampleSource, ...] = ("train", "added", "template", "feedback", "import")
"""`template`: made from a label's name (trainers/label_names.py); `feedback`: a correction or a
confirmation of the model's answer (POST /v1/models/{name}/feedback); `import`: reserved."""


@dataclass(frozen=True)
class NewExample:
    """A labelled text to add: `label` (a label, or None: none of the labels) or, multi-label, `labels`."""

    text: str
    label: str | None = None
    labels: tuple[str, ...] | None = None

    @property
    def target(self) -> str | tuple[str, ...] | None:
        return tuple(sorted(self.labels)) if self.labels is not None else self.label


class StoredExample(BaseModel):
    """One example of a model's set."""

    id: str
    text: str
    label: str | None = None
    labels: list[str] | None = None
    """Multi-label sets: every label of the text (sorted); `label` is then None."""
    source: ExampleSource
    added_at: UtcTimestamp

    @property
    def target(self) -> str | tuple[str, ...] | None:
        return tuple(self.labels) if self.labels is not None else self.label

    @property
    def named_labels(self) -> list[str]:
        return list(self.labels) if self.labels is not None else [] if self.label is None else [self.label]

    def as_training_example(self) -> dict[str, object]:
        """As a /v1/train example: `label` or `labels`, in the form the set holds."""
        return {"text": self.text, "labels": self.labels} if self.labels is not None else \
            {"text": self.text, "label": self.label}


class Conflict(BaseModel):
    """A text sent with another label than the set holds for it: the set keeps `existing`."""

    existing: StoredExample
    label: str | None = None
    labels: list[str] | None = None


class AddOutcome(BaseModel):
    added: list[StoredExample]
    duplicates: list[StoredExample]
    """Texts already in the set with the same label: the examples the set holds for them."""
    conflicts: list[Conflict]
    replaced: list[StoredExample] = []
    """With `overrule`: the examples that held another label for a text sent; removed, the sent one added."""
    total: int
    """Examples in the set after the change."""


class UnknownExampleCursor(LookupError):
    """A page was asked for after an example that is not in the set (deleted meanwhile, or never)."""


Target = str | tuple[str, ...] | list[str] | None


def examples_digest(pairs: Iterable[tuple[str, Target]]) -> str:
    """A content hash of labelled texts, in no particular order and each text once (as a set holds
    them; multi-label targets in any label order): which set a version was trained on, and whether
    the set changed since."""
    rows = sorted({json.dumps([text, sorted(target) if isinstance(target, tuple | list) else target],
                              ensure_ascii=False) for text, target in pairs})
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def set_digest(examples: Iterable[StoredExample]) -> str:
    return examples_digest((example.text, example.target) for example in examples)


def _stored(example: NewExample, source: ExampleSource) -> StoredExample:
    return StoredExample(id=uuid.uuid4().hex[:16], text=example.text, label=example.label if example.labels is None
                         else None, labels=sorted(example.labels) if example.labels is not None else None,
                         source=source, added_at=utc_now())


def sort_out(existing: dict[str, StoredExample], examples: Sequence[NewExample],
             source: ExampleSource, overrule: bool = False) -> AddOutcome:
    """What adding `examples` to a set holding `existing` (by text) does: new texts are added (in
    order), a text already there (or earlier in `examples`) with the same label is a duplicate, with
    another label a conflict (`overrule`: the set's example is replaced by the one sent, as a user's
    correction does). `total` is left for the store to fill in."""
    seen = dict(existing)
    added: list[StoredExample] = []
    duplicates: list[StoredExample] = []
    conflicts: list[Conflict] = []
    replaced: list[StoredExample] = []
    for example in examples:
        held = seen.get(example.text)
        if held is not None and overrule and held.target != example.target:
            if held in added:
                added.remove(held)
            else:
                replaced.append(held)
            held = None
        if held is None:
            seen[example.text] = stored = _stored(example, source)
            added.append(stored)
        elif held.target == example.target:
            duplicates.append(held)
        else:
            conflicts.append(Conflict(existing=held, label=example.label if example.labels is None else None,
                                      labels=sorted(example.labels) if example.labels is not None else None))
    return AddOutcome(added=added, duplicates=duplicates, conflicts=conflicts, replaced=replaced, total=0)


class ExampleStore(Protocol):
    def add(self, model: str, examples: Sequence[NewExample], source: ExampleSource,
            replace: bool = False, overrule: bool = False) -> AddOutcome:
        """Add `examples` to the model's set (first emptied when `replace`), as `sort_out` decides."""
        ...

    def page(self, model: str, limit: int, label: str | None = None, after: str | None = None) -> list[StoredExample]:
        """Up to `limit` examples, oldest first, optionally only those with `label`, starting after example
        `after`. Raises UnknownExampleCursor if `after` is not in the set."""
        ...

    def count(self, model: str, label: str | None = None) -> int: ...

    def all(self, model: str) -> list[StoredExample]:
        """The whole set, oldest first."""
        ...

    def delete(self, model: str, ids: Sequence[str]) -> list[str]:
        """Remove these examples; the ids that were in the set."""
        ...

    def drop(self, model: str) -> int:
        """Remove the model's whole set; how many examples it held."""
        ...


class SqliteExampleStore(SqliteFile):
    """A table `examples` in the job records' SQLite file; its `seq` orders a set oldest first."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "CREATE TABLE IF NOT EXISTS examples (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, "
            "id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, labels TEXT NOT NULL, record TEXT NOT NULL, "
            "UNIQUE (model, text))")

    def add(self, model: str, examples: Sequence[NewExample], source: ExampleSource,
            replace: bool = False, overrule: bool = False) -> AddOutcome:
        with self._write() as db:
            if replace:
                db.execute("DELETE FROM examples WHERE model = ?", (model,))
            texts = list({example.text for example in examples})
            existing: dict[str, StoredExample] = {}
            for start in range(0, len(texts), 500):  # SQLite's bound on query parameters
                chunk = texts[start:start + 500]
                rows = db.execute(f"SELECT record FROM examples WHERE model = ? AND text IN "
                                  f"({', '.join('?' * len(chunk))})", (model, *chunk)).fetchall()
                for (record,) in rows:
                    held = StoredExample.model_validate_json(record)
                    existing[held.text] = held
            outcome = sort_out(existing, examples, source, overrule)
            db.executemany("DELETE FROM examples WHERE model = ? AND id = ?",
                           [(model, example.id) for example in outcome.replaced])
            db.executemany("INSERT INTO examples (model, id, text, labels, record) VALUES (?, ?, ?, ?, ?)",
                           [(model, example.id, example.text, json.dumps(example.named_labels),
                             example.model_dump_json()) for example in outcome.added])
            total = db.execute("SELECT COUNT(*) FROM examples WHERE model = ?", (model,)).fetchone()[0]
        return outcome.model_copy(update={"total": total})

    def _where(self, model: str, label: str | None) -> tuple[str, list[object]]:
        if label is None:
            return "model = ?", [model]
        return "model = ? AND EXISTS (SELECT 1 FROM json_each(examples.labels) WHERE value = ?)", [model, label]

    def page(self, model: str, limit: int, label: str | None = None, after: str | None = None) -> list[StoredExample]:
        where, parameters = self._where(model, label)
        with self._connection() as db:
            if after is not None:
                row = db.execute("SELECT seq FROM examples WHERE model = ? AND id = ?", (model, after)).fetchone()
                if row is None:
                    raise UnknownExampleCursor(after)
                where, parameters = f"{where} AND seq > ?", [*parameters, row[0]]
            rows = db.execute(f"SELECT record FROM examples WHERE {where} ORDER BY seq LIMIT ?",
                              (*parameters, limit)).fetchall()
        return [StoredExample.model_validate_json(record) for (record,) in rows]

    def count(self, model: str, label: str | None = None) -> int:
        where, parameters = self._where(model, label)
        with self._connection() as db:
            return db.execute(f"SELECT COUNT(*) FROM examples WHERE {where}", parameters).fetchone()[0]

    def all(self, model: str) -> list[StoredExample]:
        with self._connection() as db:
            rows = db.execute("SELECT record FROM examples WHERE model = ? ORDER BY seq", (model,)).fetchall()
        return [StoredExample.model_validate_json(record) for (record,) in rows]

    def delete(self, model: str, ids: Sequence[str]) -> list[str]:
        deleted = []
        with self._write() as db:
            for example_id in dict.fromkeys(ids):
                if db.execute("DELETE FROM examples WHERE model = ? AND id = ?", (model, example_id)).rowcount:
                    deleted.append(example_id)
        return deleted

    def drop(self, model: str) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM examples WHERE model = ?", (model,)).rowcount


class RedisExampleStore:
    """Per model: a hash of records by id, a hash of ids by text, and a sorted set of ids in the order
    they were added (scores from one counter shared by every model)."""

    PAGE_SCAN = 256

    def __init__(self, url: str, prefix: str = "fewshot") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def _keys(self, model: str) -> tuple[str, str, str]:
        base = f"{self._prefix}:examples:{model}"
        return f"{base}:records", f"{base}:texts", f"{base}:order"

    def add(self, model: str, examples: Sequence[NewExample], source: ExampleSource,
            replace: bool = False, overrule: bool = False) -> AddOutcome:
        import redis

        records, texts, order = self._keys(model)
        wanted = list({example.text for example in examples})
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(records, texts, order)
                    existing: dict[str, StoredExample] = {}
                    if not replace and wanted:
                        ids = [i for i in pipe.hmget(texts, wanted) if i is not None]
                        for raw in pipe.hmget(records, ids) if ids else []:
                            if raw is not None:
                                held = StoredExample.model_validate_json(raw)
                                existing[held.text] = held
                    outcome = sort_out(existing, examples, source, overrule)
                    first = int(pipe.incrby(f"{self._prefix}:examples:seq", max(1, len(outcome.added))))
                    pipe.multi()
                    if replace:
                        pipe.delete(records, texts, order)
                    if outcome.replaced:  # their texts are added again below, under new ids
                        pipe.hdel(records, *[example.id for example in outcome.replaced])
                        pipe.zrem(order, *[example.id for example in outcome.replaced])
                    if outcome.added:
                        start = first - len(outcome.added) + 1
                        pipe.hset(records, mapping={e.id: e.model_dump_json() for e in outcome.added})
                        pipe.hset(texts, mapping={e.text: e.id for e in outcome.added})
                        pipe.zadd(order, {e.id: start + n for n, e in enumerate(outcome.added)})
                    pipe.zcard(order)
                    total = pipe.execute()[-1]
                    return outcome.model_copy(update={"total": int(total)})
                except redis.WatchError:
                    continue  # another writer changed the set first: decide again on what it holds now

    def _in_order(self, model: str, start: int) -> Iterable[StoredExample]:
        records, _, order = self._keys(model)
        while True:
            ids = self._redis.zrange(order, start, start + self.PAGE_SCAN - 1)
            if not ids:
                return
            start += len(ids)
            for raw in self._redis.hmget(records, ids):
                if raw is not None:
                    yield StoredExample.model_validate_json(raw)

    def page(self, model: str, limit: int, label: str | None = None, after: str | None = None) -> list[StoredExample]:
        start = 0
        if after is not None:
            rank = self._redis.zrank(self._keys(model)[2], after)
            if rank is None:
                raise UnknownExampleCursor(after)
            start = rank + 1
        found = []
        for example in self._in_order(model, start):
            if label is None or label in example.named_labels:
                found.append(example)
                if len(found) == limit:
                    break
        return found

    def count(self, model: str, label: str | None = None) -> int:
        if label is None:
            return int(self._redis.zcard(self._keys(model)[2]))
        return sum(1 for example in self._in_order(model, 0) if label in example.named_labels)

    def all(self, model: str) -> list[StoredExample]:
        return list(self._in_order(model, 0))

    def delete(self, model: str, ids: Sequence[str]) -> list[str]:
        import redis

        records, texts, order = self._keys(model)
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(records, texts, order)
                    held = [StoredExample.model_validate_json(raw) for raw in pipe.hmget(records, wanted)
                            if raw is not None]
                    pipe.multi()
                    if held:
                        pipe.hdel(records, *[example.id for example in held])
                        pipe.hdel(texts, *[example.text for example in held])
                        pipe.zrem(order, *[example.id for example in held])
                    pipe.execute()
                    return [example_id for example_id in wanted if example_id in {e.id for e in held}]
                except redis.WatchError:
                    continue

    def drop(self, model: str) -> int:
        records, texts, order = self._keys(model)
        with self._redis.pipeline() as pipe:
            pipe.zcard(order)
            pipe.delete(records, texts, order)
            held, _ = pipe.execute()
        return int(held)


def open_example_store(settings: Settings) -> ExampleStore:
    """Redis when REDIS_URL is set, else the job records' SQLite file."""
    if settings.redis_url:
        return RedisExampleStore(settings.redis_url)
    return SqliteExampleStore(settings.jobs_file)
