"""Which texts to label next, and which labels look wrong: our selection and audit against baselines.

    make bench-active-learning   (or: .venv/bin/python -m bench.active_learning [--data ../shared/data])

Active learning, with a simulated annotator (the data set's own labels): banking77 (77 labels) and
trec6 (6), starting from 2 examples per label; 6 rounds, each labelling 20 texts of the pool (the
rest of the training split) and fitting a new head, as a `head` retrain does (logistic regression
on the frozen MiniLM body's embeddings). Texts are chosen by `fewshot.learning.selection.rank_pool`,
the function POST /v1/models/{name}/suggest answers with ("ours": margin × distance, no
near-duplicates), by the same without diversity ("margin"), and at random; 3 seeds (the initial
examples and random picks differ). Accuracy on the test split after each round.

Label audit: banking77, 8 examples per label (616), 5% of them given a random other label; the
suspects of `fewshot.learning.audit.audit` (what GET /v1/models/{name}/suspects ranks): the share
of flipped labels among the top 2 × (number flipped), and precision/recall over every suspect; with
its least-squares head and, as the baseline, the logistic regression a version serves. Then both
audit the whole training split (10,003 examples), timed.

The maths is exercised in-process on the embeddings the served body gives (the routes add only
the inference calls, which tests/test_e2e_learning.py covers). Writes bench/results/
active-learning-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.report_files import in_process_machine, write_report
from bench.retraining import read_csv
from fewshot.base_models import resolve_base_model
from fewshot.learning.audit import Head, audit, least_squares_probabilities
from fewshot.learning.selection import rank_pool
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"
ROUNDS, PER_ROUND, START_PER_LABEL, SEEDS = 6, 20, 2, 3
AUDIT_SHOTS, FLIPPED_SHARE = 8, 0.05
STRATEGIES = ("ours", "margin", "random")


def fit_head(vectors: np.ndarray, labels: list[str]):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(class_weight="balanced").fit(vectors, labels)  # a `head` retrain's (TrainingOptions)


def run_loop(strategy: str, seed: int, pool: np.ndarray, pool_labels: list[str], test: np.ndarray,
             test_labels: list[str]) -> list[float]:
    """Accuracy after the start and after each round."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for row, label in enumerate(pool_labels):
        by_label.setdefault(label, []).append(row)
    labelled = [row for label in sorted(by_label) for row in rng.sample(by_label[label], START_PER_LABEL)]
    curve = []
    for round_number in range(ROUNDS + 1):
        head = fit_head(pool[labelled], [pool_labels[row] for row in labelled])
        curve.append(round(float(np.mean(head.predict(test) == np.array(test_labels))), 4))
        if round_number == ROUNDS:
            break
        unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
        if strategy == "random":
            picked = rng.sample(unlabelled.tolist(), PER_ROUND)
        else:
            probabilities = head.predict_proba(pool[unlabelled])
            suggestions = rank_pool(probabilities, pool[unlabelled], PER_ROUND, labelled=pool[labelled],
                                    diverse=strategy == "ours")
            picked = [int(unlabelled[s.index]) for s in suggestions]
        labelled += picked
    return curve


def labels_to_reach(curve: list[float], target: float) -> int | None:
    """Texts labelled in rounds until `curve` first reaches `target` (None: never)."""
    return next((round_number * PER_ROUND for round_number, value in enumerate(curve) if value >= target), None)


def logistic_probabilities(points: np.ndarray, targets: np.ndarray, classes: int, queries: np.ndarray) -> np.ndarray:
    """The baseline audit head: the logistic regression a `head` version serves (as `audit`'s `head`)."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(class_weight="balanced").fit(points, targets)
    probabilities = np.zeros((len(queries), classes))
    probabilities[:, head.classes_] = head.predict_proba(queries)
    return probabilities


HEADS: dict[str, Head] = {"least squares": least_squares_probabilities, "logistic regression": logistic_probabilities}
"""The audit's own head, and the baseline."""


def flipped_labels(train: dict[str, list[str]], seed: int) -> tuple[list[str], list[str], list[str], set[int]]:
    """The label audit's draw: AUDIT_SHOTS texts per label, FLIPPED_SHARE of them given a random other label.
    (texts, their true labels, the labels given, the rows flipped); bench/explain.py plants the same."""
    rng = random.Random(seed)
    labels = sorted(train)
    texts, given = [], []
    for label in labels:
        for text in rng.sample(train[label], AUDIT_SHOTS):
            texts.append(text)
            given.append(label)
    flipped = set(rng.sample(range(len(texts)), round(FLIPPED_SHARE * len(texts))))
    noisy = [rng.choice([other for other in labels if other != label]) if row in flipped else label
             for row, label in enumerate(given)]
    return texts, given, noisy, flipped


def label_audit(train: dict[str, list[str]], encode, seed: int, head: str) -> dict:
    texts, given, noisy, flipped = flipped_labels(train, seed)
    vectors = encode(texts)
    started = time.perf_counter()
    found = audit(vectors, noisy, HEADS[head])
    seconds = time.perf_counter() - started
    ranked = [suspect.index for suspect in found.suspects]
    top = ranked[:2 * len(flipped)]
    caught = len(flipped & set(ranked))
    return {"head": head, "seed": seed, "examples": len(texts),
            "flipped": len(flipped),
            "flipped_in_top_2x": round(len(flipped & set(top)) / len(flipped), 4),
            "suspects": len(ranked), "precision": round(caught / len(ranked), 4) if ranked else None,
            "recall": round(caught / len(flipped), 4),
            "suggested_right": round(sum(s.suggested == given[s.index] for s in found.suspects if s.index in flipped)
                                     / max(1, caught), 4),
            "audit_seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    started_at = datetime.now(UTC).replace(microsecond=0)
    body = SentenceTransformer(resolve_base_model(BASE_MODEL).location, device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return body.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)

    loops = []
    for dataset in ("banking77", "trec6"):
        train, test = (read_csv(args.data / dataset / f"{part}.csv") for part in ("train", "test"))
        pool_labels = [label for label in sorted(train) for _ in train[label]]
        test_labels = [label for label in sorted(test) for _ in test[label]]
        pool = encode([text for label in sorted(train) for text in train[label]])
        tests = encode([text for label in sorted(test) for text in test[label]])
        for seed in range(SEEDS):
            for strategy in STRATEGIES:
                curve = run_loop(strategy, seed, pool, pool_labels, tests, test_labels)
                loops.append({"dataset": dataset, "seed": seed, "strategy": strategy, "accuracy": curve})
                print(dataset, seed, strategy, curve, flush=True)
    summary = []
    for dataset in ("banking77", "trec6"):
        mean = {strategy: np.mean([loop["accuracy"] for loop in loops
                                   if loop["dataset"] == dataset and loop["strategy"] == strategy], axis=0)
                for strategy in STRATEGIES}
        random_final = float(mean["random"][-1])
        summary.append({"dataset": dataset, **{f"{s}_curve": [round(float(v), 4) for v in mean[s]] for s in STRATEGIES},
                        "random_final": round(random_final, 4),
                        "labels_random_needs": ROUNDS * PER_ROUND,
                        "labels_ours_needs": labels_to_reach([float(v) for v in mean["ours"]], random_final),
                        "labels_margin_needs": labels_to_reach([float(v) for v in mean["margin"]], random_final)})
    banking77 = read_csv(args.data / "banking77" / "train.csv")
    audits = [label_audit(banking77, encode, seed, head) for head in HEADS for seed in range(SEEDS)]
    for row in audits:
        print("audit", row, flush=True)
    # The whole training split as one set (10,003 examples, 77 labels): how long an audit of a set
    # of MAX_TRAIN_EXAMPLES takes, embeddings given (a `head` version's are cached).
    everything = [text for label in sorted(banking77) for text in banking77[label]]
    labels_of = [label for label in sorted(banking77) for _ in banking77[label]]
    vectors = encode(everything)
    large = []
    for name, head in HEADS.items():
        started = time.perf_counter()
        found = audit(vectors, labels_of, head)
        large.append({"head": name, "examples": len(everything), "seconds": round(time.perf_counter() - started, 2),
                      "suspects": len(found.suspects)})
        print("large audit", large[-1], flush=True)
    results = {"benchmark": "active-learning", "started_at": started_at.isoformat(), "machine": in_process_machine(),
               "base_model": BASE_MODEL,
               "rounds": ROUNDS, "per_round": PER_ROUND, "start_per_label": START_PER_LABEL, "seeds": SEEDS,
               "summary": summary, "loops": loops, "audit": audits, "large_audit": large}
    write_report(args.out, "active-learning", started_at, results, markdown(results))


def markdown(results: dict) -> str:
    lines = [f"# Active learning and label audit ({results['started_at']})", "",
             f"{results['base_model']} body, logistic-regression head; start {results['start_per_label']} examples "
             f"per label, {results['rounds']} rounds of {results['per_round']} texts; mean of {results['seeds']} "
             "seeds.",
             ""]
    for row in results["summary"]:
        lines += [f"## {row['dataset']}", "", "| texts labelled | " + " | ".join(STRATEGIES) + " |",
                  "|---|" + "---|" * len(STRATEGIES)]
        for round_number in range(results["rounds"] + 1):
            lines.append(f"| {round_number * results['per_round']} | " + " | ".join(
                f"{row[f'{s}_curve'][round_number]:.4f}" for s in STRATEGIES) + " |")
        lines += ["", f"Random's final accuracy ({row['random_final']:.4f}, {row['labels_random_needs']} texts) is "
                  f"reached by ours with {row['labels_ours_needs']} texts, by margin with {row['labels_margin_needs']} "
                  "(None: not within the rounds).", ""]
    lines += ["## Label audit (banking77, 8 per label, 5% flipped)", "",
              "| head | seed | flipped | in top 2× | suspects | precision | recall | suggested = true label "
              "| seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in results["audit"]:
        lines.append(f"| {row['head']} | {row['seed']} | {row['flipped']} | {row['flipped_in_top_2x']} | "
                     f"{row['suspects']} | {row['precision']} | {row['recall']} | {row['suggested_right']} | "
                     f"{row['audit_seconds']} |")
    lines += ["", "## Audit of the whole banking77 training split", "", "| head | examples | seconds | suspects |",
              "|---|---|---|---|"]
    for row in results["large_audit"]:
        lines.append(f"| {row['head']} | {row['examples']} | {row['seconds']} | {row['suspects']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
