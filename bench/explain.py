"""Explanations beside predictions (issue 44): how faithful POST /v1/explain's word weights are, what an
explanation costs, and whether its nearest examples point at planted wrong labels. Peers in the same run.

    make bench-explain     (or: .venv/bin/python -m bench.explain [--data ../shared/data])
    make bench-explain EXPLAIN_ARGS="--only planted"    (one section alone: faithfulness, cost or planted;
                                                         --phases takes several, comma-separated)

Server: `bentoml serve` as a user starts it (harness/live_server.py: temporary MODEL_PATH, embedded
trainer) with INFERENCE_BACKEND=AUTO, the default (the harness sets TORCH). Every version is a `head`
version of all-MiniLM-L6-v2 trained through POST /v1/train (`holdout_fraction: 0`: all of the
examples are the training set) and pinned as `name:version` in every request; after its first
prediction the bench waits until AUTO has exported and swapped in the backend it chose (the model view's
`backend` no longer `exporting`), so that every served number comes from the backend users get.

1. Faithfulness (the deletion curve). banking77 (77 labels) and trec6 (6), 8 examples per label drawn
   by each of --seeds; per seed and data set --texts test texts of MIN_WORDS to MAX_EXPLAIN_SPANS words
   (seeded; a longer one would be explained by sentences).
   For each text and the label the served version predicts (the `label` /v1/explain explained), the
   words are ranked by:
   - ours: the occlusion weights of POST /v1/explain (method occlusion, granularity word), from the served
     backend (AUTO: int8 on this CPU);
   - integrated gradients (the reference): captum's LayerIntegratedGradients over the word-embedding
     layer of the same version loaded in-process in torch float32 (SetFitModel.from_pretrained on its
     directory in the server's store), the head re-expressed in torch as softmax(W·e + b) on the sentence
     embedding (normalized where the model says `normalize_embeddings`), checked against SetFit's own
     predict_proba; target: the explained label's probability; baseline: every token but [CLS]/[SEP]
     replaced by [PAD]'s id (so the baseline is [PAD]'s embedding, positions kept); IG_STEPS steps.
     Token attributions are summed into the words of `spans_of(text, "word")` through the tokenizer's
     offset mapping (a token belongs to the word it overlaps; punctuation tokens belong to none);
   - occlusion computed in torch float32 (a diagnostic: what the served int8 backend costs ours);
   - random: k words drawn at random (seeded), the fall averaged over RANDOM_DRAWS draws.
   For k in KS the top-k words are removed with `without(text, spans)` (fewshot/learning/explanations.py,
   what the route uses too) and the fall of the explained label's probability is measured twice: with the
   torch float32 model in-process (IG's own model: the conservative comparison for ours, and the one the
   goal is judged on) and with the served model (POST /v1/predict, top_k = number of labels).
   Reported per data set: mean fall with a 95% bootstrap CI over texts (seeds pooled), and ours − IG
   paired, with its CI. Goal: ours' mean fall ≥ IG's at k = 1, 3 and 5 (torch), and at least twice
   random's.
2. Cost. One client, sequential: a 20-word and a 200-word text (banking77 texts; the 200-word one joins
   seeded banking77 texts and cuts at the 200th word), --cost-requests explanations (method both,
   granularity word) and as many predictions of the same text, alternated, after COST_WARMUP of each, on
   the first banking77 version (616 training examples for the neighbours). Median and p90 of each; the
   granularity the service used (above MAX_EXPLAIN_SPANS words it falls back to sentences) and the spans.
   Goal: a 20-word explanation's median ≤ COST_GOAL_FACTOR × the prediction's median.
3. Nearest examples on planted wrong labels, planted as the label audit of bench/active_learning.py
   plants them (same draw: banking77, 8 examples per label, FLIPPED_SHARE of them given a random other
   label; --audit-seeds). A `head` version trained on the noisy set predicts every banking77 test text.
   The audit bench asks of training examples whether their label is wrong; here the test side's natural
   equivalent is the misprediction a planted label explains: a test text of true label T predicted W where
   a T text was planted as W (the "planted pair"). Beside it, the other mispredictions into a label some
   planted example was given (the brief's wider reading), the mispredictions into any other label, and
   correct predictions (samples of SAMPLES texts per seed). For each, POST /v1/explain (method neighbors,
   top_k NEIGHBOURS): the share whose top-1 nearest example is a planted one, against chance (planted /
   training examples) and the topic chance (planted among the training texts of the test text's true
   label: what a neighbour that found only the topic would give); also whether the top-1 is the culprit
   (a planted T text labelled W), of the text's topic, and labelled as predicted. The same of the route's
   `support` (the top_k training examples nearest the text among those given the explained label, here the
   predicted W): its top-1 planted, a planted one in its top NEIGHBOURS, its top-1 the culprit, against
   support's chance (planted among the training examples labelled W: a top-1 drawn from support's pool at
   random). Control: the same draw with no label planted, trained and served the same way: the planted pairs
   it mispredicts too were not the planting's doing; those it answers right were (the share of these whose
   top-1 is planted is reported, nearest's and support's). The results keep each planted pair's top-1 of both.

Every explanation is checked against the route's contract (Served.check), `support` included: present with
method neighbors/both and absent with occlusion, every example of the explained label (multi-label: among its
labels), best first, at most top_k, holding nearest's examples of that label.

Writes bench/results/explain-<time>.json and .md (the sections run; --note adds a sentence to the header, e.g.
where the others are); the Markdown also goes to stdout.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.active_learning import AUDIT_SHOTS, FLIPPED_SHARE, flipped_labels
from bench.report_files import server_machine, write_report
from bench.retraining import read_csv
from fewshot.learning.explanations import Span, spans_of, without
from harness.fixtures import BASE_MODEL
from harness.live_server import PROJECT_ROOT, LiveServer, wait_for_job

RESULTS = PROJECT_ROOT / "bench" / "results"
DATA = PROJECT_ROOT.parent / "shared" / "data"
DATA_SETS = ("banking77", "trec6")
SHOTS = 8
MIN_WORDS = 6
KS = (1, 3, 5)
RANDOM_DRAWS = 5
IG_STEPS = 32
BOOTSTRAP = 2000
EXPLAIN_TEXTS = 16
"""Texts per POST /v1/explain (the route's limit)."""
PREDICT_TEXTS = 256
"""Texts per POST /v1/predict (MAX_TEXTS_PER_REQUEST's default)."""
MAX_EXPLAIN_SPANS = 64
"""The route's word limit, above which it explains sentences (fewshot/api: MAX_EXPLAIN_SPANS)."""
COST_WORDS = (20, 200)
COST_WARMUP = 5
COST_GOAL_FACTOR = 10.0
RANDOM_FACTOR = 2.0
"""Ours is 'far steeper than random' when its mean fall is at least this many times random's."""
NEIGHBOURS = 3
PHASES = ("faithfulness", "cost", "planted")
"""The sections, in order (--phases, --only)."""
METHODS = ("ours", "ours, first round alone", "integrated gradients", "occlusion (torch fp32)", "random")
"""ours: the spans by `rank` (two rounds of occlusion); its first round alone: by `weight` (each span left out
alone), what the route gave before its second round; occlusion (torch fp32): that first round in-process."""
PAIR = "planted pair: true T predicted W, and a T text was planted as W"
INTO_PLANTED = "other misprediction into a label given to a planted example"
OTHER_WRONG = "misprediction into a label with no planted example"
CORRECT = "correct prediction"
SAMPLES = {INTO_PLANTED: 300, OTHER_WRONG: 300, CORRECT: 200}
"""Texts explained per audit seed and group, at most (a sample where the group is large; the planted pairs all)."""


# Data

def distinct(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def training_examples(train: dict[str, list[str]], seed: int) -> list[dict[str, str]]:
    """SHOTS examples per label, drawn by `seed` (a text never twice: the example set keeps the first)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    examples = []
    for label in sorted(train):
        for text in rng.sample(distinct(train[label]), SHOTS):
            if text not in seen:
                seen.add(text)
                examples.append({"text": text, "label": label})
    return examples


def test_texts(test: dict[str, list[str]], seed: int, count: int) -> list[str]:
    """`count` test texts of MIN_WORDS to MAX_EXPLAIN_SPANS words (longer ones are explained by sentences),
    drawn by `seed`."""
    long_enough = distinct([text for label in sorted(test) for text in test[label]
                            if MIN_WORDS <= len(spans_of(text, "word")) <= MAX_EXPLAIN_SPANS])
    return random.Random(10_000 + seed).sample(long_enough, min(count, len(long_enough)))


def planted_examples(train: dict[str, list[str]], seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """bench/active_learning.py's label audit draw: (the noisy training set, the planted examples with their
    `true` label), FLIPPED_SHARE of AUDIT_SHOTS per label given a random other label."""
    texts, given, noisy, flipped = flipped_labels(train, seed)
    examples = [{"text": text, "label": label} for text, label in zip(texts, noisy, strict=True)]
    planted = [{"text": texts[row], "label": noisy[row], "true": given[row]} for row in sorted(flipped)]
    return examples, planted


def text_of_words(pool: list[str], words: int, seed: int) -> str:
    """A text of exactly `words` words: one pool text that long, else seeded pool texts joined and cut at
    the last word."""
    exact = [text for text in pool if len(spans_of(text, "word")) == words]
    if exact:
        return random.Random(seed).choice(sorted(exact))
    rng = random.Random(seed)
    joined = ""
    while len(spans_of(joined, "word")) < words:
        joined = f"{joined} {rng.choice(pool)}".strip()
    return joined[:spans_of(joined, "word")[words - 1].end] + "."


# Statistics

def bootstrap(values: list[float], seed: int = 0) -> dict[str, float | int]:
    """Mean and its 95% percentile-bootstrap interval (BOOTSTRAP resamples)."""
    array = np.asarray(values, dtype=float)
    if not len(array):
        return {"n": 0}
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), size=(BOOTSTRAP, len(array)))].mean(axis=1)
    return {"n": len(array), "mean": round(float(array.mean()), 5),
            "ci_low": round(float(np.percentile(means, 2.5)), 5),
            "ci_high": round(float(np.percentile(means, 97.5)), 5)}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# The in-process reference: the same version in torch float32

class TorchReference:
    """A stored version through its torch body and its logistic-regression head re-expressed in torch."""

    def __init__(self, directory: Path, labels: list[str]) -> None:
        import torch
        from setfit import SetFitModel

        from fewshot.serving.labels import column_labels

        self.torch = torch
        self.model = SetFitModel.from_pretrained(str(directory), labels=labels)
        self.body = self.model.model_body
        self.body.eval()
        head = self.model.model_head
        self.columns = column_labels(head, labels)
        coefficients = np.asarray(head.coef_, dtype=np.float32)
        intercepts = np.asarray(head.intercept_, dtype=np.float32)
        if coefficients.shape[0] == 1:  # two classes: p1 = sigmoid(w·e + b) = softmax([0, w·e + b])
            coefficients = np.vstack([np.zeros_like(coefficients), coefficients])
            intercepts = np.concatenate([np.zeros_like(intercepts), intercepts])
        self.weight = torch.from_numpy(coefficients)
        self.bias = torch.from_numpy(intercepts)
        self.normalize = bool(self.model.normalize_embeddings)
        self.tokenizer = self.body.tokenizer
        self.max_length = self.body.max_seq_length
        self.cache: dict[str, np.ndarray] = {}

    def column(self, label: str) -> int:
        return self.columns.index(label)

    def tokens(self, texts: list[str], offsets: bool = False) -> Any:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                              return_offsets_mapping=offsets)

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        """Probabilities of every column: the body's sentence embedding (its own Normalize module included),
        SetFit's normalization where the model asks for it, then the head."""
        embedding = self.body({"input_ids": input_ids, "attention_mask": attention_mask,
                               "token_type_ids": token_type_ids})["sentence_embedding"]
        if self.normalize:
            embedding = self.torch.nn.functional.normalize(embedding, p=2, dim=1)
        return self.torch.softmax(embedding @ self.weight.T + self.bias, dim=1)

    def probabilities(self, texts: list[str], batch: int = 64) -> np.ndarray:
        """Each text's probabilities (cached by text: the deletion variants of methods often coincide)."""
        missing = distinct([text for text in texts if text not in self.cache])
        with self.torch.no_grad():
            for start in range(0, len(missing), batch):
                chunk = missing[start:start + batch]
                tokens = self.tokens(chunk)
                rows = self.forward(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]).numpy()
                self.cache.update(zip(chunk, rows, strict=True))
        return np.stack([self.cache[text] for text in texts])

    def head_check(self, texts: list[str]) -> float:
        """Largest difference between these probabilities and SetFit's own predict_proba."""
        theirs = np.asarray(self.model.predict_proba(texts, as_numpy=True))
        return float(np.abs(self.probabilities(texts) - theirs).max())

    def integrated_gradients(self, text: str, label: str, spans: list[Span]) -> tuple[list[float], float]:
        """Each word's attribution (its tokens' attributions summed) and IG's convergence delta."""
        from captum.attr import LayerIntegratedGradients

        torch = self.torch
        tokens = self.tokens([text], offsets=True)
        ids, mask, types = tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]
        special = torch.tensor(self.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True),
                               dtype=torch.bool)
        # [CLS] ... [SEP] kept, every other token [PAD]: the baseline is "no words" with the text's shape
        baseline = torch.where(special, ids[0], torch.tensor(self.tokenizer.pad_token_id)).unsqueeze(0)
        layer = self.body[0].auto_model.embeddings.word_embeddings
        attributions, delta = LayerIntegratedGradients(self.forward, layer).attribute(
            inputs=ids, baselines=baseline, additional_forward_args=(mask, types), target=self.column(label),
            n_steps=IG_STEPS, internal_batch_size=IG_STEPS, return_convergence_delta=True)
        per_token = attributions.sum(dim=-1)[0].detach().numpy()
        words = [0.0] * len(spans)
        for value, (start, end), is_special in zip(per_token, tokens["offset_mapping"][0].tolist(), special.tolist(),
                                                   strict=True):
            if is_special or end <= start:
                continue
            word = next((j for j, span in enumerate(spans) if start < span.end and end > span.start), None)
            if word is not None:
                words[word] += float(value)
        return words, float(delta[0])


# The server

class Served:
    """The live server's routes the bench calls, each answer checked."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, timeout=300)
        self.problems: dict[str, dict[str, Any]] = {}
        """What the route did against its contract: each kind of problem, how often, its first case."""
        self.cache: dict[tuple[str, str], dict[str, float]] = {}

    def train(self, name: str, examples: list[dict[str, str]]) -> dict[str, Any]:
        """A `head` version of MiniLM on every example, served by the backend AUTO chose: its record."""
        began = time.perf_counter()
        response = self.client.post("/v1/train", json={"model_name": name, "base_model": BASE_MODEL, "strategy": "head",
                                                       "holdout_fraction": 0, "examples": examples})
        response.raise_for_status()
        job = wait_for_job(self.client, response.json()["job_id"], {"completed", "failed"}, timeout=900)
        if job["status"] != "completed":
            raise RuntimeError(f"{name}: {job}")
        tag = f"{name}:{job['model_version']}"
        trained = time.perf_counter() - began
        self.client.post("/v1/predict", json={"model_name": tag, "texts": ["where is my card?"]}).raise_for_status()
        while True:  # AUTO exports (or reads from its cache) and swaps in the backend it chose
            backend = self.client.get(f"/v1/models/{tag}").json().get("backend")
            if backend and not backend.get("exporting"):
                break
            if time.perf_counter() - began > 900:
                raise RuntimeError(f"{tag} still exporting after 900 s: {backend}\n{self.server.log_tail()}")
            time.sleep(0.5)
        directory = self.server.model_path / "bentoml" / "models" / name / job["model_version"]
        served = {"tag": tag, "directory": directory, "examples": len(examples),
                  "backend": f"{backend.get('backend')}-{backend.get('quantize')}",
                  "train_seconds": round(trained, 1), "served_seconds": round(time.perf_counter() - began, 1)}
        print(f"  {tag}: {len(examples)} examples, trained in {trained:.1f} s, served by {served['backend']} after "
              f"{served['served_seconds']} s", flush=True)
        return served

    def probabilities(self, tag: str, texts: list[str], labels: int) -> list[dict[str, float]]:
        """Every label's probability of each text as /v1/predict gives it (top_k = every label; cached)."""
        missing = distinct([text for text in texts if (tag, text) not in self.cache])
        for start in range(0, len(missing), PREDICT_TEXTS):
            chunk = missing[start:start + PREDICT_TEXTS]
            response = self.client.post("/v1/predict", json={"model_name": tag, "texts": chunk, "top_k": labels})
            response.raise_for_status()
            for text, prediction in zip(chunk, response.json()["predictions"], strict=True):
                self.cache[tag, text] = {entry["label"]: entry["score"] for entry in prediction["scores"]}
        return [self.cache[tag, text] for text in texts]

    def labels(self, tag: str, texts: list[str]) -> list[str]:
        """The label /v1/predict answers for each text."""
        answered: list[str] = []
        for start in range(0, len(texts), PREDICT_TEXTS):
            chunk = texts[start:start + PREDICT_TEXTS]
            response = self.client.post("/v1/predict", json={"model_name": tag, "texts": chunk})
            response.raise_for_status()
            answered += [prediction["label"] for prediction in response.json()["predictions"]]
        return answered

    def explain(self, tag: str, texts: list[str], **options: Any) -> list[dict[str, Any]]:
        """POST /v1/explain in requests of EXPLAIN_TEXTS texts; each answer's shape checked."""
        explanations = []
        for start in range(0, len(texts), EXPLAIN_TEXTS):
            chunk = texts[start:start + EXPLAIN_TEXTS]
            response = self.client.post("/v1/explain", json={"model_name": tag, "texts": chunk, **options})
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/explain {options}: {response.status_code} {response.text[:1000]}")
            body = response.json()
            if body.get("model_version") != tag:
                self.problem("model_version is not the pinned name:version",
                             f"{body.get('model_version')!r} for {tag!r}")
            answered = body["explanations"]
            if len(answered) != len(chunk):
                raise RuntimeError(f"POST /v1/explain: {len(answered)} explanations for {len(chunk)} texts")
            for text, explanation in zip(chunk, answered, strict=True):
                self.check(text, explanation, options)
            explanations += answered
        return explanations

    def problem(self, kind: str, detail: str = "") -> None:
        if kind not in self.problems:
            self.problems[kind] = {"count": 0, "first": detail}
            print(f"  ROUTE: {kind}: {detail}", flush=True)
        self.problems[kind]["count"] += 1

    def check(self, text: str, explanation: dict[str, Any], options: dict[str, Any]) -> None:
        method = options.get("method", "both")
        if explanation.get("text") != text:
            self.problem("explanation's text is not the text sent", f"{explanation.get('text')!r} for {text!r}")
        for key in ("prediction", "label", "score", *(("granularity",) if method != "neighbors" else ())):
            if key not in explanation:
                self.problem(f"no `{key}` in an explanation", f"method={method}")
        spans = explanation.get("spans")
        if method == "neighbors":
            if spans or explanation.get("granularity"):
                self.problem("`spans` or `granularity` in a method=neighbors explanation")
        elif spans is None:
            self.problem(f"no `spans` for method={method}")
        else:
            granularity = explanation.get("granularity")
            expected = spans_of(text, granularity) if granularity in ("word", "sentence") else []
            if [(s["start"], s["end"]) for s in spans] != [(s.start, s.end) for s in expected]:
                self.problem("spans differ from spans_of(text, granularity)", f"{granularity}: {text!r}")
            if sorted(s.get("rank", 0) for s in spans) != list(range(1, len(spans) + 1)):
                self.problem("span ranks are not 1..N", f"{text!r}")
            if spans and spans[0].get("rank") is not None and max(s["weight"] for s in spans) != next(
                    s["weight"] for s in spans if s["rank"] == 1):
                self.problem("rank 1 is not the heaviest span", f"{text!r}")
            if any(s["text"] != text[s["start"]:s["end"]] for s in spans):
                self.problem("a span's `text` is not text[start:end]")
            words = len(spans_of(text, "word"))
            wanted = "sentence" if options.get("granularity") == "sentence" or words > MAX_EXPLAIN_SPANS else "word"
            if granularity != wanted:
                self.problem("granularity not the one asked (or its fallback)",
                             f"{granularity!r} for {words} words, asked {options.get('granularity')!r}")
        nearest = explanation.get("nearest")
        if method == "occlusion":
            if nearest:
                self.problem("`nearest` in a method=occlusion explanation")
        elif nearest is None:
            self.problem(f"no `nearest` for method={method}")
        else:
            similarities = [n["similarity"] for n in nearest]
            if similarities != sorted(similarities, reverse=True):
                self.problem("`nearest` not best first")
            if not nearest or len(nearest) > options.get("top_k", 3):
                self.problem("nearest empty or more than top_k", f"{len(nearest)} for top_k {options.get('top_k', 3)}")
        self.check_support(explanation, method, options.get("top_k", 3))
        prediction = explanation.get("prediction") or {}
        if options.get("label") is None and prediction.get("label") != explanation.get("label"):
            self.problem("the explained label is not the predicted one (no `label` asked)",
                         f"{explanation.get('label')!r} against {prediction.get('label')!r}")
        scores = (prediction.get("score"), explanation.get("score"))
        if options.get("label") is None and None not in scores and abs(scores[0] - scores[1]) > 1e-4:
            self.problem("`score` differs from the prediction's", f"{scores[1]} against {scores[0]}")


    def check_support(self, explanation: dict[str, Any], method: str, top_k: int) -> None:
        """`support`: only with neighbours; the explained label's training examples (multi-label: the label among
        their labels), best first, at most top_k; and every `nearest` example of that label among them (the same
        ranking within the label's examples; a tie at support's last place excepted)."""
        support = explanation.get("support")
        if method == "occlusion":
            if support is not None:
                self.problem("`support` in a method=occlusion explanation")
            return
        if support is None:
            self.problem(f"no `support` for method={method}")
            return
        label = explanation.get("label")
        if not support or len(support) > top_k:
            self.problem("support empty or more than top_k", f"{len(support)} for top_k {top_k}")
        if any(item.get("label") != label and label not in (item.get("labels") or []) for item in support):
            self.problem("a `support` example without the explained label",
                         f"{[(item.get('label'), item.get('labels')) for item in support]} for {label!r}")
        similarities = [item["similarity"] for item in support]
        if similarities != sorted(similarities, reverse=True):
            self.problem("`support` not best first")
        shown = {item["text"] for item in support}
        for item in explanation.get("nearest") or []:
            if (item.get("label") == label or label in (item.get("labels") or [])) and item["text"] not in shown \
                    and not (support and item["similarity"] <= support[-1]["similarity"] + 1e-4):
                self.problem("a `nearest` example of the explained label missing from `support`",
                             f"{item['text']!r} ({item['similarity']}) for {label!r}")


# 1. Faithfulness

def top_k(weights: list[float], k: int) -> list[int]:
    """Indices of the k largest weights (ties: the earlier word)."""
    return sorted(range(len(weights)), key=lambda i: (-weights[i], i))[:k]


def faithfulness(served: Served, version: dict[str, Any], reference: TorchReference, texts: list[str],
                 labels: int, seed: int) -> list[dict[str, Any]]:
    """Per text: the explained label, the rankings' removed words and the falls, torch and served."""
    tag = version["tag"]
    began = time.perf_counter()
    explanations = served.explain(tag, texts, method="occlusion", granularity="word")
    explain_seconds = time.perf_counter() - began
    rng = random.Random(20_000 + seed)
    rows: list[dict[str, Any]] = []
    ig_seconds = 0.0
    for text, explanation in zip(texts, explanations, strict=True):
        label = explanation["label"]
        spans = spans_of(text, "word")
        if explanation.get("granularity") != "word" or len(explanation.get("spans") or []) != len(spans):
            continue  # counted as a route problem already; never ranked on spans other than these
        ours = [float(span["weight"]) for span in explanation["spans"]]
        by_rank = sorted(range(len(spans)), key=lambda i: explanation["spans"][i]["rank"])
        started = time.perf_counter()
        ig, delta = reference.integrated_gradients(text, label, spans)
        ig_seconds += time.perf_counter() - started
        column = reference.column(label)
        whole = float(reference.probabilities([text])[0, column])
        occluded = reference.probabilities([without(text, [span]) for span in spans])[:, column]
        fp32 = [whole - float(p) for p in occluded]
        removed: dict[str, dict[int, list[list[int]]]] = {
            "ours": {k: [sorted(by_rank[:k])] for k in KS},
            "ours, first round alone": {k: [top_k(ours, k)] for k in KS},
            "integrated gradients": {k: [top_k(ig, k)] for k in KS},
            "occlusion (torch fp32)": {k: [top_k(fp32, k)] for k in KS},
            "random": {k: [sorted(rng.sample(range(len(spans)), k)) for _ in range(RANDOM_DRAWS)] for k in KS}}
        rows.append({"text": text, "words": len(spans), "label": label, "served_score": explanation["score"],
                     "prediction": explanation.get("prediction", {}).get("label"), "torch_score": round(whole, 6),
                     "ig_delta": round(delta, 6), "ig_sum": round(sum(ig), 6),
                     "weights": {"ours": ours, "integrated gradients": [round(w, 6) for w in ig],
                                 "occlusion (torch fp32)": [round(w, 6) for w in fp32]},
                     "removed": removed})
    variants = [without(row["text"], [spans_of(row["text"], "word")[i] for i in draw])
                for row in rows for method in METHODS for k in KS for draw in row["removed"][method][k]]
    texts_measured = [row["text"] for row in rows] + variants
    torch_probabilities = reference.probabilities(texts_measured)
    torch_of = {text: torch_probabilities[i] for i, text in enumerate(texts_measured)}
    served_of = dict(zip(texts_measured, served.probabilities(tag, texts_measured, labels), strict=True))
    for row in rows:
        column, spans = reference.column(row["label"]), spans_of(row["text"], "word")
        served_whole = served_of[row["text"]].get(row["label"], 0.0)
        row["served_predict_score"] = served_whole
        if abs(served_whole - row["served_score"]) > 1e-3:  # the same backend: /v1/explain's score is /v1/predict's
            served.problem("`score` differs from /v1/predict's probability of the label (same backend)",
                           f"{row['served_score']:.4f} against {served_whole:.4f} ({tag}: {row['text']!r})")
        row["falls"] = {"torch": {}, "served": {}}
        for method in METHODS:
            for where in ("torch", "served"):
                row["falls"][where][method] = {}
            for k in KS:
                left = [without(row["text"], [spans[i] for i in draw]) for draw in row["removed"][method][k]]
                row["falls"]["torch"][method][k] = round(statistics.fmean(
                    row["torch_score"] - float(torch_of[variant][column]) for variant in left), 6)
                row["falls"]["served"][method][k] = round(statistics.fmean(
                    served_whole - served_of[variant].get(row["label"], 0.0) for variant in left), 6)
    print(f"    {len(rows)} texts: explain {explain_seconds:.1f} s, IG {ig_seconds:.1f} s", flush=True)
    return rows


def per_text(row: dict[str, Any]) -> dict[str, Any]:
    """What the results file keeps of a text: enough to recompute every mean and interval (its falls, per
    method in KS order), and the words ours and IG removed first (every weight of every method at 2 spaces of
    indentation made the file 2.4 MB)."""
    spans = spans_of(row["text"], "word")
    return {"seed": row["seed"], "text": row["text"], "label": row["label"],
            "served_score": row["served_score"], "torch_score": row["torch_score"],
            "top_words": {method: [spans[i].of(row["text"]) for i in row["removed"][method][max(KS)][0]]
                          for method in ("ours", "integrated gradients")},
            "falls": {where: {method: [round(falls[k], 5) for k in KS] for method, falls in by_method.items()}
                      for where, by_method in row["falls"].items()}}


def summarise_faithfulness(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"texts": len(rows), "mean_words": round(statistics.fmean(r["words"] for r in rows), 1),
                               "torch": {}, "served": {}, "ours_minus_ig": {}, "goals": {}}
    for where in ("torch", "served"):
        for method in METHODS:
            summary[where][method] = {str(k): bootstrap([r["falls"][where][method][k] for r in rows]) for k in KS}
        summary["ours_minus_ig"][where] = {str(k): bootstrap([
            r["falls"][where]["ours"][k] - r["falls"][where]["integrated gradients"][k] for r in rows]) for k in KS}
        summary.setdefault("ours_minus_random", {})[where] = {str(k): bootstrap([
            r["falls"][where]["ours"][k] - r["falls"][where]["random"][k] for r in rows]) for k in KS}
    for k in KS:
        torch_falls = {method: summary["torch"][method][str(k)]["mean"] for method in METHODS}
        summary["goals"][str(k)] = {
            "ours_at_least_ig": torch_falls["ours"] >= torch_falls["integrated gradients"],
            "ours_vs_random": round(torch_falls["ours"] / torch_falls["random"], 2)
            if torch_falls["random"] > 0 else None,
            "far_steeper_than_random": torch_falls["ours"] >= RANDOM_FACTOR * max(torch_falls["random"], 0.0)
            and torch_falls["ours"] > 0}
    summary["ig_abs_delta_mean"] = round(statistics.fmean(abs(r["ig_delta"]) for r in rows), 6)
    return summary


# 2. Cost

def cost(served: Served, tag: str, texts: dict[int, str], requests: int) -> list[dict[str, Any]]:
    rows = []
    for words, text in texts.items():
        times: dict[str, list[float]] = {"explain": [], "predict": []}
        answer: dict[str, Any] = {}
        for round_number in range(COST_WARMUP + requests):
            for kind in ("explain", "predict"):  # alternated: both see the same drift of the machine
                body = {"model_name": tag, "texts": [text]}
                if kind == "explain":
                    body |= {"method": "both", "granularity": "word"}
                started = time.perf_counter()
                response = served.client.post(f"/v1/{kind}", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"POST /v1/{kind} ({words} words): {response.status_code} {response.text[:500]}")
                if round_number >= COST_WARMUP:
                    times[kind].append(elapsed)
                if kind == "explain" and not answer:
                    answer = response.json()["explanations"][0]
                    served.check(text, answer, {"method": "both", "granularity": "word"})
        row = {"words": words, "chars": len(text), "requests": requests,
               "granularity": answer.get("granularity"), "spans": len(answer.get("spans") or []),
               "nearest": len(answer.get("nearest") or [])}
        for kind, values in times.items():
            row[kind] = {"p50_ms": round(statistics.median(values), 1), "p90_ms": round(percentile(values, 0.9), 1),
                         "mean_ms": round(statistics.fmean(values), 1)}
        row["ratio_p50"] = round(row["explain"]["p50_ms"] / row["predict"]["p50_ms"], 2)
        print(f"  cost {words} words: explain p50 {row['explain']['p50_ms']} ms, predict p50 "
              f"{row['predict']['p50_ms']} ms (x{row['ratio_p50']}), {row['granularity']} x {row['spans']}", flush=True)
        rows.append(row)
    return rows


# 3. Planted wrong labels

def planted_nearest(served: Served, train: dict[str, list[str]], test: dict[str, list[str]],
                    seed: int) -> dict[str, Any]:
    examples, planted = planted_examples(train, seed)
    version = served.train(f"explain-audit-{seed}", examples)
    tag = version["tag"]
    pairs = {(p["true"], p["label"]) for p in planted}
    planted_keys = {(p["text"], p["label"]) for p in planted}
    wrong_labels = {p["label"] for p in planted}
    # a training example's true label (the data set's), planted or not: the text's own topic
    truth_of = {e["text"]: e["label"] for e in examples} | {p["text"]: p["true"] for p in planted}
    of_truth = {label: [text for text, truth in truth_of.items() if truth == label] for label in train}
    planted_of_truth = {label: sum(p["true"] == label for p in planted) for label in train}
    # support's chance: planted among the training examples given the explained label (support's pool)
    given = {label: sum(e["label"] == label for e in examples) for label in train}
    planted_given = {label: sum(p["label"] == label for p in planted) for label in train}
    items = [(text, label) for label in sorted(test) for text in distinct(test[label])]
    predictions = served.labels(tag, [text for text, _ in items])
    answered = [(text, truth, predicted) for (text, truth), predicted in zip(items, predictions, strict=True)]
    # The control: the same draw with no label planted. A planted pair it mispredicts the same way was not
    # the planting's doing; one it gets right was.
    control = served.train(f"explain-clean-{seed}", [{"text": text, "label": truth_of[text]} for text in truth_of])
    clean_of = dict(zip([text for text, _ in items], served.labels(control["tag"], [text for text, _ in items]),
                        strict=True))
    groups: dict[str, list[tuple[str, str, str]]] = {
        PAIR: [a for a in answered if (a[1], a[2]) in pairs],
        INTO_PLANTED: [a for a in answered if a[2] != a[1] and a[2] in wrong_labels and (a[1], a[2]) not in pairs],
        OTHER_WRONG: [a for a in answered if a[2] != a[1] and a[2] not in wrong_labels],
        CORRECT: [a for a in answered if a[2] == a[1]]}
    result: dict[str, Any] = {"seed": seed, "tag": tag, "backend": version["backend"], "examples": len(examples),
                              "planted": len(planted), "chance": round(len(planted) / len(examples), 4),
                              "accuracy": round(statistics.fmean(float(p == t) for _, t, p in answered), 4),
                              "clean_tag": control["tag"],
                              "clean_accuracy": round(statistics.fmean(float(clean_of[x] == t) for x, t, _ in answered),
                                                      4),
                              "clean_pair_mispredictions": sum((t, clean_of[x]) in pairs for x, t, _ in answered),
                              "groups": {}}
    rng = random.Random(30_000 + seed)
    for name, members in groups.items():
        chosen = rng.sample(members, min(SAMPLES.get(name, len(members)), len(members)))
        explanations = served.explain(tag, [text for text, _, _ in chosen], method="neighbors", top_k=NEIGHBOURS) \
            if chosen else []
        counts = {"texts": len(members), "explained": len(chosen), "top1_planted": 0, f"top{NEIGHBOURS}_planted": 0,
                  "top1_planted_culprit": 0, "top1_same_topic": 0, "top1_label_is_predicted": 0,
                  "topic_chance_sum": 0.0, "caused": 0, "caused_top1_planted": 0,
                  "support_top1_planted": 0, f"support_top{NEIGHBOURS}_planted": 0, "support_top1_planted_culprit": 0,
                  "support_chance_sum": 0.0, "caused_support_top1_planted": 0, "caused_support_top1_planted_culprit": 0}
        for (text, truth, predicted), explanation in zip(chosen, explanations, strict=True):
            near = explanation["nearest"]
            keys = [(n["text"], n["label"]) for n in near]
            # support: the explained label's (= the prediction's: the route check holds it) nearest examples
            backing = [(n["text"], n["label"]) for n in explanation.get("support") or []]
            support_planted = bool(backing) and backing[0] in planted_keys
            support_culprit = support_planted and (truth_of[backing[0][0]], backing[0][1]) == (truth, predicted)
            counts["support_top1_planted"] += support_planted
            counts[f"support_top{NEIGHBOURS}_planted"] += any(key in planted_keys for key in backing)
            counts["support_top1_planted_culprit"] += support_culprit
            counts["support_chance_sum"] += planted_given[explanation["label"]] / max(1, given[explanation["label"]])
            counts["top1_planted"] += bool(keys) and keys[0] in planted_keys
            counts[f"top{NEIGHBOURS}_planted"] += any(key in planted_keys for key in keys)
            # the culprit: a planted example of the text's own topic given the label it was mispredicted as
            counts["top1_planted_culprit"] += bool(keys) and keys[0] in planted_keys and \
                (truth_of[keys[0][0]], keys[0][1]) == (truth, predicted)
            counts["top1_same_topic"] += bool(keys) and truth_of.get(keys[0][0]) == truth
            counts["top1_label_is_predicted"] += bool(keys) and keys[0][1] == predicted
            # chance within the text's topic: its true label's training texts that are planted
            counts["topic_chance_sum"] += planted_of_truth[truth] / max(1, len(of_truth[truth]))
            caused = predicted != truth and clean_of[text] == truth  # the planting's doing (the control got it right)
            if caused:
                counts["caused"] += 1
                counts["caused_top1_planted"] += bool(keys) and keys[0] in planted_keys
                counts["caused_support_top1_planted"] += support_planted
                counts["caused_support_top1_planted_culprit"] += support_culprit
            if name == PAIR:  # few (61 in 10 seeds): each kept, its top-1 of both lists
                result.setdefault("pairs", []).append({
                    "text": text, "true": truth, "predicted": predicted, "caused": caused,
                    "nearest_top1": top1(near, planted_keys), "support_top1": top1(explanation.get("support"),
                                                                                   planted_keys)})
        result["groups"][name] = counts
    print(f"  audit seed {seed}: accuracy {result['accuracy']}, top-1 planted (nearest, support): " + "; ".join(
        f"{name.split(':')[0]} {g['top1_planted']}, {g['support_top1_planted']} /{g['explained']}"
        for name, g in result["groups"].items()), flush=True)
    return result


def top1(items: list[dict[str, Any]] | None, planted_keys: set[tuple[str, str]]) -> dict[str, Any] | None:
    """A list's best example as the results file keeps it: text, label, similarity, planted or not."""
    if not items:
        return None
    best = items[0]
    return {"text": best["text"], "label": best.get("label"), "similarity": best["similarity"],
            "planted": (best["text"], best["label"]) in planted_keys}


def summarise_planted(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each group's counts over the seeds, as shares of the texts explained."""
    summary: dict[str, Any] = {"seeds": len(runs), "chance": round(statistics.fmean(r["chance"] for r in runs), 4),
                               "accuracy": round(statistics.fmean(r["accuracy"] for r in runs), 4),
                               "clean_accuracy": round(statistics.fmean(r["clean_accuracy"] for r in runs), 4),
                               "clean_pair_mispredictions": sum(r["clean_pair_mispredictions"] for r in runs),
                               "groups": {}}
    # the planted pairs the control mispredicts too (not the planting's doing): support's top-1 planted or not
    not_caused = [pair for r in runs for pair in r.get("pairs", []) if not pair["caused"]]
    summary["pairs_not_caused"] = {
        "explained": len(not_caused),
        **{f"{which}_top1_planted": sum(bool(p[f"{which}_top1"] and p[f"{which}_top1"]["planted"])
                                        for p in not_caused) for which in ("nearest", "support")}}
    for name in runs[0]["groups"]:
        total = {key: sum(r["groups"][name][key] for r in runs) for key in runs[0]["groups"][name]}
        explained = total["explained"]

        def share(key: str, total: dict[str, float] = total, explained: int = explained) -> float | None:
            return round(total[key] / explained, 4) if explained else None

        summary["groups"][name] = {
            "texts": total["texts"], "explained": explained,
            **{f"{key}_share": share(key) for key in ("top1_planted", f"top{NEIGHBOURS}_planted",
                                                      "top1_planted_culprit", "top1_same_topic",
                                                      "top1_label_is_predicted")},
            "topic_chance": share("topic_chance_sum"),
            "caused": total["caused"],
            "caused_top1_planted_share": round(total["caused_top1_planted"] / total["caused"], 4)
            if total["caused"] else None,
            "top1_planted_ci": wilson(int(total["top1_planted"]), explained),
            **{f"{key}_share": share(key) for key in ("support_top1_planted", f"support_top{NEIGHBOURS}_planted",
                                                      "support_top1_planted_culprit")},
            **{f"{key}_ci": wilson(int(total[key]), explained)
               for key in ("support_top1_planted", f"support_top{NEIGHBOURS}_planted",
                           "support_top1_planted_culprit")},
            "support_chance": share("support_chance_sum"),
            **{f"{key}_share": round(total[key] / total["caused"], 4) if total["caused"] else None
               for key in ("caused_support_top1_planted", "caused_support_top1_planted_culprit")},
            **{f"{key}_ci": wilson(int(total[key]), int(total["caused"]))
               for key in ("caused_top1_planted", "caused_support_top1_planted")}}
    return summary


def wilson(successes: int, n: int) -> list[float] | None:
    """95% Wilson interval of a share."""
    if not n:
        return None
    z, p = 1.96, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


# Report

def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    phases = setup.get("phases", PHASES)
    faithfulness_setup = (
        f"seeds {setup['seeds']}; {setup['texts']} test texts of {MIN_WORDS}–{MAX_EXPLAIN_SPANS} words per seed and "
        f"data set; IG: captum {setup['captum']} LayerIntegratedGradients, {IG_STEPS} steps, baseline [PAD]'s "
        f"embedding ([CLS]/[SEP] kept); random: mean of {RANDOM_DRAWS} draws. ") if "faithfulness" in phases else ""
    not_run = [f"{number}. {phase}" for number, phase in enumerate(PHASES, 1) if phase not in phases]
    lines = [f"# Explanations (issue 44), {report['when']}", "",
             f"{report['machine']}; server INFERENCE_BACKEND=AUTO (served by {', '.join(report['backends'])}); "
             f"{BASE_MODEL} `head` versions trained through POST /v1/train, {SHOTS} examples per label; "
             f"{faithfulness_setup}Total {report['wall_seconds']:.0f} s."
             + (f" Not run here: {', '.join(not_run)}." if not_run else "")
             + (f" {report['note']}" if report.get("note") else ""), ""]
    if report.get("faithfulness"):
        lines += ["## 1. Faithfulness: fall of the explained label's probability with the top-k words removed", "",
                  "Mean over texts (seeds pooled) [95% bootstrap CI]. *torch*: the version in float32 in-process "
                  "(the goal's measure); *served*: POST /v1/predict on the served backend.", ""]
        for dataset, summary in report["faithfulness"].items():
            lines += [f"### {dataset} ({summary['texts']} texts, {summary['mean_words']} words on average; head "
                      f"check max |Δp| {summary['head_check_max']:.1e}; IG mean |convergence δ| "
                      f"{summary['ig_abs_delta_mean']:.1e})", "",
                      "| method | " + " | ".join(f"k={k} torch | k={k} served" for k in KS) + " |",
                      "|---|" + "---|---|" * len(KS)]
            for method in METHODS:
                cells = []
                for k in KS:
                    for where in ("torch", "served"):
                        s = summary[where][method][str(k)]
                        cells.append(f"{s['mean']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}]")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            for key, name in (("ours_minus_ig", "ours − IG (paired)"), ("ours_minus_random", "ours − random (paired)")):
                cells = []
                for k in KS:
                    for where in ("torch", "served"):
                        s = summary[key][where][str(k)]
                        cells.append(f"{s['mean']:+.4f} [{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
            for k in KS:
                goal = summary["goals"][str(k)]
                ratio = "∞ (random ≤ 0)" if goal["ours_vs_random"] is None else f"{goal['ours_vs_random']}×"
                lines.append(f"- k={k}: ours ≥ IG (torch): **{'met' if goal['ours_at_least_ig'] else 'not met'}**; "
                             f"ours / random = {ratio} (≥ {RANDOM_FACTOR:g}×: "
                             f"**{'met' if goal['far_steeper_than_random'] else 'not met'}**)")
            lines.append("")
    if report.get("cost"):
        lines += ["## 2. Cost: one client, sequential", "",
                  f"{report['cost_requests']} requests of each after {COST_WARMUP} warm-up, alternated; "
                  f"version {report['cost_tag']}.", "",
                  "| text | explain p50 / p90 ms | predict p50 / p90 ms | explain / predict (p50) | granularity "
                  "used | spans | nearest |", "|---|---|---|---|---|---|---|"]
        for row in report["cost"]:
            lines.append(f"| {row['words']} words ({row['chars']} chars) | {row['explain']['p50_ms']} / "
                         f"{row['explain']['p90_ms']} | {row['predict']['p50_ms']} / {row['predict']['p90_ms']} | "
                         f"{row['ratio_p50']}× | {row['granularity']} | {row['spans']} | {row['nearest']} |")
        goal = report["goals"]["cost"]
        lines += ["", f"- 20-word explanation ≤ {COST_GOAL_FACTOR:g}× its prediction (p50): "
                  f"**{'met' if goal['met'] else 'not met'}** ({goal['ratio']}×)", ""]
    if report.get("planted"):
        planted = report["planted"]
        lines += ["## 3. Nearest examples on planted wrong labels", "",
                  f"banking77, {AUDIT_SHOTS} per label, {FLIPPED_SHARE:.0%} given a random other label (bench/"
                  f"active_learning.py's draw), {planted['seeds']} seeds; test accuracy {planted['accuracy']}. "
                  f"Chance that a training example is planted: {planted['chance']:.4f}; *topic chance*: the share "
                  "of planted examples among the training texts of the test text's true label (where the nearest "
                  f"example would be drawn from if it only found the topic). POST /v1/explain method neighbors, "
                  f"top_k {NEIGHBOURS}; shares of the texts explained.", "",
                  f"| test texts | texts (explained) | top-1 planted [95% CI] | topic chance | planted in top "
                  f"{NEIGHBOURS} | top-1 the culprit | top-1 of the text's topic | top-1 labelled as predicted |",
                  "|---|---|---|---|---|---|---|---|"]

        def cell(value: float | None) -> str:
            return "–" if value is None else f"{value:.3f}"

        for name, group in planted["groups"].items():
            ci = group["top1_planted_ci"]
            lines.append(f"| {name} | {group['texts']} ({group['explained']}) | {cell(group['top1_planted_share'])} "
                         f"{'' if ci is None else f'[{ci[0]:.3f}, {ci[1]:.3f}]'} | {cell(group['topic_chance'])} | "
                         f"{cell(group[f'top{NEIGHBOURS}_planted_share'])} | "
                         f"{cell(group['top1_planted_culprit_share'])} | {cell(group['top1_same_topic_share'])} | "
                         f"{cell(group['top1_label_is_predicted_share'])} |")
        lines += ["", f"*Support* (the route's `support`: the {NEIGHBOURS} training examples nearest the text among "
                  "those given the explained label, here the predicted one). *Support chance*: the share of planted "
                  "examples among the training examples given that label (support's pool: what a top-1 drawn from it "
                  "at random would give). *Culprit*: a planted example of the text's true label T given the "
                  "predicted label W. Nearest's top-1 planted (the table above) beside it.", "",
                  f"| test texts | explained | support top-1 planted [95% CI] | support chance | planted in support "
                  f"top {NEIGHBOURS} [95% CI] | support top-1 the culprit [95% CI] | nearest top-1 planted |",
                  "|---|---|---|---|---|---|---|"]

        def with_ci(group: dict[str, Any], key: str) -> str:
            ci = group.get(f"{key}_ci")
            return f"{cell(group[f'{key}_share'])}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")

        for name, group in planted["groups"].items():
            lines.append(f"| {name} | {group['explained']} | {with_ci(group, 'support_top1_planted')} | "
                         f"{cell(group['support_chance'])} | {with_ci(group, f'support_top{NEIGHBOURS}_planted')} | "
                         f"{with_ci(group, 'support_top1_planted_culprit')} | {cell(group['top1_planted_share'])} |")
        pair = planted["groups"][PAIR]
        lines += ["", f"Control: the same draws with no label planted, trained and served the same way (test accuracy "
                  f"{planted['clean_accuracy']}), mispredict {planted['clean_pair_mispredictions']} test texts as a "
                  f"planted pair (true T as W) against {pair['texts']} with the planting; {pair['caused']} of the "
                  f"planted pairs explained are the planting's doing (the control answered them right), and their "
                  f"top-1 nearest example is planted for {cell(pair['caused_top1_planted_share'])} of them."]
        if "caused_support_top1_planted_share" in pair:
            ci, near_ci = pair["caused_support_top1_planted_ci"], pair["caused_top1_planted_ci"]
            rest = planted.get("pairs_not_caused", {})
            lines += ["", f"Support on the same {pair['caused']} (the planting's doing): top-1 planted "
                      f"{cell(pair['caused_support_top1_planted_share'])}"
                      + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
                      + f", the culprit {cell(pair['caused_support_top1_planted_culprit_share'])} (nearest: "
                      f"{cell(pair['caused_top1_planted_share'])}"
                      + ("" if near_ci is None else f" [{near_ci[0]:.3f}, {near_ci[1]:.3f}]") + "). "
                      f"On the {rest.get('explained', 0)} planted pairs the control mispredicts too: support top-1 "
                      f"planted for {rest.get('support_top1_planted', 0)}, nearest for "
                      f"{rest.get('nearest_top1_planted', 0)}."]
        lines.append("")
    problems = report.get("route_problems") or {}
    lines += ["## The route's answers", "",
              "Every explanation was checked against the contract (text, label = the prediction's, score, spans = "
              "spans_of(text, granularity) in order, granularity and its fallback, nearest best first and ≤ top_k; "
              "support only with neighbours, every example of the explained label, best first, ≤ top_k, holding "
              "nearest's examples of that label): "
              + ("no problem found." if not problems else f"{len(problems)} problem(s):"), ""]
    lines += [f"- {kind}: {seen['count']} time(s); first: {seen['first']}" for kind, seen in problems.items()]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=80, help="test texts per seed and data set")
    parser.add_argument("--audit-seeds", type=int, default=10)
    parser.add_argument("--cost-requests", type=int, default=30)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated, of: " + ", ".join(PHASES))
    parser.add_argument("--only", choices=PHASES, help="run this section alone (overrides --phases); e.g. "
                        "`--only planted`: section 3 without re-running faithfulness and cost")
    parser.add_argument("--note", default="", help="a sentence for the results' header (e.g. where the sections "
                        "not run here are)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-state", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args()
    phases = {args.only} if args.only else set(args.phases.split(","))
    if unknown := phases - set(PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    import captum

    when = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    state = Path(tempfile.mkdtemp(prefix="fewshot-bench-explain-"))
    server = LiveServer(state / "service", env={"INFERENCE_BACKEND": "AUTO"})  # the default: the harness sets TORCH
    data = {name: {part: read_csv(args.data / name / f"{part}.csv") for part in ("train", "test")}
            for name in DATA_SETS}
    report: dict[str, Any] = {"when": when.isoformat(), "machine": server_machine(),
                              "setup": {"seeds": list(range(args.seeds)), "texts": args.texts, "shots": SHOTS,
                                        "ks": list(KS), "ig_steps": IG_STEPS, "random_draws": RANDOM_DRAWS,
                                        "captum": captum.__version__, "audit_seeds": list(range(args.audit_seeds)),
                                        "phases": [phase for phase in PHASES if phase in phases]},
                              **({"note": args.note} if args.note else {}),
                              "backends": [], "faithfulness": {}, "runs": [], "goals": {}}
    served: Served | None = None
    try:
        server.start()
        print(f"server up in {server.start_seconds:.1f} s at {server.url}", flush=True)
        served = Served(server)
        cost_tag = None
        for dataset in DATA_SETS if "faithfulness" in phases or "cost" in phases else ():
            train, test = data[dataset]["train"], data[dataset]["test"]
            labels = sorted(train)
            rows, checks = [], []
            for seed in range(args.seeds):
                print(f"{dataset} seed {seed}", flush=True)
                version = served.train(f"explain-{dataset}-{seed}", training_examples(train, seed))
                report["backends"] = sorted({*report["backends"], version["backend"]})
                if cost_tag is None and dataset == "banking77":
                    cost_tag = version["tag"]
                if "faithfulness" not in phases:
                    break
                reference = TorchReference(version["directory"], labels)
                texts = test_texts(test, seed, args.texts)
                checks.append(reference.head_check(texts))
                seed_rows = faithfulness(served, version, reference, texts, len(labels), seed)
                for row in seed_rows:
                    row["seed"] = seed
                rows += seed_rows
                report["runs"].append({"dataset": dataset, "seed": seed, "tag": version["tag"],
                                       "backend": version["backend"], "train_seconds": version["train_seconds"],
                                       "head_check_max": checks[-1], "texts": len(seed_rows)})
                del reference
            if rows:
                summary = summarise_faithfulness(rows)
                summary["head_check_max"] = max(checks)
                report["faithfulness"][dataset] = summary
                report.setdefault("texts", {})[dataset] = [per_text(row) for row in rows]
        if "cost" in phases and cost_tag:
            banking77 = data["banking77"]["test"]
            pool = distinct([text for label in sorted(banking77) for text in banking77[label]])
            texts = {words: text_of_words(pool, words, words) for words in COST_WORDS}
            report["cost_tag"], report["cost_requests"] = cost_tag, args.cost_requests
            report["cost"] = cost(served, cost_tag, texts, args.cost_requests)
            report["cost_texts"] = texts
        if "planted" in phases:
            runs = [planted_nearest(served, data["banking77"]["train"], data["banking77"]["test"], seed)
                    for seed in range(args.audit_seeds)]
            report["planted"] = summarise_planted(runs)
            report["planted_runs"] = runs
            report["backends"] = sorted({*report["backends"], *(r["backend"] for r in runs)})
    finally:
        if served is not None:
            report["route_problems"] = served.problems
            served.client.close()
        stopped = server.close()
        if not stopped.clean:
            print(f"server stop: {stopped}", flush=True)
        if args.keep_state:
            print(f"state kept: {state}", flush=True)
        else:
            shutil.rmtree(state, ignore_errors=True)
    report["wall_seconds"] = round(time.perf_counter() - began, 1)
    for dataset, summary in report["faithfulness"].items():
        report["goals"][f"faithfulness {dataset}"] = {
            k: goal["ours_at_least_ig"] and goal["far_steeper_than_random"] for k, goal in summary["goals"].items()}
    twenty = next((row for row in report.get("cost", []) if row["words"] == COST_WORDS[0]), None)
    if twenty:
        report["goals"]["cost"] = {"ratio": twenty["ratio_p50"], "met": twenty["ratio_p50"] <= COST_GOAL_FACTOR}
    text = markdown(report)
    stem = write_report(args.out, "explain", when, report, text)
    print(text)
    print(f"written: {stem}.json and .md")


if __name__ == "__main__":
    main()
