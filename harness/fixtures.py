"""Fixture data shared by the tests, the benchmarks and the GPU smoke check (no pytest import)."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def read_examples(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as handle:
        return [{"text": row["text"], "label": row["label"]} for row in csv.DictReader(handle)]
