"""The example set's rules and stored figures on both real backends (SQLite file, redis-server): the
one form, MAX_LABELS, the size cap and known labels are checked inside the store's own write, so two
writers at once can never together break them; each set's count, label counts, form and digest are
kept beside it in the same writes and always equal what reading the whole set gives; sets written
before those figures existed get them when the store opens."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from fewshot.records.examples import (
    ExampleStore,
    NewExample,
    RedisExampleStore,
    SetFull,
    SetRuleBroken,
    SetRules,
    SqliteExampleStore,
    StoredExample,
    TooManyLabels,
    UnknownLabel,
    WrongForm,
    examples_digest,
    set_digest,
)


def assert_figures_match_the_set(store: ExampleStore, model: str) -> None:
    """The stored figures are what reading the whole set gives."""
    held = store.all(model)
    state = store.state(model)
    labels = Counter(label for example in held for label in example.named_labels)
    assert state.count == store.count(model) == len(held)
    assert state.digest == store.digest(model) == set_digest(held)
    assert state.labels == dict(labels)
    assert state.multi_label == (None if not held else held[0].labels is not None)
    for label in labels:
        assert store.count(model, label) == labels[label]
        assert [e.id for e in store.page(model, 10_000, label=label)] == [
            e.id for e in held if label in e.named_labels]
    assert store.count(model, "no-such-label") == 0 and store.page(model, 5, label="no-such-label") == []


def race(*writers: Callable[[], object]) -> list[object]:
    """Run the writers at the same moment, each in its own thread; what each returned or raised."""
    start = threading.Barrier(len(writers))
    results: list[object] = [None] * len(writers)

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = writers[n]()
        except Exception as error:
            results[n] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_writers_at_once_never_mix_the_forms_of_a_set(open_example_store) -> None:
    single = [NewExample(f"single {n}", "a" if n % 2 else "b") for n in range(30)]
    multi = [NewExample(f"multi {n}", labels=("a", "c") if n % 2 else ("b",)) for n in range(30)]
    rules = SetRules(max_labels=500, max_examples=10_000)
    for round_ in range(8):
        model = f"forms-{round_}"
        first, second = open_example_store(), open_example_store()  # as two processes: a connection each
        results = race(partial(first.add, model, single, "added", rules=rules),
                       partial(second.add, model, multi, "added", rules=rules))
        refused = [result for result in results if isinstance(result, SetRuleBroken)]
        assert len(refused) == 1 and isinstance(refused[0], WrongForm), results
        held = open_example_store().all(model)
        assert len({example.labels is not None for example in held}) == 1  # one form, whichever came first
        assert len(held) == 30 and refused[0].multi_label == (held[0].labels is not None)
        assert_figures_match_the_set(open_example_store(), model)


def test_two_writers_at_once_never_pass_the_size_cap_or_max_labels(open_example_store) -> None:
    for round_ in range(8):
        model = f"capped-{round_}"
        first, second = open_example_store(), open_example_store()
        rules = SetRules(max_examples=30)
        results = race(partial(first.add, model, [NewExample(f"one {n}", "a") for n in range(20)], "added",
                               rules=rules),
                       partial(second.add, model, [NewExample(f"two {n}", "b") for n in range(20)], "added",
                               rules=rules))
        refused = [result for result in results if isinstance(result, SetRuleBroken)]
        assert len(refused) == 1 and isinstance(refused[0], SetFull), results
        assert (refused[0].held, refused[0].sent, refused[0].limit) == (20, 20, 30)
        assert open_example_store().count(model) == 20

        labelled = f"labels-{round_}"
        rules = SetRules(max_labels=4)
        results = race(partial(first.add, labelled, [NewExample(f"x {n}", f"x{n}") for n in range(3)], "added",
                               rules=rules),
                       partial(second.add, labelled, [NewExample(f"y {n}", f"y{n}") for n in range(3)], "added",
                               rules=rules))
        refused = [result for result in results if isinstance(result, SetRuleBroken)]
        assert len(refused) == 1 and isinstance(refused[0], TooManyLabels), results
        assert (refused[0].labels, refused[0].limit) == (6, 4)
        assert len(open_example_store().state(labelled).labels) == 3


def test_rules_refuse_before_anything_is_written(open_example_store) -> None:
    store = open_example_store()
    store.add("m", [NewExample("late", "late"), NewExample("cold", "cold"), NewExample("none", None)], "train")
    before = store.all("m")
    with pytest.raises(WrongForm) as wrong:
        store.add("m", [NewExample("both", labels=("late", "cold"))], "added")  # the form holds without rules too
    assert wrong.value.multi_label is False
    feedback = SetRules(known_labels=frozenset({"served"}))
    with pytest.raises(UnknownLabel) as unknown:
        store.add("m", [NewExample("new", "weather")], "feedback", overrule=True, rules=feedback)
    assert (unknown.value.label, unknown.value.known) == ("weather", ["cold", "late", "served"])
    with pytest.raises(TooManyLabels):
        store.add("m", [NewExample("a new one", "new")], "added", rules=SetRules(max_labels=2))
    with pytest.raises(SetFull):
        store.add("m", [NewExample("one more", "cold")], "added", rules=SetRules(max_examples=3))
    assert store.all("m") == before
    assert store.add("m", [NewExample("late", "served")], "feedback", overrule=True, rules=feedback).replaced
    # an empty set takes the form the rules give it (feedback: the served version's), else the examples'
    with pytest.raises(WrongForm) as wrong:
        store.add("empty", [NewExample("t", "a")], "feedback", rules=SetRules(multi_label_if_empty=True))
    assert wrong.value.multi_label is True and store.count("empty") == 0
    assert store.add("empty", [NewExample("t", labels=("a",))], "feedback",
                     rules=SetRules(multi_label_if_empty=True)).total == 1
    # replacing empties the set first: the rules see the set as it will be
    assert store.add("m", [NewExample("x", labels=("p", "q"))], "train", replace=True,
                     rules=SetRules(max_labels=2, max_examples=1)).total == 1
    assert_figures_match_the_set(store, "m")


def random_example(rng: random.Random, form: str, n: int) -> NewExample:
    if form == "single":
        return NewExample(f"text {n}", rng.choice(["a", "b", "c", None]))
    return NewExample(f"text {n}", labels=tuple(rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))))


def test_stored_figures_follow_every_kind_of_change(open_example_store) -> None:
    store, rng = open_example_store(), random.Random(7)
    for form in ("single", "multi"):
        model = f"churn-{form}"
        for step in range(60):
            held = store.all(model)
            kind = rng.choice(["add", "add", "add", "overrule", "delete", "delete"] + (["replace"] if step % 20 == 19
                                                                                         else []))
            if kind == "delete" and held:
                store.delete(model, [e.id for e in rng.sample(held, min(len(held), rng.randint(1, 4)))])
            elif kind == "replace":
                store.add(model, [random_example(rng, form, n) for n in range(5)], "train", replace=True)
            else:
                sent = [random_example(rng, form, rng.randint(0, 40)) for _ in range(rng.randint(1, 6))]
                store.add(model, sent, "added", overrule=kind == "overrule")
            assert_figures_match_the_set(open_example_store(), model)
        held = store.all(model)
        assert held and store.drop(model) == len(held)
        assert store.drop(model) == 0
        assert_figures_match_the_set(open_example_store(), model)


def test_the_digest_is_the_one_versions_record(open_example_store) -> None:
    """A version records examples_digest of what it was trained on; the set's stored digest must equal it."""
    store = open_example_store()
    added = store.add("d", [NewExample("b", "y"), NewExample("a", "x"), NewExample("c", None)], "train").added
    trained_on = [("a", "x"), ("c", None), ("b", "y"), ("a", "x")]  # any order, repeats once
    assert store.digest("d") == examples_digest(trained_on)
    store.delete("d", [added[0].id])
    assert store.digest("d") == examples_digest([("a", "x"), ("c", None)]) != examples_digest(trained_on)
    assert examples_digest([("t", ("q", "p"))]) == examples_digest([("t", ["p", "q"])])  # label order
    assert store.digest("never") == examples_digest([]) == "0" * 16


def old_rows(model: str) -> list[StoredExample]:
    return [StoredExample(id=uuid.uuid4().hex[:16], text=f"old {n}", label=["a", "b", None][n % 3], source="train",
                          added_at="2026-01-01T00:00:00+00:00") for n in range(7)]


def test_sets_written_before_the_figures_existed_get_them_on_opening(tmp_path: Path, redis_url: str) -> None:
    # SQLite: the examples table as the store wrote it before
    path = tmp_path / "jobs.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE examples (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, "
               "id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, labels TEXT NOT NULL, record TEXT NOT NULL, "
               "UNIQUE (model, text))")
    rows = old_rows("old")
    db.executemany("INSERT INTO examples (model, id, text, labels, record) VALUES (?, ?, ?, ?, ?)",
                   [("old", e.id, e.text, json.dumps(e.named_labels), e.model_dump_json()) for e in rows])
    db.commit()
    db.close()
    # Redis: records, texts and order, as the store wrote them before
    import redis

    prefix = f"test-{uuid.uuid4().hex}"
    client, base = redis.Redis.from_url(redis_url), f"{prefix}:examples:old"
    client.hset(f"{base}:records", mapping={e.id: e.model_dump_json() for e in rows})
    client.hset(f"{base}:texts", mapping={e.text: e.id for e in rows})
    client.zadd(f"{base}:order", {e.id: n + 1 for n, e in enumerate(rows)})
    client.set(f"{prefix}:examples:seq", len(rows))

    for store in (SqliteExampleStore(path), RedisExampleStore(redis_url, prefix=prefix)):
        assert [e.id for e in store.all("old")] == [e.id for e in rows]
        assert_figures_match_the_set(store, "old")
        assert store.state("old").labels == {"a": 3, "b": 2}
        store.add("old", [NewExample("new", "b")], "added")
        assert_figures_match_the_set(store, "old")
