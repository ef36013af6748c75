"""Labelled long-document data sets for the long-text benchmark (bench/data/long_texts/).

    from bench.long_text_data import load, names
    texts, labels = load("imdb_long")

Origins, licenses, selection and statistics: bench/data/long_texts/SOURCE.md.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data" / "long_texts"


def names() -> list[str]:
    """The data sets available, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def load(name: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of one data set, in its stored (source-id) order."""
    path = DATA_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"unknown long-text data set {name!r}; have {names()}")
    d = json.loads(path.read_text(encoding="utf-8"))
    return list(d["texts"]), [d["labels"][i] for i in d["label_ids"]]
