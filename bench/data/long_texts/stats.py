"""Token-length statistics and a head-vs-tail signal check for bench/data/long_texts/.

For each data set: all-MiniLM-L6-v2 token counts (no special tokens, no truncation) and
5-fold stratified cross-validated accuracy of TF-IDF (word 1-2 grams, sublinear tf) +
logistic regression on (a) the first 256 tokens, (b) the last 256 tokens, (c) the full text.
Cuts are made on the tokenizer's character offsets, so each view is the original text span.

    python bench/data/long_texts/stats.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench.data.long_texts.build import tokenizer
from bench.long_text_data import load, names

WINDOW = 256


def cv_acc(texts, labels, seeds=(0, 1, 2)):
    accs = []
    for seed in seeds:
        pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2), LogisticRegression(C=10.0, max_iter=2000)
        )
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        accs.append(cross_val_score(pipe, texts, labels, cv=cv).mean())
    return float(np.mean(accs))


def main():
    tok = tokenizer()
    for name in names():
        texts, labels = load(name)
        encs = [tok.encode(t, add_special_tokens=False) for t in texts]
        n = np.array([len(e.ids) for e in encs])
        head = [t[: e.offsets[WINDOW - 1][1]] for t, e in zip(texts, encs, strict=True)]
        tail = [t[e.offsets[-WINDOW][0] :] for t, e in zip(texts, encs, strict=True)]
        print(
            f"{name}: docs={len(texts)} labels={len(set(labels))} tokens "
            f"min={n.min()} median={np.median(n):.0f} p90={np.percentile(n, 90):.0f} max={n.max()} "
            f"share>512 (head and tail {WINDOW} disjoint)={np.mean(n >= 2 * WINDOW):.2f}"
        )
        print(
            f"  TF-IDF+LR 5-fold CV acc (mean of 3 shuffles): head{WINDOW}={cv_acc(head, labels):.3f} "
            f"tail{WINDOW}={cv_acc(tail, labels):.3f} full={cv_acc(texts, labels):.3f} "
            f"chance={max(labels.count(x) for x in set(labels)) / len(labels):.3f}"
        )


if __name__ == "__main__":
    main()
