"""A model's example set: the labelled texts it is trained from, kept as data of their own.

Beside the job records and on the same backends (SQLite in the queue directory by default, Redis
when REDIS_URL is set): the set survives restarts and every trainer and gateway sees the same one.
A text is in a model's set once: adding it again with the same label is a duplicate (reported, not
added), with another label a conflict (reported, the set keeps what it had). Every change is one
transaction (SQLite) or a watched multi-key update (Redis), so two writers never leave half a change;
the set's rules (`SetRules`, and its one form) are checked inside that change, and its count, label
counts, form and digest (`SetState`) are kept beside it and changed with it, so they are read
without reading the set.

No HTTP here (an import contract): the API's schemas turn requests into `NewExample`s.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from fewshot.records.sqlite_file import SqliteFile
from fewshot.settings import Settings
from fewshot.timestamps import UtcTimestamp, utc_now

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


class SetRuleBroken(ValueError):
    """A change refused because it would break a rule of the set (`SetRules`, or the set's one form);
    nothing of it was written. Subclasses carry what the caller needs to explain it."""


class WrongForm(SetRuleBroken):
    """The examples sent are single-label and the set (or, for an empty one, the model) multi-label, or
    the other way round: a set of both forms could never be trained on again."""

    def __init__(self, multi_label: bool) -> None:
        self.multi_label = multi_label
        """The form the set holds (or the empty set must take)."""
        super().__init__(f"the example set is {'multi-label' if multi_label else 'single-label'}")


class UnknownLabel(SetRuleBroken):
    def __init__(self, label: str, known: list[str]) -> None:
        self.label, self.known = label, known
        super().__init__(f"{label!r} is not a label of the set (its labels: {', '.join(known)})")


class TooManyLabels(SetRuleBroken):
    def __init__(self, labels: int, limit: int) -> None:
        self.labels, self.limit = labels, limit
        super().__init__(f"the set would have {labels} labels, more than {limit}")


class SetFull(SetRuleBroken):
    def __init__(self, held: int, sent: int, limit: int) -> None:
        self.held, self.sent, self.limit = held, sent, limit
        super().__init__(f"the set holds {held} examples; with {sent} more it could exceed {limit}")


@dataclass(frozen=True)
class SetRules:
    """What a change must leave true of the set besides its one form. The store checks them inside the
    change's own transaction (SQLite) or watched update (Redis), against the set as it is then: checked
    before the write, two writers at once could each pass and together break them."""

    max_labels: int | None = None
    """Distinct labels the set may hold, counting every label sent (MAX_LABELS)."""
    max_examples: int | None = None
    """Refused when the examples held plus those sent could exceed this (MAX_TRAIN_EXAMPLES)."""
    known_labels: frozenset[str] | None = None
    """Given: every label sent must be one the set holds or one of these (feedback: the version's labels)."""
    multi_label_if_empty: bool | None = None
    """The form an empty set must be given (feedback: the served version's); None: the examples' own."""


@dataclass(frozen=True)
class SetState:
    """What a store keeps of a set beside its examples, changed in the same transaction as they are,
    so that the size, the labels and the digest are read without reading the set."""

    count: int
    digest: str
    """`set_digest` of the set's examples."""
    multi_label: bool | None
    """The set's form; None when it is empty."""
    labels: dict[str, int]
    """Examples of each label (multi-label: having it); `label: null` ones are not counted."""


Target = str | tuple[str, ...] | list[str] | None
DIGEST_MODULUS = 2 ** 64


def _row(text: str, target: Target) -> str:
    return json.dumps([text, sorted(target) if isinstance(target, tuple | list) else target], ensure_ascii=False)


def _row_hash(row: str) -> int:
    return int.from_bytes(hashlib.sha256(row.encode()).digest()[:8], "big")


def example_hash(text: str, target: Target) -> int:
    """One labelled text's part of a digest."""
    return _row_hash(_row(text, target))


def _digest_text(total: int) -> str:
    return f"{total % DIGEST_MODULUS:016x}"


def examples_digest(pairs: Iterable[tuple[str, Target]]) -> str:
    """A content hash of labelled texts, in no particular order and each text once (as a set holds
    them; multi-label targets in any label order): which set a version was trained on, and whether
    the set changed since. The sum (mod 2^64) of each distinct labelled text's hash, so a store keeps
    a set's digest up to date as examples come and go, without reading the set."""
    return _digest_text(sum(_row_hash(row) for row in {_row(text, target) for text, target in pairs}))


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


def _named_labels(example: NewExample) -> list[str]:
    return list(example.labels) if example.labels is not None else [] if example.label is None else [example.label]


def check_rules(state: SetState, examples: Sequence[NewExample], rules: SetRules | None) -> None:
    """Raise the SetRuleBroken that adding `examples` to a set in `state` would break, if any: its one
    form always; `rules` when given, in this order: form, unknown labels, MAX_LABELS, size."""
    forms = {example.labels is not None for example in examples}
    if len(forms) > 1:
        raise ValueError("examples must all give `label` or all give `labels`")  # the API's schemas refuse it first
    if not forms:
        return
    multi_label = forms.pop()
    form = state.multi_label if state.count else rules.multi_label_if_empty if rules else None
    if form is not None and form != multi_label:
        raise WrongForm(form)
    if rules is None:
        return
    if rules.known_labels is not None:
        known = set(state.labels) | rules.known_labels
        unknown = [label for example in examples for label in _named_labels(example) if label not in known]
        if unknown:
            raise UnknownLabel(unknown[0], sorted(known))
    if rules.max_labels is not None:
        labels = len(set(state.labels) | {label for example in examples for label in _named_labels(example)})
        if labels > rules.max_labels:
            raise TooManyLabels(labels, rules.max_labels)
    if rules.max_examples is not None and state.count + len(examples) > rules.max_examples:
        raise SetFull(state.count, len(examples), rules.max_examples)


EMPTY_DIGEST = _digest_text(0)


class _Tally:
    """A set's state as a change goes, example by example, then written back in the same transaction."""

    def __init__(self, state: SetState) -> None:
        self.count, self.digest, self.multi_label = state.count, int(state.digest, 16), state.multi_label
        self.labels = dict(state.labels)
        self.before = dict(state.labels)

    def add(self, example: StoredExample) -> None:
        self.count += 1
        self.digest = (self.digest + example_hash(example.text, example.target)) % DIGEST_MODULUS
        self.multi_label = example.labels is not None
        for label in set(example.named_labels):
            self.labels[label] = self.labels.get(label, 0) + 1

    def remove(self, example: StoredExample) -> None:
        self.count -= 1
        self.digest = (self.digest - example_hash(example.text, example.target)) % DIGEST_MODULUS
        for label in set(example.named_labels):
            left = self.labels.pop(label, 0) - 1
            if left > 0:
                self.labels[label] = left
        if not self.count:
            self.multi_label = None

    def changed_labels(self) -> dict[str, int]:
        """Label → its count now (0: gone), for the labels whose count changed."""
        return {label: self.labels.get(label, 0) for label in {*self.before, *self.labels}
                if self.labels.get(label, 0) != self.before.get(label, 0)}

    @property
    def digest_text(self) -> str:
        return _digest_text(self.digest)


class ExampleStore(Protocol):
    def add(self, model: str, examples: Sequence[NewExample], source: ExampleSource,
            replace: bool = False, overrule: bool = False, rules: SetRules | None = None) -> AddOutcome:
        """Add `examples` to the model's set (first emptied when `replace`), as `sort_out` decides. Raises
        a SetRuleBroken, writing nothing, when the set is of the other form or `rules` would be broken."""
        ...

    def page(self, model: str, limit: int, label: str | None = None, after: str | None = None) -> list[StoredExample]:
        """Up to `limit` examples, oldest first, optionally only those with `label`, starting after example
        `after`. Raises UnknownExampleCursor if `after` is not in the set."""
        ...

    def count(self, model: str, label: str | None = None) -> int:
        """Examples in the set (with `label`: those with it), from the stored counts."""
        ...

    def digest(self, model: str) -> str:
        """`set_digest` of the set, as stored."""
        ...

    def state(self, model: str) -> SetState:
        """The set's count, digest, form and label counts, as stored, read at one moment."""
        ...

    def all(self, model: str) -> list[StoredExample]:
        """The whole set, oldest first."""
        ...

    def delete(self, model: str, ids: Sequence[str]) -> list[str]:
        """Remove these examples; the ids that were in the set."""
        ...

    def drop(self, model: str) -> int:
        """Remove the model's whole set; how many examples it held."""
        ...


EMPTY_STATE = SetState(count=0, digest=EMPTY_DIGEST, multi_label=None, labels={})


class SqliteExampleStore(SqliteFile):
    """A table `examples` in the job records' SQLite file; its `seq` orders a set oldest first. Beside it,
    changed in the same transactions: `example_sets` (each non-empty set's count, digest and form),
    `example_label_counts`, and `example_labels` (which examples have each label, for pages by label)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            "CREATE TABLE IF NOT EXISTS examples (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, "
            "id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, labels TEXT NOT NULL, record TEXT NOT NULL, "
            "UNIQUE (model, text))",
            "CREATE TABLE IF NOT EXISTS example_sets (model TEXT PRIMARY KEY, count INTEGER NOT NULL, "
            "digest TEXT NOT NULL, multi_label INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS example_label_counts (model TEXT NOT NULL, label TEXT NOT NULL, "
            "count INTEGER NOT NULL, PRIMARY KEY (model, label)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS example_labels (model TEXT NOT NULL, label TEXT NOT NULL, "
            "seq INTEGER NOT NULL, PRIMARY KEY (model, label, seq)) WITHOUT ROWID")
        self._count_sets_made_before_their_state()

    def _count_sets_made_before_their_state(self) -> None:
        """Sets written before the stored counts existed get them, once (every writer since keeps them)."""
        query = "SELECT DISTINCT model FROM examples WHERE model NOT IN (SELECT model FROM example_sets)"
        with self._connection() as db:
            if db.execute(query).fetchone() is None:
                return
        with self._write() as db:  # again inside the write: another process may have done it meanwhile
            for (model,) in db.execute(query).fetchall():
                db.execute("DELETE FROM example_label_counts WHERE model = ?", (model,))
                db.execute("DELETE FROM example_labels WHERE model = ?", (model,))
                tally = _Tally(EMPTY_STATE)
                for seq, record in db.execute("SELECT seq, record FROM examples WHERE model = ? ORDER BY seq",
                                              (model,)).fetchall():
                    example = StoredExample.model_validate_json(record)
                    tally.add(example)
                    self._index_labels(db, model, seq, example)
                self._save(db, model, tally)

    @staticmethod
    def _read_state(db: sqlite3.Connection, model: str) -> SetState:
        row = db.execute("SELECT count, digest, multi_label FROM example_sets WHERE model = ?", (model,)).fetchone()
        if row is None:
            return EMPTY_STATE
        labels = dict(db.execute("SELECT label, count FROM example_label_counts WHERE model = ?", (model,)).fetchall())
        return SetState(count=row[0], digest=row[1], multi_label=bool(row[2]), labels=labels)

    @staticmethod
    def _index_labels(db: sqlite3.Connection, model: str, seq: int, example: StoredExample) -> None:
        db.executemany("INSERT INTO example_labels (model, label, seq) VALUES (?, ?, ?)",
                       [(model, label, seq) for label in set(example.named_labels)])

    @staticmethod
    def _save(db: sqlite3.Connection, model: str, tally: _Tally) -> None:
        if not tally.count:
            db.execute("DELETE FROM example_sets WHERE model = ?", (model,))
            db.execute("DELETE FROM example_label_counts WHERE model = ?", (model,))
            return
        db.execute("INSERT INTO example_sets (model, count, digest, multi_label) VALUES (?, ?, ?, ?) ON CONFLICT "
                   "(model) DO UPDATE SET count = excluded.count, digest = excluded.digest, "
                   "multi_label = excluded.multi_label", (model, tally.count, tally.digest_text, tally.multi_label))
        changed = tally.changed_labels()
        db.executemany("DELETE FROM example_label_counts WHERE model = ? AND label = ?",
                       [(model, label) for label, count in changed.items() if not count])
        db.executemany("INSERT INTO example_label_counts (model, label, count) VALUES (?, ?, ?) ON CONFLICT "
                       "(model, label) DO UPDATE SET count = excluded.count",
                       [(model, label, count) for label, count in changed.items() if count])

    @staticmethod
    def _empty(db: sqlite3.Connection, model: str) -> int:
        for table in ("example_labels", "example_label_counts", "example_sets"):
            db.execute(f"DELETE FROM {table} WHERE model = ?", (model,))
        return db.execute("DELETE FROM examples WHERE model = ?", (model,)).rowcount

    @staticmethod
    def _remove(db: sqlite3.Connection, model: str, seq: int, example: StoredExample, tally: _Tally) -> None:
        db.execute("DELETE FROM examples WHERE seq = ?", (seq,))
        db.executemany("DELETE FROM example_labels WHERE model = ? AND label = ? AND seq = ?",
                       [(model, label, seq) for label in set(example.named_labels)])
        tally.remove(example)

    def add(self, model: str, examples: Sequence[NewExample], source: ExampleSource,
            replace: bool = False, overrule: bool = False, rules: SetRules | None = None) -> AddOutcome:
        with self._write() as db:
            if replace:
                self._empty(db, model)
            state = self._read_state(db, model)
            check_rules(state, examples, rules)
            texts = list({example.text for example in examples})
            existing: dict[str, StoredExample] = {}
            sequence: dict[str, int] = {}
            for start in range(0, len(texts), 500):  # SQLite's bound on query parameters
                chunk = texts[start:start + 500]
                rows = db.execute(f"SELECT seq, record FROM examples WHERE model = ? AND text IN "
                                  f"({', '.join('?' * len(chunk))})", (model, *chunk)).fetchall()
                for seq, record in rows:
                    held = StoredExample.model_validate_json(record)
                    existing[held.text], sequence[held.id] = held, seq
            outcome = sort_out(existing, examples, source, overrule)
            tally = _Tally(state)
            for example in outcome.replaced:
                self._remove(db, model, sequence[example.id], example, tally)
            for example in outcome.added:
                inserted = db.execute("INSERT INTO examples (model, id, text, labels, record) VALUES (?, ?, ?, ?, ?)",
                                      (model, example.id, example.text, json.dumps(example.named_labels),
                                       example.model_dump_json()))
                self._index_labels(db, model, int(inserted.lastrowid or 0), example)
                tally.add(example)
            self._save(db, model, tally)
        return outcome.model_copy(update={"total": tally.count})

    def page(self, model: str, limit: int, label: str | None = None, after: str | None = None) -> list[StoredExample]:
        with self._connection() as db:
            start = 0
            if after is not None:
                row = db.execute("SELECT seq FROM examples WHERE model = ? AND id = ?", (model, after)).fetchone()
                if row is None:
                    raise UnknownExampleCursor(after)
                start = row[0]
            if label is None:
                rows = db.execute("SELECT record FROM examples WHERE model = ? AND seq > ? ORDER BY seq LIMIT ?",
                                  (model, start, limit)).fetchall()
            else:  # through the label's own rows: a page of a rare label does not read the whole set
                rows = db.execute("SELECT e.record FROM example_labels l JOIN examples e ON e.seq = l.seq "
                                  "WHERE l.model = ? AND l.label = ? AND l.seq > ? ORDER BY l.seq LIMIT ?",
                                  (model, label, start, limit)).fetchall()
        return [StoredExample.model_validate_json(record) for (record,) in rows]

    def count(self, model: str, label: str | None = None) -> int:
        with self._connection() as db:
            row = db.execute("SELECT count FROM example_sets WHERE model = ?", (model,)).fetchone() if label is None \
                else db.execute("SELECT count FROM example_label_counts WHERE model = ? AND label = ?",
                                (model, label)).fetchone()
        return int(row[0]) if row else 0

    def digest(self, model: str) -> str:
        with self._connection() as db:
            row = db.execute("SELECT digest FROM example_sets WHERE model = ?", (model,)).fetchone()
        return str(row[0]) if row else EMPTY_DIGEST

    def state(self, model: str) -> SetState:
        with self._connection() as db:
            db.execute("BEGIN")  # one snapshot for the set's row and its label counts
            try:
                return self._read_state(db, model)
            finally:
                db.execute("COMMIT")

    def all(self, model: str) -> list[StoredExample]:
        with self._connection() as db:
            rows = db.execute("SELECT record FROM examples WHERE model = ? ORDER BY seq", (model,)).fetchall()
        return [StoredExample.model_validate_json(record) for (record,) in rows]

    def delete(self, model: str, ids: Sequence[str]) -> list[str]:
        deleted = []
        with self._write() as db:
            tally = _Tally(self._read_state(db, model))
            for example_id in dict.fromkeys(ids):
                row = db.execute("SELECT seq, record FROM examples WHERE model = ? AND id = ?",
                                 (model, example_id)).fetchone()
                if row is not None:
                    self._remove(db, model, row[0], StoredExample.model_validate_json(row[1]), tally)
                    deleted.append(example_id)
            self._save(db, model, tally)
        return deleted

    def drop(self, model: str) -> int:
        with self._write() as db:
            return self._empty(db, model)


class RedisExampleStore:
    """Per model: a hash of records by id, a hash of ids by text, a sorted set of ids in the order they
    were added (scores from one counter shared by every model); beside them, changed in the same
    watched update: a hash `meta` (the digest and form of a non-empty set), a hash of counts by label,
    and per label a sorted set of its examples' ids (same scores), so pages by label and counts read
    only what they return."""

    def __init__(self, url: str, prefix: str = "fewshot") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix
        self._count_sets_made_before_their_state()

    def _base(self, model: str) -> str:
        return f"{self._prefix}:examples:{model}"

    def _keys(self, model: str) -> tuple[str, str, str, str, str]:
        """records, texts, order, meta, labels: every key a change reads (and so watches)."""
        base = self._base(model)
        return f"{base}:records", f"{base}:texts", f"{base}:order", f"{base}:meta", f"{base}:labels"

    def _label_key(self, model: str, label: str) -> str:
        # Hashed: a label is any text, a key name should stay short and free of the separator.
        return f"{self._base(model)}:label:{hashlib.sha256(label.encode()).hexdigest()[:32]}"

    def _count_sets_made_before_their_state(self) -> None:
        """Sets written before the stored counts existed (an order but no meta) get them, once."""
        pattern = f"{self._prefix}:examples:*:order"
        for key in self._redis.scan_iter(match=pattern, count=1000):
            model = key.decode()[len(f"{self._prefix}:examples:"):-len(":order")]
            if ":" not in model and not self._redis.exists(self._keys(model)[3]):
                self._recount(model)

    def _recount(self, model: str) -> None:
        import redis

        records, _, order, meta, labels = self._keys(model)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*self._keys(model))
                    if pipe.exists(meta) or not pipe.exists(order):
                        return  # another process did it, or the set is gone
                    tally = _Tally(EMPTY_STATE)
                    members: dict[str, dict[str, float]] = {}
                    ranked = pipe.zrange(order, 0, -1, withscores=True)
                    for (example_id, score), raw in zip(ranked, pipe.hmget(records, [i for i, _ in ranked]) if ranked
                                                        else [], strict=True):
                        if raw is not None:
                            example = StoredExample.model_validate_json(raw)
                            tally.add(example)
                            for label in example.named_labels:
                                members.setdefault(label, {})[example_id.decode()] = score
                    pipe.multi()
                    pipe.delete(labels, *[self._label_key(model, label) for label in members])
                    for label, scored in members.items():
                        pipe.zadd(self._label_key(model, label), scored)
                    self._write_state(pipe, model, tally)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _read_state(self, pipe: Any, model: str) -> SetState:
        """The set's state, read through a watching pipeline (immediate commands) or a transaction."""
        _, _, order, meta, labels = self._keys(model)
        count = int(pipe.zcard(order))
        stored = pipe.hgetall(meta)
        counted = pipe.hgetall(labels)
        return self._state_of(count, stored, counted)

    @staticmethod
    def _state_of(count: int, meta: dict[bytes, bytes], labels: dict[bytes, bytes]) -> SetState:
        if not count:
            return EMPTY_STATE
        return SetState(count=count, digest=meta.get(b"digest", EMPTY_DIGEST.encode()).decode(),
                        multi_label=meta.get(b"multi_label") == b"1",
                        labels={label.decode(): int(n) for label, n in labels.items()})

    def _write_state(self, pipe: Any, model: str, tally: _Tally) -> None:
        """Queue the writes of the tally's state into a transaction (MULTI)."""
        _, _, _, meta, labels = self._keys(model)
        if not tally.count:
            pipe.delete(meta, labels)
            return
        pipe.hset(meta, mapping={"digest": tally.digest_text,
                                 "multi_label": "1" if tally.multi_label else "0"})
        changed = tally.changed_labels()
        if gone := [label for label, count in changed.items() if not count]:
            pipe.hdel(labels, *gone)
        if kept := {label: count for label, count in changed.items() if count}:
            pipe.hset(labels, mapping=kept)

    def _unindex(self, pipe: Any, model: str, examples: Sequence[StoredExample]) -> None:
        """Queue the removal of `examples` from the order and their labels' sorted sets (MULTI)."""
        records, _, order, _, _ = self._keys(model)
        if not examples:
            return
        ids = [example.id for example in examples]
        pipe.hdel(records, *ids)
        pipe.zrem(order, *ids)
        for example in examples:
            for label in set(example.named_labels):
                pipe.zrem(self._label_key(model, label), example.id)

    def add(self, model: str, examples: Sequence[NewExample], source: ExampleSource,
            replace: bool = False, overrule: bool = False, rules: SetRules | None = None) -> AddOutcome:
        import redis

        records, texts, order, meta, labels = keys = self._keys(model)
        wanted = list({example.text for example in examples})
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    held_state = self._read_state(pipe, model)
                    state = EMPTY_STATE if replace else held_state
                    check_rules(state, examples, rules)
                    existing: dict[str, StoredExample] = {}
                    if not replace and wanted:
                        ids = [i for i in pipe.hmget(texts, wanted) if i is not None]
                        for raw in pipe.hmget(records, ids) if ids else []:
                            if raw is not None:
                                held = StoredExample.model_validate_json(raw)
                                existing[held.text] = held
                    outcome = sort_out(existing, examples, source, overrule)
                    tally = _Tally(state)
                    for example in outcome.replaced:
                        tally.remove(example)
                    for example in outcome.added:
                        tally.add(example)
                    first = int(pipe.incrby(f"{self._prefix}:examples:seq", max(1, len(outcome.added))))
                    pipe.multi()
                    if replace:
                        pipe.delete(records, texts, order, meta, labels,
                                    *[self._label_key(model, label) for label in held_state.labels])
                    self._unindex(pipe, model, outcome.replaced)  # their texts are added again below, under new ids
                    if outcome.added:
                        start = first - len(outcome.added) + 1
                        scores = {e.id: start + n for n, e in enumerate(outcome.added)}
                        pipe.hset(records, mapping={e.id: e.model_dump_json() for e in outcome.added})
                        pipe.hset(texts, mapping={e.text: e.id for e in outcome.added})
                        pipe.zadd(order, scores)
                        by_label: dict[str, dict[str, int]] = {}
                        for example in outcome.added:
                            for label in example.named_labels:
                                by_label.setdefault(label, {})[example.id] = scores[example.id]
                        for label, scored in by_label.items():
                            pipe.zadd(self._label_key(model, label), scored)
                    self._write_state(pipe, model, tally)
                    pipe.execute()
                    return outcome.model_copy(update={"total": tally.count})
                except redis.WatchError:
                    continue  # another writer changed the set first: decide again on what it holds now

    def page(self, model: str, limit: int, label: str | None = None, after: str | None = None) -> list[StoredExample]:
        records, _, order, _, _ = self._keys(model)
        low: str | float = "-inf"
        if after is not None:
            score = self._redis.zscore(order, after)
            if score is None:
                raise UnknownExampleCursor(after)
            low = f"({score}"  # exclusive: the page starts after it
        ids = self._redis.zrangebyscore(order if label is None else self._label_key(model, label), low, "+inf",
                                        start=0, num=limit)
        # An example deleted between the two reads is left out, as if the page had been read after it.
        return [StoredExample.model_validate_json(raw) for raw in (self._redis.hmget(records, ids) if ids else [])
                if raw is not None]

    def count(self, model: str, label: str | None = None) -> int:
        _, _, order, _, labels = self._keys(model)
        if label is None:
            return int(self._redis.zcard(order))
        return int(self._redis.hget(labels, label) or 0)

    def digest(self, model: str) -> str:
        stored = self._redis.hget(self._keys(model)[3], "digest")  # no meta: an empty set
        return stored.decode() if stored is not None else EMPTY_DIGEST

    def state(self, model: str) -> SetState:
        _, _, order, meta, labels = self._keys(model)
        with self._redis.pipeline() as pipe:  # MULTI: one moment
            pipe.zcard(order)
            pipe.hgetall(meta)
            pipe.hgetall(labels)
            count, stored, counted = pipe.execute()
        return self._state_of(int(count), stored, counted)

    def all(self, model: str) -> list[StoredExample]:
        records, _, order, _, _ = self._keys(model)
        found, start, scan = [], 0, 1024
        while ids := self._redis.zrange(order, start, start + scan - 1):
            start += len(ids)
            found += [StoredExample.model_validate_json(raw) for raw in self._redis.hmget(records, ids)
                      if raw is not None]
        return found

    def delete(self, model: str, ids: Sequence[str]) -> list[str]:
        import redis

        records, texts, _, _, _ = keys = self._keys(model)
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    held = [StoredExample.model_validate_json(raw) for raw in pipe.hmget(records, wanted)
                            if raw is not None]
                    tally = _Tally(self._read_state(pipe, model))
                    for example in held:
                        tally.remove(example)
                    pipe.multi()
                    if held:
                        self._unindex(pipe, model, held)
                        pipe.hdel(texts, *[example.text for example in held])
                        self._write_state(pipe, model, tally)
                    pipe.execute()
                    return [example_id for example_id in wanted if example_id in {e.id for e in held}]
                except redis.WatchError:
                    continue

    def drop(self, model: str) -> int:
        import redis

        keys = self._keys(model)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    held = int(pipe.zcard(keys[2]))
                    label_keys = [self._label_key(model, label.decode()) for label in pipe.hkeys(keys[4])]
                    pipe.multi()
                    pipe.delete(*keys, *label_keys)
                    pipe.execute()
                    return held
                except redis.WatchError:
                    continue


def open_example_store(settings: Settings) -> ExampleStore:
    """Redis when REDIS_URL is set, else the job records' SQLite file."""
    if settings.redis_url:
        return RedisExampleStore(settings.redis_url)
    return SqliteExampleStore(settings.jobs_file)
