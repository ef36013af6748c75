"""Test data shared by the suites and the GPU smoke check (no pytest import: usable anywhere)."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).parent / "data"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def read_examples(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as handle:
        return [{"text": row["text"], "label": row["label"]} for row in csv.DictReader(handle)]
