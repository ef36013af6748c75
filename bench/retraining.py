"""Keep teaching a model: retraining from its example set against training from scratch, same run.

    make bench-retraining     (or: .venv/bin/python -m bench.retraining [--data ../shared/data])

Starts the service as a user would (`bentoml serve`, embedded trainer, a temporary MODEL_PATH,
MiniLM as the base model). banking77: 20 labels grow from 2 to 16 training examples per label in 4
steps (2, 4, 8, 16); at the third step (8 per label) a 21st label arrives with 8 examples, as a
round of its own, so that its effect on the other labels is measured apart from more examples.
Each round, for each way of getting the next version:
- retrain `head` / `continue` / `full` (POST /v1/models/{name}/examples with the round's new
  examples, then POST /v1/models/{name}/retrain, `promote: always` so that every round is served);
- from scratch: POST /v1/train with the whole set, `head` and `setfit`;
measured: seconds from the (re)train request to the new version answering /v1/predict, the job's
training seconds, and accuracy and per-label F1 on banking77's test texts of the round's labels.
Then the goal's case: a 1,000-example set (50 per label) trained with `head`, 20 examples added, and
a `head` retrain (its embeddings cached) against a `head` training from scratch on the same 1,020.
Fine-tuning runs --num-iterations (2: minutes, not hours, on 2 CPU cores).
Writes bench/results/retraining-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.report_files import server_machine, write_report
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
SHOTS = (2, 4, 8, 16)
NEW_LABEL_ROUND = 2
"""The new label arrives after the round of SHOTS[2] (8 per label), in a round of its own."""
BIG_PER_LABEL = 50


def read_csv(path: Path) -> dict[str, list[str]]:
    by_label: defaultdict[str, list[str]] = defaultdict(list)
    with open(path, newline="", encoding="utf8") as handle:
        for row in csv.DictReader(handle):
            by_label[row["label"]].append(row["text"])
    return by_label


def rounds(train: dict[str, list[str]], labels: list[str], new_label: str) -> list[tuple[str, list[dict]]]:
    """(round name, the examples new in it): growth rounds, and the new label's round."""
    planned, given = [], {label: 0 for label in labels}
    for index, shots in enumerate(SHOTS):
        added = [{"text": text, "label": label} for label in labels for text in train[label][given[label]:shots]]
        given = {label: shots for label in labels}
        planned.append((f"{shots} per label", added))
        if index == NEW_LABEL_ROUND:
            planned.append((f"{shots} per label + new label", [{"text": text, "label": new_label}
                                                                for text in train[new_label][:shots]]))
    return planned


def served_after(client: httpx.Client, name: str, job_id: str, asked: float) -> tuple[float, dict]:
    """Seconds from `asked` until the job's version answers /v1/predict, and the finished job."""
    job = wait_for_job(client, job_id, {"completed", "failed"}, timeout=1800)
    if job["status"] != "completed":
        raise RuntimeError(f"{name}: job failed: {job['error']}")
    while True:
        if client.get(f"/v1/models/{name}").json()["model_version"] == job["model_version"]:
            answered = client.post("/v1/predict", json={"model_name": name, "texts": ["where is my card?"]})
            if answered.status_code == 200:
                return round(time.monotonic() - asked, 3), job
        time.sleep(0.02)


def scores(client: httpx.Client, name: str, test: dict[str, list[str]], labels: list[str]) -> dict:
    texts = [(text, label) for label in labels for text in test[label]]
    predicted = []
    for start in range(0, len(texts), 256):
        chunk = [text for text, _ in texts[start:start + 256]]
        response = client.post("/v1/predict", json={"model_name": name, "texts": chunk})
        response.raise_for_status()
        predicted += [p["label"] for p in response.json()["predictions"]]
    truth = [label for _, label in texts]
    f1 = {}
    for label in labels:
        tp = sum(p == t == label for p, t in zip(predicted, truth, strict=True))
        guessed, actual = predicted.count(label), truth.count(label)
        f1[label] = round(2 * tp / (guessed + actual), 4) if guessed + actual else 0.0
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    return {"accuracy": round(accuracy, 4), "f1": f1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--num-iterations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    train, test = (read_csv(args.data / "banking77" / f"{part}.csv") for part in ("train", "test"))
    rng = random.Random(args.seed)
    chosen = sorted(rng.sample(sorted(label for label in train if len(train[label]) >= BIG_PER_LABEL + 1), 21))
    labels, new_label = chosen[:20], chosen[20]
    for label in chosen:
        rng.shuffle(train[label])
    planned = rounds(train, labels, new_label)
    iterations = {"num_iterations": args.num_iterations}
    ways = {  # name → (first training, how each later round gets its version)
        "retrain head": ({"strategy": "head"}, {"strategy": "head"}),
        # continue at its default: a quarter of the served version's iterations (at least 1)
        "retrain continue": ({"strategy": "setfit", **iterations}, {"strategy": "continue"}),
        "retrain full": ({"strategy": "setfit", **iterations}, {"strategy": "full", **iterations}),
        "scratch head": ({"strategy": "head"}, None),
        "scratch setfit": ({"strategy": "setfit", **iterations}, None),
    }
    state = Path(tempfile.mkdtemp(prefix="fewshot-retraining-"))  # a model store of GBs: removed at the end
    server = LiveServer(state,
                        env={"DEFAULT_BASE_MODEL": BASE_MODEL}).start()
    results: dict[str, list[dict]] = {way: [] for way in ways}
    try:
        with server.client() as client:
            for way, (first, retrain) in ways.items():
                name = way.replace(" ", "-")
                so_far: list[dict] = []
                for number, (round_name, added) in enumerate(planned):
                    so_far += added
                    present = sorted({example["label"] for example in so_far})
                    asked = time.monotonic()
                    if number == 0 or retrain is None:
                        response = client.post("/v1/train", json={"model_name": name, "base_model": BASE_MODEL,
                                                                  "examples": so_far, **first})
                    else:
                        client.post(f"/v1/models/{name}/examples", json={"examples": added}).raise_for_status()
                        asked = time.monotonic()
                        response = client.post(f"/v1/models/{name}/retrain", json={**retrain, "promote": "always"})
                    response.raise_for_status()
                    seconds, job = served_after(client, name, response.json()["job_id"], asked)
                    row = {"round": round_name, "examples": len(so_far), "served_s": seconds,
                           "training_s": (datetime.fromisoformat(job["finished_at"])
                                          - datetime.fromisoformat(job["started_at"])).total_seconds(),
                           **scores(client, name, test, present)}
                    results[way].append(row)
                    print(f"  {way} / {round_name}: served in {seconds} s, accuracy {row['accuracy']}", flush=True)
            big = big_set(client, train, test, labels)
    finally:
        server.close()
        shutil.rmtree(state, ignore_errors=True)
    result = {"started_at": started_at.isoformat(), "labels": labels, "new_label": new_label,
              "num_iterations": args.num_iterations, "rounds": [name for name, _ in planned],
              "machine": server_machine(),
              "results": results, "big_set": big}
    stem = write_report(args.out, "retraining", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


def big_set(client: httpx.Client, train: dict[str, list[str]], test: dict[str, list[str]],
            labels: list[str]) -> dict:
    """1,000 examples trained with `head`, 20 added: a `head` retrain against `head` from scratch."""
    base = [{"text": text, "label": label} for label in labels for text in train[label][:BIG_PER_LABEL]]
    more = [{"text": train[label][BIG_PER_LABEL], "label": label} for label in labels]
    response = client.post("/v1/train", json={"model_name": "big", "base_model": BASE_MODEL, "examples": base,
                                              "strategy": "head"})
    first_s, _ = served_after(client, "big", response.json()["job_id"], time.monotonic())
    client.post("/v1/models/big/examples", json={"examples": more}).raise_for_status()
    asked = time.monotonic()
    response = client.post("/v1/models/big/retrain", json={"strategy": "head", "promote": "always"})
    retrain_s, retrain_job = served_after(client, "big", response.json()["job_id"], asked)
    retrained = scores(client, "big", test, labels)
    asked = time.monotonic()
    response = client.post("/v1/train", json={"model_name": "big-scratch", "base_model": BASE_MODEL,
                                              "examples": [*base, *more], "strategy": "head"})
    scratch_s, _ = served_after(client, "big-scratch", response.json()["job_id"], asked)
    scratch = scores(client, "big-scratch", test, labels)
    return {"examples": len(base) + len(more), "first_training_served_s": first_s,
            "retrain_head_served_s": retrain_s, "retrain_note": retrain_job.get("note"),
            "retrain_accuracy": retrained["accuracy"], "scratch_head_served_s": scratch_s,
            "scratch_accuracy": scratch["accuracy"]}


def markdown(result: dict) -> str:
    lines = [f"# Retraining from the example set — {result['started_at']}", "",
             f"Machine: {result['machine']}. banking77, 20 labels, then {result['new_label']!r} added; MiniLM; "
             f"fine-tuning {result['num_iterations']} iterations. Served = from the (re)train request to the new "
             "version answering; accuracy on banking77's test texts of the round's labels.", "",
             "| round | " + " | ".join(f"{way} served s / acc." for way in result["results"]) + " |",
             "|---|" + "---|" * len(result["results"])]
    for index, round_name in enumerate(result["rounds"]):
        cells = [f"{rows[index]['served_s']} / {rows[index]['accuracy']}" for rows in result["results"].values()]
        lines.append(f"| {round_name} | " + " | ".join(cells) + " |")
    new_round = next(i for i, name in enumerate(result["rounds"]) if "new label" in name)
    lines += ["", "Largest F1 drop of an old label when the new label arrived (same examples otherwise):", ""]
    for way, rows in result["results"].items():
        old, new = rows[new_round - 1]["f1"], rows[new_round]["f1"]
        drops = {label: round(old[label] - new[label], 4) for label in old}
        worst = max(drops, key=lambda label: drops[label])
        lines.append(f"- {way}: {drops[worst]:+.4f} ({worst}); new label F1 {new[result['new_label']]}")
    big = result["big_set"]
    lines += ["", f"{big['examples']}-example set, `head` retrain (cached embeddings) vs `head` from scratch: served "
              f"in {big['retrain_head_served_s']} s vs {big['scratch_head_served_s']} s; accuracy "
              f"{big['retrain_accuracy']} vs {big['scratch_accuracy']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
