"""Example sets on both real backends (SQLite file, redis-server): duplicates and conflicts
reported, not stored twice; pages in the order added, by label; deletion; replacing a set; what
another process sees; the set's content hash."""

from __future__ import annotations

import threading

import pytest

from fewshot.records.examples import (
    ExampleStore,
    NewExample,
    UnknownExampleCursor,
    set_digest,
)

CARD = [NewExample("where is my card", "card"), NewExample("card not arrived", "card")]
TRANSFER = [NewExample("send money to a friend", "transfer"), NewExample("transfer failed", "transfer")]


def test_texts_are_kept_once_duplicates_and_conflicts_are_reported(open_example_store) -> None:
    store = open_example_store()
    first = store.add("intents", [*CARD, *TRANSFER], "train")
    assert [e.text for e in first.added] == [e.text for e in [*CARD, *TRANSFER]]
    assert (first.duplicates, first.conflicts, first.total) == ([], [], 4)
    assert {e.source for e in first.added} == {"train"}
    again = store.add("intents", [NewExample("where is my card", "card"), NewExample("transfer failed", "card"),
                                  NewExample("top up by card", "top_up"), NewExample("top up by card", "top_up"),
                                  NewExample("top up by card", "card")], "added")
    assert [e.text for e in again.added] == ["top up by card"] and again.added[0].source == "added"
    # the set's own record of a duplicate: the first example, also a repeat within the request
    assert [e.id for e in again.duplicates] == [first.added[0].id, again.added[0].id]
    assert [(c.existing.text, c.existing.label, c.label) for c in again.conflicts] == [
        ("transfer failed", "transfer", "card"), ("top up by card", "top_up", "card")]
    assert again.total == 5
    reopened = open_example_store()
    assert reopened.count("intents") == 5 and reopened.count("intents", label="card") == 2
    assert [e.label for e in reopened.all("intents")] == ["card", "card", "transfer", "transfer", "top_up"]
    assert reopened.count("other") == 0 and reopened.all("other") == []


def test_pages_follow_the_order_added_and_filter_by_label(open_example_store) -> None:
    store = open_example_store()
    store.add("m", [NewExample(f"text {n}", "even" if n % 2 == 0 else "odd") for n in range(7)], "train")
    first = store.page("m", 3)
    assert [e.text for e in first] == ["text 0", "text 1", "text 2"]
    second = store.page("m", 3, after=first[-1].id)
    assert [e.text for e in second] == ["text 3", "text 4", "text 5"]
    assert [e.text for e in store.page("m", 3, after=second[-1].id)] == ["text 6"]
    odd = store.page("m", 2, label="odd")
    assert [e.text for e in odd] == ["text 1", "text 3"]
    assert [e.text for e in store.page("m", 2, label="odd", after=odd[-1].id)] == ["text 5"]
    with pytest.raises(UnknownExampleCursor):
        store.page("m", 2, after="no-such-id")


def test_multi_label_examples_are_one_text_with_its_labels(open_example_store) -> None:
    store = open_example_store()
    store.add("tags", [NewExample("late and cold", labels=("late", "cold")), NewExample("fine", labels=())], "train")
    outcome = store.add("tags", [NewExample("late and cold", labels=("cold", "late")),
                                 NewExample("fine", labels=("late",))], "added")
    assert len(outcome.duplicates) == 1 and outcome.conflicts[0].labels == ["late"]  # label order does not matter
    assert store.count("tags", label="cold") == 1 and store.count("tags", label="late") == 1
    assert [e.as_training_example() for e in store.all("tags")] == [
        {"text": "late and cold", "labels": ["cold", "late"]}, {"text": "fine", "labels": []}]


def test_deleting_examples_replacing_and_dropping_a_set(open_example_store) -> None:
    store = open_example_store()
    added = store.add("m", [*CARD, *TRANSFER], "train").added
    assert store.delete("m", [added[0].id, "not-there", added[0].id]) == [added[0].id]
    assert store.count("m") == 3 and store.delete("other", [added[1].id]) == []  # ids belong to their model
    assert store.add("m", [CARD[0]], "added").added[0].text == CARD[0].text  # deleted: it can come back
    before = set_digest(store.all("m"))
    replaced = store.add("m", [NewExample("a", "x"), NewExample("b", "y")], "train", replace=True)
    assert replaced.total == 2 and [e.text for e in store.all("m")] == ["a", "b"]
    assert set_digest(store.all("m")) != before
    assert store.drop("m") == 2 and store.count("m") == 0


def test_the_digest_names_the_content_not_the_order_or_ids(open_example_store) -> None:
    one, other = open_example_store(), open_example_store()
    one.add("a", [*CARD, *TRANSFER], "train")
    other.add("b", [*reversed(TRANSFER), *CARD], "added")
    assert set_digest(one.all("a")) == set_digest(other.all("b"))
    other.add("b", [NewExample("one more", "card")], "added")
    assert set_digest(one.all("a")) != set_digest(other.all("b"))


def test_concurrent_writers_never_store_a_text_twice(open_example_store) -> None:
    """Two processes (here: stores opened twice, in threads) adding the same texts at once."""
    texts = [NewExample(f"text {n}", "a" if n % 2 else "b") for n in range(40)]
    outcomes = []

    def add(store: ExampleStore) -> None:
        outcomes.append(store.add("m", texts, "added"))

    threads = [threading.Thread(target=add, args=(open_example_store(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert open_example_store().count("m") == 40
    assert sorted(len(outcome.added) for outcome in outcomes) == [0, 40]


def test_overruling_replaces_a_conflicting_example_with_the_one_sent(open_example_store) -> None:
    store = open_example_store()
    first = store.add("intents", [*CARD, *TRANSFER], "train")
    outcome = store.add("intents", [NewExample("transfer failed", "card"), NewExample("where is my card", "card"),
                                    NewExample("brand new text", None)], "feedback", overrule=True)
    assert [e.id for e in outcome.replaced] == [first.added[3].id]
    assert [(e.text, e.label, e.source) for e in outcome.added] == [("transfer failed", "card", "feedback"),
                                                                   ("brand new text", None, "feedback")]
    assert [e.text for e in outcome.duplicates] == ["where is my card"] and outcome.conflicts == []
    assert outcome.total == 5
    held = {e.text: e for e in open_example_store().all("intents")}
    assert held["transfer failed"].label == "card" and held["transfer failed"].id == outcome.added[0].id
    assert open_example_store().count("intents", label="transfer") == 1
    assert open_example_store().delete("intents", [first.added[3].id]) == []  # the replaced one is gone for good
