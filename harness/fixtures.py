"""Fixture data shared by the tests, the benchmarks and the GPU smoke check (no pytest import)."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LONG_FINE_TUNING = {"num_iterations": 200, "batch_size": 1}
"""Training options for a job that must still be fine-tuning when a test acts on it (cancel, time limit):
with the 32 examples of tests/data, 12,800 steps of one pair each, minutes on any hardware (an H100
too), so an action sent once its first step is counted always finds it running; stopped, it has cost
only the steps it ran. (40 iterations of 16-pair batches took ~40 s here, and under a second on a GPU.)"""
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
