"""Which score tells out-of-scope text apart best: measured before the service changes its abstention.

    make bench-out-of-scope   (or: .venv/bin/python -m bench.out_of_scope [--data ../shared/data])

Banking77-OOS protocol (Zhang et al., 2021), per seed: 50 of the 77 intents are in scope, 8
texts each, split as the service splits them by default (trainers/training.py: 20% of each label held
out for evaluation, so 6 trained on and 2 evaluated); the other 27 intents' test texts are *in-domain*
out-of-scope text (banking questions no label covers). *Out-of-domain* out-of-scope text: 300 test
texts each of trec6 (questions), goemotions (Reddit comments) and sst2 (film reviews). In-scope test
texts: the 50 intents' test texts. Every text is embedded by the frozen all-MiniLM-L6-v2 body (as a
`head` version serves it) and by that body fine-tuned with SetFit on the seed's training texts
(`FINE_TUNE_ITERATIONS` iterations, as a `setfit` version; the service's default is 20). Scores,
higher meaning more in scope:
- head: the top probability of the logistic-regression head (class-balanced), what abstention
  thresholded before scope scores;
- knn: cosine similarity to the nearest training example;
- mahalanobis: minus the smallest class-conditional Mahalanobis distance, one covariance shared by
  the classes and shrunk (Ledoit-Wolf), on unit-length embeddings;
- knn+head: the two above, each standardised by its training scores' mean and spread, summed.
These four are calibrated on the training texts alone: each one's score cross-fitted (5 folds: scored
by what was fitted without it), then the split-conformal threshold at coverage 0.95.
- service: what a version does (trainers/scope.py, fewshot/serving/scope.py): knn, calibrated on the
  cross-fitted training texts and the evaluation texts for the frozen body, on the evaluation texts
  alone for the fine-tuned one (it saw the training texts);
- service+null (frozen body): the same trained with `label: null` examples too, 2 training texts
  of each of the 27 held-out intents: the head gets a "none of these" class and the score is lowered
  near them; a text is refused where that class is the most probable or the score is below the
  threshold, as the service does.
Reported per score: in-scope test texts kept at that threshold (the promise: ≥ 0.93), out-of-scope
refused (in-domain; out-of-domain by source), AUROC and the out-of-scope share let through at 95%
in-scope kept (threshold set on the test texts themselves: the ranking alone). 3 seeds. Then the
serving cost of the score in-process: microseconds per text of `ScopeIndex.scores` against 400 and
4,000 training embeddings, beside the body's own forward pass. Writes
bench/results/out-of-scope-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.report_files import in_process_machine, write_report
from bench.retraining import read_csv
from fewshot.base_models import resolve_base_model
from fewshot.learning.audit import fold_of
from fewshot.learning.selection import normalized
from fewshot.serving.scope import ScopeIndex
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT
from trainers.scope import fit_scope
from trainers.thresholds import conformal_threshold

RESULTS = PROJECT_ROOT / "bench" / "results"
FINE_TUNE_ITERATIONS = 5
IN_SCOPE_INTENTS, SHOTS, SEEDS, COVERAGE, FOREIGN_PER_SOURCE, NEGATIVES_PER_INTENT = 50, 8, 3, 0.95, 300, 2
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


def fine_tuned_body(train: list[tuple[str, str]], seed: int):
    """The base body fine-tuned by SetFit on `train` (the split's training part), as a `setfit` version's."""
    from trainers.training import TrainingOptions, fine_tune, split_examples

    options = TrainingOptions(base_model=resolve_base_model(BASE_MODEL), num_iterations=FINE_TUNE_ITERATIONS, seed=seed)
    return fine_tune(split_examples(train, 0, seed), options).model.model_body


Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Embedded:
    """One seed's texts, embedded by one body."""

    train: np.ndarray
    train_labels: list[str]
    evaluation: np.ndarray
    evaluation_labels: list[str]
    in_scope_test: np.ndarray
    foreign: dict[str, np.ndarray]
    negatives: np.ndarray
    """`label: null` training examples (service+null)."""


def service_scorer(data: Embedded, body_saw_training: bool, with_negatives: bool) -> tuple[Scorer, float]:
    """The service's scope (trainers/scope.py), and with negatives the head's "none of these" class too."""
    from sklearn.linear_model import LogisticRegression

    negatives = data.negatives if with_negatives else data.train[:0]
    labels: list[str | None] = [*data.train_labels, *[None] * len(negatives)]
    points = np.concatenate([data.train, negatives])
    index, scope = fit_scope(points, labels, data.evaluation, data.evaluation_labels, COVERAGE, body_saw_training)
    if not with_negatives:
        return index.scores, scope.threshold
    classes = np.array([label or "" for label in labels])  # "": the none-of-these class
    head = LogisticRegression(class_weight="balanced", max_iter=1000).fit(points, classes)
    none_column = list(head.classes_).index("")

    def score(queries: np.ndarray) -> np.ndarray:
        refused = head.predict_proba(queries).argmax(axis=1) == none_column
        return np.where(refused, -2.0, index.scores(queries))  # below any threshold: the class refuses it

    return score, scope.threshold


def score_all(body_name: str, seed: int, data: Embedded) -> list[dict]:
    targets = np.unique(data.train_labels, return_inverse=True)[1]
    out_of_domain = np.concatenate([data.foreign[source] for source in FOREIGN_SOURCES])
    scorers: dict[str, Callable[[], tuple[Scorer, float | None]]] = {
        name: lambda fit=fit: (fit(data.train, targets),
                               conformal_threshold(cross_fitted(fit, data.train, data.train_labels, targets), COVERAGE))
        for name, fit in SCORES.items()}
    scorers["service"] = lambda: service_scorer(data, body_name == "fine-tuned", with_negatives=False)
    if body_name == "frozen":
        scorers["service+null"] = lambda: service_scorer(data, False, with_negatives=True)
    rows = []
    for name, make in scorers.items():
        started = time.perf_counter()
        scorer, threshold = make()
        fitted = time.perf_counter() - started
        started = time.perf_counter()
        in_scores = scorer(data.in_scope_test)
        per_text_ms = (time.perf_counter() - started) * 1000 / len(in_scores)
        row = {"body": body_name, "seed": seed, "score": name, "threshold": round(float(threshold), 4),
               "in_scope_kept": round(float(np.mean(in_scores >= threshold)), 4),
               "fit_seconds": round(fitted, 3), "score_ms_per_text": round(per_text_ms, 4)}
        for source, vectors in [*data.foreign.items(), ("out-of-domain", out_of_domain)]:
            scores = scorer(vectors)
            row[f"refused_{source}"] = round(float(np.mean(scores < threshold)), 4)
            row[f"auroc_{source}"] = round(auroc(in_scores, scores), 4)
            row[f"through_at_95_{source}"] = round(let_through_at_95(in_scores, scores), 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def serving_cost(frozen, texts: list[str]) -> dict:
    """Microseconds per text of the scope score (the service's ScopeIndex) against 400 and 4,000 training
    embeddings, by batch size, beside the frozen body's forward pass (sentence-transformers) over the same batches."""
    generator = np.random.default_rng(0)
    dimensions = frozen.get_embedding_dimension()
    cost: dict = {"body_us_per_text": {}, "scope_us_per_text": {}}
    for batch in (1, 16, 64):
        chosen = texts[:batch]
        frozen.encode(chosen, batch_size=batch)  # warm
        started, calls = time.perf_counter(), 0
        while time.perf_counter() - started < 2:
            queries = frozen.encode(chosen, batch_size=batch, show_progress_bar=False)
            calls += 1
        cost["body_us_per_text"][str(batch)] = round((time.perf_counter() - started) * 1e6 / calls / batch, 1)
        for points in (400, 4000):
            index = ScopeIndex.of(generator.standard_normal((points, dimensions)).astype(np.float32))
            started, calls = time.perf_counter(), 0
            while time.perf_counter() - started < 1:
                index.scores(queries)
                calls += 1
            cost["scope_us_per_text"][f"{points} examples, batch {batch}"] = round(
                (time.perf_counter() - started) * 1e6 / calls / batch, 2)
    print(cost, flush=True)
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from trainers.training import split_examples

    started_at = datetime.now(UTC).replace(microsecond=0)
    frozen = SentenceTransformer(resolve_base_model(BASE_MODEL).location, device="cpu")
    train = read_csv(args.data / "banking77" / "train.csv")
    test = read_csv(args.data / "banking77" / "test.csv")
    rows = []
    for seed in range(args.seeds):
        rng = random.Random(seed)
        in_scope = sorted(rng.sample(sorted(train), IN_SCOPE_INTENTS))
        examples = [(text, intent) for intent in in_scope for text in rng.sample(train[intent], SHOTS)]
        split = split_examples(examples, None, seed)  # the service's default hold-out
        held_out_intents = sorted(set(train) - set(in_scope))
        negatives = [text for intent in held_out_intents for text in rng.sample(train[intent], NEGATIVES_PER_INTENT)]
        foreign_texts = {"in-domain": [text for intent in held_out_intents for text in test[intent]]}
        for source in FOREIGN_SOURCES:
            texts = read_texts(args.data / source / "test.csv")
            foreign_texts[source] = rng.sample(texts, min(FOREIGN_PER_SOURCE, len(texts)))
        for body_name in ("frozen", "fine-tuned"):
            body = frozen if body_name == "frozen" else fine_tuned_body(split.train, seed)  # type: ignore[arg-type]

            def encode(texts: list[str], body=body) -> np.ndarray:
                return normalized(body.encode(texts, batch_size=64, show_progress_bar=False))

            data = Embedded(encode([text for text, _ in split.train]), [str(label) for _, label in split.train],
                            encode([text for text, _ in split.evaluation]),
                            [str(label) for _, label in split.evaluation],
                            encode([text for intent in in_scope for text in test[intent]]),
                            {source: encode(texts) for source, texts in foreign_texts.items()}, encode(negatives))
            rows += score_all(body_name, seed, data)
    cost = serving_cost(frozen, [text for texts in test.values() for text in texts])
    results = {"benchmark": "out-of-scope", "started_at": started_at.isoformat(), "machine": in_process_machine(),
               "base_model": BASE_MODEL, "in_scope_intents": IN_SCOPE_INTENTS, "shots": SHOTS, "coverage": COVERAGE,
               "foreign_per_source": FOREIGN_PER_SOURCE, "fine_tune_iterations": FINE_TUNE_ITERATIONS,
               "negatives_per_held_out_intent": NEGATIVES_PER_INTENT, "rows": rows, "serving_cost": cost,
               "summary": summary(rows)}
    write_report(args.out, "out-of-scope", started_at, results, markdown(results))


def summary(rows: list[dict]) -> list[dict]:
    """Per body and score: the mean over seeds, and the worst seed's in-scope kept."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["body"], row["score"]), []).append(row)
    keys = ("in_scope_kept", "refused_in-domain", "refused_out-of-domain", "auroc_in-domain", "auroc_out-of-domain",
            "through_at_95_in-domain", "through_at_95_out-of-domain")
    return [{"body": body, "score": score, "seeds": len(group),
             **{key: round(float(np.mean([row[key] for row in group])), 4) for key in keys},
             "worst_in_scope_kept": min(row["in_scope_kept"] for row in group)}
            for (body, score), group in grouped.items()]


def markdown(results: dict) -> str:
    lines = [f"# Out-of-scope scores ({results['started_at']})", "",
             f"{results['base_model']}, frozen and fine-tuned ({results['fine_tune_iterations']} SetFit iterations), "
             f"Banking77-OOS: {results['in_scope_intents']} in-scope intents × {results['shots']} texts (the service's "
             f"default 20% hold-out: 6 trained on, 2 evaluated); threshold: split-conformal at coverage "
             f"{results['coverage']}. {results['machine']}.", "",
             "## Mean over seeds", "",
             "| body | score | in-scope kept (worst seed) | refused in-domain | refused out-of-domain "
             "| AUROC in / out of domain | let through at 95% kept, in / out |",
             "|---|---|---|---|---|---|---|"]
    for row in results["summary"]:
        lines.append(
            f"| {row['body']} | {row['score']} | {row['in_scope_kept']} ({row['worst_in_scope_kept']}) | "
            f"{row['refused_in-domain']} | {row['refused_out-of-domain']} | {row['auroc_in-domain']} / "
            f"{row['auroc_out-of-domain']} | {row['through_at_95_in-domain']} / {row['through_at_95_out-of-domain']} |")
    cost = results["serving_cost"]
    lines += ["", "## Serving cost in-process (µs per text)", "",
              "body forward pass, by batch: " + ", ".join(
                  f"{batch}: {value}" for batch, value in cost["body_us_per_text"].items()) + "; "
              "scope score: " + ", ".join(f"{key}: {value}" for key, value in cost["scope_us_per_text"].items()),
              "", "## Every seed", "",
              "| body | score | seed | threshold | in-scope kept | refused in-domain "
              "| refused out-of-domain (trec6 / goemotions / sst2) | AUROC in / out of domain "
              "| let through at 95% kept, in / out | fit s | ms per text |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(
            f"| {row['body']} | {row['score']} | {row['seed']} | {row['threshold']} | {row['in_scope_kept']} | "
            f"{row['refused_in-domain']} | {row['refused_out-of-domain']} ({row['refused_trec6']} / "
            f"{row['refused_goemotions']} / {row['refused_sst2']}) | {row['auroc_in-domain']} / "
            f"{row['auroc_out-of-domain']} | {row['through_at_95_in-domain']} / {row['through_at_95_out-of-domain']} | "
            f"{row['fit_seconds']} | {row['score_ms_per_text']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
