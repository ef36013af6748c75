"""A version's `long_texts` policy at training: the body's embeddings of texts read by a policy
(fewshot/serving/long_texts.py, the same plan serving follows), and `auto`, which picks the policy
on the training examples themselves.

`auto`: where none of the examples is longer than the window, every policy reads them alike, and
nothing says one is better: `truncate`, the cheapest (the choice says so). Otherwise `chunks`, which
reads all of a text, unless another policy is clearly better on these examples: each policy embeds
them, a logistic-regression head is fitted and scored out of fold (stratified k-fold over all
examples: few-shot sets are too small to hold long texts out only), and a policy replaces chunks
only where it is right on significantly more of the long examples (an exact one-sided sign test
on the examples the two disagree on, p < SIGNIFICANCE).

Why not simply the best out-of-fold score: measured (make bench-long-texts, three real
long-document sets, 8 and 16 examples per label, 10 seeds), the policies differ by 0-6 points on
test texts, less than one of 16-80 training documents, so the best score was mostly noise: it was
that seed's best policy on 1-4 of 10 seeds, and 1.1-1.9 points behind the best fixed policy on 5 of
6 data set × shots; chunks was within 1 point of the best on 5 of 6. Published comparisons (Sun et
al. 2019; Park et al. 2022, "Efficient Classification of Long Documents Using Transformers") find
the best policy depends on the data set: where the examples show it clearly, the choice follows them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from setfit import SetFitModel

from fewshot.serving.long_texts import AUTO, CHUNKS, POLICIES, TRUNCATE, LongTextReader, window_of

logger = logging.getLogger("fewshot.training")

MAX_FOLDS = 5
SIGNIFICANCE = 0.05
"""A policy replaces chunks when a sign test says it is right more often with p below this."""


@dataclass(frozen=True)
class LongTextsChoice:
    """What a version reads of a long text, and why (its model view's `long_texts`)."""

    policy: str
    requested: str
    window: int | None
    """The body's window in tokens (None: no limit)."""
    long_examples: int = 0
    """Examples longer than the window."""
    scores: dict[str, float] = field(default_factory=dict)
    """`auto`: each policy's out-of-fold accuracy on the long examples."""
    reason: str = ""
    embeddings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """`auto` with long examples: every example's embedding by the chosen policy (the body as it was)."""
    long: frozenset[str] = field(default_factory=frozenset, repr=False)
    """The examples longer than the window."""

    def metadata(self) -> dict[str, object]:
        return {"long_texts": self.policy, "long_texts_requested": self.requested, "window_tokens": self.window,
                "long_texts_examples": self.long_examples, "long_texts_scores": self.scores or None,
                "long_texts_reason": self.reason}


def reader(model: SetFitModel, policy: str) -> LongTextReader | None:
    """The body's reader for `policy`; None where its tokenizer is not a fast one or it has no window."""
    return LongTextReader.for_body(model.model_body, policy)


def embed_texts(model: SetFitModel, texts: Sequence[str], policy: str) -> np.ndarray:
    """The body's embeddings of `texts` as SetFit feeds its head (`normalize_embeddings` applied), each
    text read by `policy`: what serving computes for them (fewshot/serving/model_loading.py)."""
    texts = list(texts)
    found = reader(model, policy) if policy != TRUNCATE else None
    reading = found.read(texts) if found is not None else None
    if reading is None or reading.texts_as_sent(texts):
        return np.asarray(model.model_body.encode(texts, normalize_embeddings=model.normalize_embeddings,
                                                  convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    body = model.model_body
    vectors = np.asarray(body.encode(reading.segments, convert_to_numpy=True, show_progress_bar=False),
                         dtype=np.float32)
    rows = reading.pool(vectors, renormalize=type(body[len(body) - 1]).__name__ == "Normalize")
    if model.normalize_embeddings:
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def choose(model: SetFitModel, texts: Sequence[str], targets: Sequence[object], requested: str,
           multi_label: bool, class_weight: str | None) -> LongTextsChoice:
    """The policy for a version trained on `texts` (its examples, evaluation ones included) with its
    body as `model` has it now."""
    window = window_of(model.model_body)
    found = reader(model, TRUNCATE)
    texts = list(texts)
    long = np.flatnonzero(found.read(texts).truncated) if found is not None else np.empty(0, dtype=np.int64)
    if requested != AUTO:
        return LongTextsChoice(requested, requested, window, len(long), reason="as requested",
                               long=frozenset(texts[i] for i in long))
    if found is None:
        return LongTextsChoice(TRUNCATE, AUTO, window, reason="the body has no window to exceed")
    if not len(long):
        return LongTextsChoice(TRUNCATE, AUTO, window, reason=(
            f"no example is longer than the window ({window} tokens): every policy reads them alike; "
            "truncate is the cheapest"))
    folds = _folds(targets, multi_label)
    if folds is None:
        return LongTextsChoice(CHUNKS, AUTO, window, len(long), reason=(
            "too few examples per label to compare the policies out of fold (2 per label at least): chunks, "
            "which reads all of a text"), long=frozenset(texts[i] for i in long))
    by_policy = {TRUNCATE: embed_texts(model, texts, TRUNCATE)}
    for policy in POLICIES[1:]:  # the policies differ on the long examples only: those are embedded again
        by_policy[policy] = by_policy[TRUNCATE].copy()
        by_policy[policy][long] = embed_texts(model, [texts[i] for i in long], policy)
    right = {policy: _out_of_fold_right(vectors, targets, long, folds, multi_label, class_weight)
             for policy, vectors in by_policy.items()}
    scores = {policy: round(float(hits.mean()), 4) for policy, hits in right.items()}
    better = {policy: sign_test(right[policy], right[CHUNKS]) for policy in POLICIES if policy != CHUNKS}
    clear = [policy for policy, p in better.items() if p < SIGNIFICANCE]
    best = max(clear, key=lambda policy: (scores[policy], -POLICIES.index(policy))) if clear else CHUNKS
    logger.info("long_texts auto: %s on %d long examples (%s)", best, len(long),
                ", ".join(f"{policy} {score:.3f}" for policy, score in scores.items()))
    if best == CHUNKS:
        reason = (f"chunks reads all of a text, and no policy was right on significantly more of the {len(long)} "
                  f"examples longer than the window, out of fold (sign test p: "
                  + ", ".join(f"{policy} {p:.2f}" for policy, p in better.items()) + ")")
    else:
        reason = (f"right on significantly more of the {len(long)} examples longer than the window than chunks, "
                  f"out of fold (sign test p = {better[best]:.3f})")
    return LongTextsChoice(best, AUTO, window, len(long), scores, reason=reason,
                           embeddings=dict(zip(texts, by_policy[best], strict=True)),
                           long=frozenset(texts[i] for i in long))


def sign_test(ours: np.ndarray, theirs: np.ndarray) -> float:
    """One-sided exact sign test: the chance of `ours` being right where `theirs` is wrong at least as
    often as it was, among the examples on which they disagree, were each as likely to win."""
    wins = int(np.sum(ours & ~theirs))
    disagreements = wins + int(np.sum(theirs & ~ours))
    if disagreements == 0:
        return 1.0
    return sum(math.comb(disagreements, k) for k in range(wins, disagreements + 1)) / 2 ** disagreements


def _folds(targets: Sequence[object], multi_label: bool) -> list[tuple[np.ndarray, np.ndarray]] | None:
    from sklearn.model_selection import KFold, StratifiedKFold

    if multi_label:
        splits = min(MAX_FOLDS, len(targets))
        return list(KFold(splits, shuffle=True, random_state=0).split(np.zeros(len(targets)))) if splits >= 2 else None
    keys = ["\x00none" if target is None else str(target) for target in targets]
    smallest = min(keys.count(key) for key in set(keys))
    if smallest < 2:
        return None
    return list(StratifiedKFold(min(MAX_FOLDS, smallest), shuffle=True, random_state=0).split(np.zeros(len(keys)),
                                                                                                keys))


def _out_of_fold_right(vectors: np.ndarray, targets: Sequence[object], long: np.ndarray,
                       folds: list[tuple[np.ndarray, np.ndarray]], multi_label: bool,
                       class_weight: str | None) -> np.ndarray:
    """Whether heads fitted without them are right on each of the `long` examples (multi-label: on
    every label's decision)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    if multi_label:
        matrix = MultiLabelBinarizer().fit_transform([tuple(target or ()) for target in targets])  # type: ignore[arg-type]
    else:
        matrix = np.array(["\x00none" if target is None else str(target) for target in targets])
    predicted = np.empty_like(matrix)
    for train, test in folds:
        head = LogisticRegression(class_weight=class_weight, max_iter=1000)
        if multi_label:
            usable = matrix[train].min(axis=0) != matrix[train].max(axis=0)
            predicted[test] = 0
            if usable.any():
                fitted = OneVsRestClassifier(head).fit(vectors[train], matrix[train][:, usable])
                predicted[np.ix_(test, np.flatnonzero(usable))] = fitted.predict(vectors[test])
        elif len(set(matrix[train])) < 2:
            predicted[test] = matrix[train][0]
        else:
            predicted[test] = LogisticRegression(class_weight=class_weight, max_iter=1000).fit(
                vectors[train], matrix[train]).predict(vectors[test])
    right = predicted[long] == matrix[long]
    return right.all(axis=1) if multi_label else right
