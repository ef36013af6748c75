"""Fixture data shared by the tests, the benchmarks and the GPU smoke check (no pytest import)."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Texts of the four banking77 labels of tests/data that a model trained on those examples must get right.
CLEAR_TEXTS = {
    "My card has not arrived yet.": "card_arrival",
    "What exchange rates do you offer?": "exchange_rate",
    "My card is lost! What can I do?": "lost_or_stolen_card",
    "I have a top up that didn't go through.  Why?": "top_up_failed",
}


def read_examples(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as handle:
        return [{"text": row["text"], "label": row["label"]} for row in csv.DictReader(handle)]
