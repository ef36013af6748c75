"""How good a model from label names alone is, against 2 and 8 examples per label, same run.

    make bench-label-names     (or: .venv/bin/python -m bench.label_names [--data ../shared/data])

Starts the service (`bentoml serve`, MiniLM as the base model) and trains `head` models on
banking77 (20 labels, named as the data names them: `card_arrival` reads "card arrival") and trec6
(6 labels, whose names are codes — ABBR, DESC… — so each is given a description, as a user would):
from the label names alone (POST /v1/train with `labels`, no examples), from 2 and from 8 examples
per label, and from the names with 2 examples per label. Accuracy on each data set's test texts of
those labels. Writes bench/results/label-names-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.report_files import server_machine, write_report
from bench.retraining import read_csv
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
TREC6_DESCRIPTIONS = {"ABBR": "an abbreviation", "DESC": "a description or definition of something",
                      "ENTY": "an entity or thing", "HUM": "a person or group of people", "LOC": "a location or place",
                      "NUM": "a number, date or quantity"}


def accuracy(client: httpx.Client, name: str, test: dict[str, list[str]], labels: list[str]) -> float:
    texts = [(text, label) for label in labels for text in test[label]]
    right = 0
    for start in range(0, len(texts), 256):
        chunk = texts[start:start + 256]
        response = client.post("/v1/predict", json={"model_name": name, "texts": [text for text, _ in chunk]})
        response.raise_for_status()
        right += sum(p["label"] == label for p, (_, label) in zip(response.json()["predictions"], chunk, strict=True))
    return round(right / len(texts), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="fewshot-label-names-"))  # a model store of GBs: removed at the end
    server = LiveServer(state,
                        env={"DEFAULT_BASE_MODEL": BASE_MODEL}).start()
    rows = []
    try:
        with server.client() as client:
            for dataset in ("banking77", "trec6"):
                train, test = (read_csv(args.data / dataset / f"{part}.csv") for part in ("train", "test"))
                labels = sorted(rng.sample(sorted(train), 20)) if dataset == "banking77" else sorted(train)
                for label in labels:
                    rng.shuffle(train[label])
                names = [{"name": label, **({"description": TREC6_DESCRIPTIONS[label]} if dataset == "trec6" else {})}
                         for label in labels]
                for setting, body in (
                        ("label names only", {"labels": names}),
                        ("2 examples per label", {"examples": examples(train, labels, 2)}),
                        ("8 examples per label", {"examples": examples(train, labels, 8)}),
                        ("label names + 2 examples per label", {"labels": names,
                                                                "examples": examples(train, labels, 2)})):
                    name = f"{dataset}-{len(rows)}"
                    response = client.post("/v1/train", json={"model_name": name, "base_model": BASE_MODEL,
                                                              "strategy": "head", "holdout_fraction": 0, **body})
                    response.raise_for_status()
                    job = wait_for_job(client, response.json()["job_id"], {"completed", "failed"})
                    assert job["status"] == "completed", job
                    rows.append({"dataset": dataset, "labels": len(labels), "setting": setting,
                                 "accuracy": accuracy(client, name, test, labels)})
                    print(f"  {rows[-1]}", flush=True)
    finally:
        server.close()
        shutil.rmtree(state, ignore_errors=True)
    result = {"started_at": started_at.isoformat(), "rows": rows,
              "machine": server_machine()}
    lines = [f"# A model from label names — {started_at.isoformat()}", "",
             f"Machine: {result['machine']}. `head` on MiniLM; accuracy on the test texts of the labels.", "",
             "| data set | labels | trained from | accuracy |", "|---|---|---|---|"]
    lines += [f"| {row['dataset']} | {row['labels']} | {row['setting']} | {row['accuracy']} |" for row in rows]
    stem = write_report(args.out, "label-names", started_at, result, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {stem}.json, {stem}.md")


def examples(train: dict[str, list[str]], labels: list[str], per_label: int) -> list[dict]:
    return [{"text": text, "label": label} for label in labels for text in train[label][:per_label]]


if __name__ == "__main__":
    main()
