"""Which score tells out-of-scope text apart best: measured before the service changes its abstention.

    make bench-out-of-scope   (or: .venv/bin/python -m bench.out_of_scope [--data ../shared/data])

Banking77-OOS protocol (Zhang et al., 2021), per seed: 50 of the 77 intents are in scope, 8
training texts each; the other 27 intents' test texts are *in-domain* out-of-scope text (banking
questions no label covers). *Out-of-domain* out-of-scope text: 300 test texts each of trec6
(questions), goemotions (Reddit comments) and sst2 (film reviews). In-scope test texts: the 50
intents' test texts. Every text is embedded by the frozen all-MiniLM-L6-v2 body (as a `head`
version serves it) and by that body fine-tuned with SetFit on the seed's training texts
(`FINE_TUNE_ITERATIONS` iterations, as a `setfit` version; the service's default is 20). Scores,
higher meaning more in scope:
- head: the top probability of the logistic-regression head (class-balanced), what abstention
  thresholds today;
- knn: cosine similarity to the nearest training example;
- mahalanobis: minus the smallest class-conditional Mahalanobis distance, one covariance shared by
  the classes and shrunk (Ledoit-Wolf), on unit-length embeddings;
- knn+head: the two above, each standardised by its training scores' mean and spread, summed.
Calibration as the service would do it without a hold-out: each training text's own score
cross-fitted (5 folds: scored by what was fitted without it), then the split-conformal threshold at
coverage 0.95. Reported per score: in-scope test texts kept at that threshold (the promise:
≥ 0.93), out-of-scope refused (in-domain; out-of-domain by source), AUROC and the out-of-scope share
let through at 95% in-scope kept (threshold set on the test texts themselves: the ranking alone).
3 seeds. Writes bench/results/out-of-scope-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.report_files import in_process_machine, write_report
from bench.retraining import read_csv
from fewshot.base_models import resolve_base_model
from fewshot.learning.audit import fold_of
from fewshot.learning.selection import normalized
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT
from trainers.thresholds import conformal_threshold

RESULTS = PROJECT_ROOT / "bench" / "results"
FINE_TUNE_ITERATIONS = 5
IN_SCOPE_INTENTS, SHOTS, SEEDS, COVERAGE, FOREIGN_PER_SOURCE = 50, 8, 3, 0.95, 300
FOREIGN_SOURCES = ("trec6", "goemotions", "sst2")

Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""(training embeddings, class indices) → a scorer of embeddings."""


def head_score(points: np.ndarray, targets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(class_weight="balanced").fit(points, targets)
    return lambda queries: head.predict_proba(queries).max(axis=1)


def knn_score(points: np.ndarray, targets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda queries: (queries @ points.T).max(axis=1)


def mahalanobis_score(points: np.ndarray, targets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.covariance import LedoitWolf

    classes = np.unique(targets)
    means = np.stack([points[targets == c].mean(axis=0) for c in classes])
    precision = LedoitWolf().fit(points - means[np.searchsorted(classes, targets)]).precision_

    def score(queries: np.ndarray) -> np.ndarray:
        # (q - m)ᵀ P (q - m) = qᵀPq - 2 qᵀPm + mᵀPm, for every class at once
        projected = queries @ precision
        distances = ((projected * queries).sum(axis=1)[:, None] - 2 * projected @ means.T
                     + ((means @ precision) * means).sum(axis=1)[None, :])
        return -distances.min(axis=1)

    return score


def combined(first: Fit, second: Fit) -> Fit:
    """The two scores, each standardised by the mean and spread of its cross-fitted training scores
    (in-sample ones flatter k-NN: every training text is its own nearest neighbour), summed."""
    def fit(points: np.ndarray, targets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        names = [str(target) for target in targets]
        scales = [(scores.mean(), scores.std() + 1e-9)
                  for scores in (cross_fitted(part, points, names, targets) for part in (first, second))]
        scorers = [first(points, targets), second(points, targets)]
        return lambda queries: sum((s(queries) - mean) / spread for s, (mean, spread) in zip(scorers, scales,
                                                                                                strict=True))
    return fit


SCORES: dict[str, Fit] = {"head": head_score, "knn": knn_score, "mahalanobis": mahalanobis_score,
                          "knn+head": combined(knn_score, head_score)}


def cross_fitted(fit: Fit, points: np.ndarray, labels: list[str], targets: np.ndarray) -> np.ndarray:
    """Each training text scored by what was fitted on the other folds."""
    folds = fold_of(len(labels), labels)
    scores = np.empty(len(labels))
    for fold in np.unique(folds):
        held_out = folds == fold
        scores[held_out] = fit(points[~held_out], targets[~held_out])(points[held_out])
    return scores


def auroc(in_scope: np.ndarray, foreign: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(in_scope)), np.zeros(len(foreign))], np.r_[in_scope, foreign]))


def let_through_at_95(in_scope: np.ndarray, foreign: np.ndarray) -> float:
    return float(np.mean(foreign >= np.quantile(in_scope, 0.05)))


def read_texts(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def fine_tuned_body(examples: list[tuple[str, str]], seed: int):
    """The base body fine-tuned by SetFit on `examples` (no hold-out), as a `setfit` version's."""
    from trainers.training import TrainingOptions, fine_tune, split_examples

    options = TrainingOptions(base_model=resolve_base_model(BASE_MODEL), num_iterations=FINE_TUNE_ITERATIONS, seed=seed)
    return fine_tune(split_examples(examples, 0, seed), options).model.model_body


def score_all(body_name: str, seed: int, examples: list[tuple[str, str]], encode: Callable[[list[str]], np.ndarray],
              in_scope_texts: list[str], foreign_texts: dict[str, list[str]], in_scope: list[str]) -> list[dict]:
    labels = [intent for _, intent in examples]
    points = encode([text for text, _ in examples])
    targets = np.array([in_scope.index(label) for label in labels])
    in_test = encode(in_scope_texts)
    foreign = {source: encode(texts) for source, texts in foreign_texts.items()}
    out_of_domain = np.concatenate([foreign[source] for source in FOREIGN_SOURCES])
    rows = []
    for name, fit in SCORES.items():
        started = time.perf_counter()
        threshold = conformal_threshold(cross_fitted(fit, points, labels, targets), COVERAGE)
        scorer = fit(points, targets)
        fitted = time.perf_counter() - started
        started = time.perf_counter()
        in_scores = scorer(in_test)
        per_text_ms = (time.perf_counter() - started) * 1000 / len(in_test)
        row = {"body": body_name, "seed": seed, "score": name,
               "in_scope_kept": round(float(np.mean(in_scores >= threshold)), 4),
               "fit_seconds": round(fitted, 3), "score_ms_per_text": round(per_text_ms, 4)}
        for source, vectors in [*foreign.items(), ("out-of-domain", out_of_domain)]:
            scores = scorer(vectors)
            row[f"refused_{source}"] = round(float(np.mean(scores < threshold)), 4)
            row[f"auroc_{source}"] = round(auroc(in_scores, scores), 4)
            row[f"through_at_95_{source}"] = round(let_through_at_95(in_scores, scores), 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    started_at = datetime.now(UTC).replace(microsecond=0)
    frozen = SentenceTransformer(resolve_base_model(BASE_MODEL).location, device="cpu")
    train = read_csv(args.data / "banking77" / "train.csv")
    test = read_csv(args.data / "banking77" / "test.csv")
    rows = []
    for seed in range(SEEDS):
        rng = random.Random(seed)
        in_scope = sorted(rng.sample(sorted(train), IN_SCOPE_INTENTS))
        examples = [(text, intent) for intent in in_scope for text in rng.sample(train[intent], SHOTS)]
        held_out_intents = sorted(set(train) - set(in_scope))
        foreign_texts = {"in-domain": [text for intent in held_out_intents for text in test[intent]]}
        for source in FOREIGN_SOURCES:
            texts = read_texts(args.data / source / "test.csv")
            foreign_texts[source] = rng.sample(texts, min(FOREIGN_PER_SOURCE, len(texts)))
        for body_name in ("frozen", "fine-tuned"):
            body = frozen if body_name == "frozen" else fine_tuned_body(examples, seed)

            def encode(texts: list[str], body=body) -> np.ndarray:
                return normalized(body.encode(texts, batch_size=64, show_progress_bar=False))

            rows += score_all(body_name, seed, examples, encode, [text for intent in in_scope for text in test[intent]],
                              foreign_texts, in_scope)
    results = {"benchmark": "out-of-scope", "started_at": started_at.isoformat(), "machine": in_process_machine(),
               "base_model": BASE_MODEL, "in_scope_intents": IN_SCOPE_INTENTS, "shots": SHOTS, "coverage": COVERAGE,
               "foreign_per_source": FOREIGN_PER_SOURCE, "fine_tune_iterations": FINE_TUNE_ITERATIONS, "rows": rows}
    write_report(args.out, "out-of-scope", started_at, results, markdown(results))


def markdown(results: dict) -> str:
    lines = [f"# Out-of-scope scores ({results['started_at']})", "",
             f"{results['base_model']}, frozen and fine-tuned ({results['fine_tune_iterations']} SetFit iterations), "
             "Banking77-OOS: {results['in_scope_intents']} in-scope intents × "
             f"{results['shots']} texts; threshold: split-conformal at coverage {results['coverage']} on cross-fitted "
             f"training scores. {results['machine']}.", "",
             "| body | score | seed | in-scope kept | refused in-domain "
             "| refused out-of-domain (trec6 / goemotions / sst2) | AUROC in / out of domain "
             "| let through at 95% kept, in / out | fit s | ms per text |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(
            f"| {row['body']} | {row['score']} | {row['seed']} | {row['in_scope_kept']} | {row['refused_in-domain']} | "
            f"{row['refused_out-of-domain']} ({row['refused_trec6']} / {row['refused_goemotions']} / "
            f"{row['refused_sst2']}) | {row['auroc_in-domain']} / {row['auroc_out-of-domain']} | "
            f"{row['through_at_95_in-domain']} / {row['through_at_95_out-of-domain']} | {row['fit_seconds']} | "
            f"{row['score_ms_per_text']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
