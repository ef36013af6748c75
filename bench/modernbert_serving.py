"""The default base model's architecture served on CPU: ModernBERT at 32, 512 and 4,096 tokens per text,
every CPU backend of ours and AUTO's pick, against Infinity serving the same network in the same run (issue 42).

    make bench-modernbert     or: .venv/bin/python -m bench.modernbert_serving [--layers 22] [--seconds 10]

The default base model, Alibaba-NLP/gte-modernbert-base, cannot be downloaded here: its random-weight
stand-in (bench/modernbert_standin.py: the same architecture, 22 layers, hidden 768, 8,192-token window,
CLS pooling; random weights cost what trained ones do) is built, and a `head` version is trained on it
through our API (the 4-label banking77 examples). Then, one server at a time, the same texts:

- this service with each INFERENCE_BACKEND / INFERENCE_QUANTIZE and with AUTO (first: AUTO times every
  candidate on this machine and leaves its exports in the store's cache, which the fixed variants then
  read), on /v1/embeddings, once the version's export has settled (`settled_backend`);
- Infinity (infinity-emb 0.0.78, bench/.venv-infinity) on /embeddings with its torch engine, and its
  optimum engine (ONNX Runtime, the int8 model optimum-cli quantizes for this CPU, which Infinity prefers
  on CPU; bench/.venv-infinity-optimum). Infinity's transformers 4.x cannot read two files of the
  stand-in, which transformers 5 wrote: it gets a copy with those two rewritten (`infinity_copy`; the
  weights are the same file). Started with --no-model-warmup: its warm-up embeds batches of 512-token
  texts (minutes for 22 layers on 2 cores) and changes nothing measured here; each length gets a warm-up
  request of its own below, as ours does.

Points: one client, one text per request (sequential requests from this process: the client waits on each
answer, so its own CPU use is small beside a forward pass), texts of exactly 32, 512 and 4,096 tokens as the
stand-in's tokenizer counts them ([CLS] and [SEP] included: what a forward pass reads), cut from the banking77
test texts joined end to end, several different texts per length in turn. Each point runs at least
`--seconds` and at least MIN_REQUESTS[length] requests (a 4,096-token pass takes seconds on 2 cores), at
most MAX_POINT_SECONDS; texts/s, p50 and the server's CPU time per text. Checked per server and length on the
warm-up answer: ours says `tokens` = the length sent and `truncated` false; every server's embedding is
compared with our torch serving's of the same text (1 - cosine). Random weights make every text's embedding
alike (the [CLS] row is mostly its own input), so that distance is small anyway: our torch serving also embeds
the 4,096-token text cut to its first 512 tokens, whose distance to the whole says how small a float32 engine's
must be to have read the whole text (int8 engines' quantization error is larger than that). Infinity's
/embeddings `usage` counts characters (unless started with --lengths-via-tokenize, which costs it a second
tokenization), so the tokens it reads are taken from its code instead (`infinity_max_length`).
Writes bench/results/modernbert-serving-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bench.backends import INFINITY, INFINITY_OPTIMUM, MODEL, onnx_model_for_infinity, train
from bench.modernbert_standin import PUBLISHED_LAYERS, make_modernbert_standin
from bench.overhead import Target, run_bentoml, run_infinity, served_with_line, settled_backend
from bench.report_files import server_machine, write_report
from bench.serving import RESULTS, TEXTS_FILE
from harness.live_server import LiveServer

LENGTHS = (32, 512, 4096)
"""Tokens per text, special tokens included."""
TEXTS_PER_LENGTH = {32: 20, 512: 8, 4096: 4}
"""Different texts of each length, sent in turn."""
MIN_REQUESTS = {32: 10, 512: 8, 4096: 3}
MAX_POINT_SECONDS = 150
VARIANTS = ("auto", "torch-none", "onnx-none", "onnx-int8", "openvino-none", "openvino-int8")
"""INFERENCE_BACKEND-INFERENCE_QUANTIZE, or `auto` (both AUTO)."""
REFERENCE = "fewshot torch-none"
"""The embeddings every server's are compared with: float32 torch, the network as trained."""
CUT = 512
"""The calibration of the embedding check: the longest text cut to its first CUT tokens."""
GOAL = 1.5
"""Issue 42: texts/s at least this many times Infinity's best engine, at every length."""
EXPORT_TIMEOUT_SECONDS = 1800
"""AUTO exports and times four candidates of a 22-layer body: minutes each on 2 shared cores."""


def texts_of_length(tokenizer_file: Path, length: int, count: int) -> list[str]:
    """`count` different texts of exactly `length` tokens ([CLS] and [SEP] included) as the tokenizer at
    `tokenizer_file` counts them: banking77 test texts joined end to end, each from another starting
    text, cut after a whole token (and checked by tokenizing the cut text again)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    special = tokenizer.num_special_tokens_to_add(False)
    pool = json.loads(TEXTS_FILE.read_text())
    texts = []
    for index in range(count):
        start = (index * 97) % len(pool)
        joined, taken = "", 0
        while len(tokenizer.encode(joined, add_special_tokens=False).ids) < length:
            joined += (" " if joined else "") + " ".join(pool[(start + taken + k) % len(pool)] for k in range(50))
            taken += 50
        offsets = tokenizer.encode(joined, add_special_tokens=False).offsets
        end = length - special
        for _ in range(20):  # a cut inside a word can tokenize differently: move the cut until it does not
            text = joined[:offsets[end - 1][1]]
            got = len(tokenizer.encode(text).ids)
            if got == length:
                break
            end += length - got
            if not 0 < end <= len(offsets):
                break
        if got != length:
            raise RuntimeError(f"no text of exactly {length} tokens from banking77 test text {start}")
        texts.append(text)
    return texts


def cut_characters(tokenizer_file: Path, text: str, tokens: int) -> int:
    """Characters of `text` in its first `tokens` tokens ([CLS] and [SEP] included)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    return offsets[tokens - tokenizer.num_special_tokens_to_add(False) - 1][1]


def infinity_copy(standin: Path, target: Path) -> tuple[Path, list[str]]:
    """The stand-in as transformers 4.x (Infinity's) reads it: the weights linked, not copied; what was
    changed, said. transformers 5 writes ModernBERT's RoPE thetas as `rope_parameters` per layer type and
    the attention kinds as `layer_types`, where 4.x takes `global_rope_theta` / `local_rope_theta` and
    `global_attn_every_n_layers` (kept by 5 too); its tokenizer_config.json names the class
    `TokenizersBackend`, which 4.x does not have (PreTrainedTokenizerFast reads the same tokenizer.json)."""
    target.mkdir(parents=True)
    for path in standin.iterdir():
        if path.is_dir():
            shutil.copytree(path, target / path.name)
        elif path.suffix == ".safetensors":
            (target / path.name).symlink_to(path.resolve())
        else:
            shutil.copy(path, target / path.name)
    changes = []
    config = json.loads((standin / "config.json").read_text())
    rope = config.pop("rope_parameters", None)
    if rope is not None:
        config["global_rope_theta"] = rope["full_attention"]["rope_theta"]
        config["local_rope_theta"] = rope["sliding_attention"]["rope_theta"]
        changes.append(f"config.json: rope_parameters -> global_rope_theta {config['global_rope_theta']}, "
                       f"local_rope_theta {config['local_rope_theta']}")
    layer_types = config.pop("layer_types", None)
    if layer_types is not None:
        every = config["global_attn_every_n_layers"]
        expected = ["full_attention" if layer % every == 0 else "sliding_attention"
                    for layer in range(len(layer_types))]
        if layer_types != expected:
            raise SystemExit(f"layer_types {layer_types} is not global attention every {every} layers")
        changes.append(f"config.json: layer_types dropped (the same as global_attn_every_n_layers={every})")
    (target / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = json.loads((standin / "tokenizer_config.json").read_text())
    if tokenizer_config.get("tokenizer_class") == "TokenizersBackend":
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        tokenizer_config.pop("backend", None)
        changes.append("tokenizer_config.json: tokenizer_class TokenizersBackend -> PreTrainedTokenizerFast, "
                       "`backend` dropped")
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return target, changes


def infinity_max_length(venv_bin: Path, model_dir: Path) -> dict:
    """The tokens per text each Infinity engine reads of this directory, as its own code takes them: the
    torch engine tokenizes with sentence-transformers' max_seq_length, the optimum engine with
    max_length=config.max_position_embeddings (infinity_emb/transformer/embedder/optimum.py)."""
    script = ("import json; from sentence_transformers import SentenceTransformer; "
              "from transformers import AutoConfig; "
              "print(json.dumps({'torch': SentenceTransformer('.', device='cpu').max_seq_length, "
              "'optimum': AutoConfig.from_pretrained('.').max_position_embeddings}))")
    output = subprocess.run([str(venv_bin / "python"), "-c", script], cwd=model_dir, check=True, capture_output=True,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_lengths(target: Target, texts: dict[int, list[str]], seconds: float,
                    embeddings: dict[str, dict[int, list[float]]], cut: str | None = None) -> list[dict]:
    """One client, one text per request, each length in turn: a warm-up request (checked, its embedding
    kept in `embeddings`), then requests back to back for at least `seconds` and MIN_REQUESTS. `cut`: a
    text embedded after the points, kept as embeddings["cut"][CUT]."""
    path, body = target.routes["embeddings"], target.body_of("embeddings")
    points = []
    with httpx.Client(base_url=target.url, timeout=600) as client:
        for length, batch in texts.items():
            warm = client.post(path, json=body(MODEL, [batch[0]]))
            warm.raise_for_status()
            answer = warm.json()
            if "data" in answer:  # OpenAI's shape (Infinity); its usage counts characters unless told otherwise
                embeddings[target.name][length] = answer["data"][0]["embedding"]
                tokens, truncated = None, None
                usage = answer.get("usage", {}).get("prompt_tokens")
            else:
                embeddings[target.name][length] = answer["embeddings"][0]
                tokens, truncated, usage = answer["tokens"][0], answer["truncated"][0], None
                if tokens != length or truncated:
                    raise SystemExit(f"{target.name}: a {length}-token text was read as {tokens} tokens, "
                                     f"truncated={truncated}")
            load = os.getloadavg()[0]
            before = target.cpu_seconds()
            latencies, errors = [], 0
            began = time.perf_counter()
            while (len(latencies) < MIN_REQUESTS[length] or time.perf_counter() - began < seconds) \
                    and time.perf_counter() - began < MAX_POINT_SECONDS:
                sent = time.perf_counter()
                response = client.post(path, json=body(MODEL, [batch[len(latencies) % len(batch)]]))
                latencies.append(time.perf_counter() - sent)
                errors += response.status_code != 200
            elapsed = time.perf_counter() - began
            cpu = sum(target.cpu_seconds().values()) - sum(before.values())
            served = len(latencies) - errors
            point = {
                "server": target.name, "tokens_per_text": length, "requests": len(latencies), "errors": errors,
                "seconds": round(elapsed, 2), "texts_per_s": round(served / elapsed, 3),
                "p50_ms": round(1000 * float(np.median(latencies)), 1),
                "max_ms": round(1000 * max(latencies), 1),
                "cpu_ms_per_text": round(1000 * cpu / served, 1) if served else None,
                "cores_busy": round(cpu / elapsed, 2), "load_1min_at_start": round(load, 2),
                "tokens_read": tokens, "truncated": truncated, "usage_prompt_tokens": usage,
                "characters": len(batch[0]),
            }
            print(f"  {target.name} {length} tokens: {point['texts_per_s']} texts/s, p50 {point['p50_ms']} ms "
                  f"({point['requests']} requests in {point['seconds']} s, {point['cores_busy']} cores busy, "
                  f"load {point['load_1min_at_start']}), errors {errors}", flush=True)
            points.append(point)
        if cut is not None:
            response = client.post(path, json=body(MODEL, [cut]))
            response.raise_for_status()
            embeddings["cut"] = {CUT: response.json()["embeddings"][0]}
    return points


def distance(a: list[float] | None, b: list[float] | None) -> float | None:
    """1 - cosine, in two significant digits; None where either is missing."""
    if not a or not b:
        return None
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(f"{1 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y)):.2g}")


def compare(points: list[dict], embeddings: dict[str, dict[int, list[float]]]) -> list[dict]:
    """Per server of ours and length: texts/s against Infinity's best engine at that length (the goal:
    GOAL times), and every server's embedding against torch serving's."""
    rows = []
    for length in LENGTHS:
        peers = [p for p in points if p["server"].startswith("infinity") and p["tokens_per_text"] == length]
        best = max(peers, key=lambda p: p["texts_per_s"], default=None)
        for point in points:
            if point["tokens_per_text"] != length:
                continue
            vs = round(point["texts_per_s"] / best["texts_per_s"], 2) if best and best["texts_per_s"] else None
            rows.append({
                "server": point["server"], "tokens_per_text": length, "texts_per_s": point["texts_per_s"],
                "p50_ms": point["p50_ms"], "best_infinity": best["server"] if best else None,
                "best_infinity_texts_per_s": best["texts_per_s"] if best else None,
                "vs_best_infinity": None if point["server"].startswith("infinity") else vs,
                "goal_met": None if point["server"].startswith("infinity") or vs is None else vs >= GOAL,
                "distance_to_torch": distance(embeddings.get(point["server"], {}).get(length),
                                              embeddings.get(REFERENCE, {}).get(length)),
            })
    return rows


def verdict(comparison: list[dict]) -> dict[str, str]:
    """Per server of ours: the goal met at every length, or where not."""
    result = {}
    for server in dict.fromkeys(r["server"] for r in comparison if r["goal_met"] is not None):
        rows = [r for r in comparison if r["server"] == server]
        missed = [f"{r['tokens_per_text']} tokens ({r['vs_best_infinity']}×)" for r in rows if not r["goal_met"]]
        result[server] = "met" if not missed else "not met: " + ", ".join(missed)
    return result


def markdown(result: dict) -> str:
    busy = " (measured under load: the machine was shared with other work)" if result["under_load"] else ""
    lines = [
        f"# ModernBERT (gte-modernbert-base's architecture) served on CPU — {result['started_at']}",
        "",
        f"Machine: {result['machine']}; 1-minute load average {result['load_at_start']} at the start, "
        f"{result['load_at_end']} at the end{busy}. "
        f"Model: {result['model']}. One client, one text per request, at least {result['seconds']} s and "
        f"{', '.join(f'{n} requests at {k} tokens' for k, n in MIN_REQUESTS.items())} per point, after a warm-up "
        "request per length; one server at a time, same texts.",
        "",
        served_with_line(result["served_with"]),
        "",
        f"Infinity: {result['infinity']}",
        "",
        "| server | tokens/text | texts/s | p50 ms | requests | CPU ms/text | cores busy | load | × best Infinity | "
        "goal (≥ 1.5×) | 1 - cos to torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["server"], r["tokens_per_text"]): r for r in result["comparison"]}
    for p in result["points"]:
        row = by_key[(p["server"], p["tokens_per_text"])]
        goal = "" if row["goal_met"] is None else ("met" if row["goal_met"] else "not met")
        vs = "" if row["vs_best_infinity"] is None else f"{row['vs_best_infinity']} ({row['best_infinity']})"
        lines.append(f"| {p['server']} | {p['tokens_per_text']} | {p['texts_per_s']} | {p['p50_ms']} | "
                     f"{p['requests']} | {p['cpu_ms_per_text']} | {p['cores_busy']} | {p['load_1min_at_start']} | "
                     f"{vs} | {goal} | {row['distance_to_torch']} |")
    lines += ["", f"1 - cos to torch: against our torch serving's embedding of the same text. Calibration: the "
              f"{LENGTHS[-1]:,}-token text cut to its first {CUT} tokens is {result['cut_distance']} from the whole "
              "(random weights make all embeddings alike)."]
    lines += ["", "Goal (≥ 1.5× Infinity's best engine at 32, 512 and 4,096 tokens): " + "; ".join(
        f"{server}: {what}" for server, what in result["verdict"].items())]
    if result["skipped"]:
        lines += ["", "Not measured: " + "; ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=PUBLISHED_LAYERS, help="the stand-in's depth (22 published)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured per point, at least")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--infinity", default="torch,optimum", help="Infinity engines to measure")
    parser.add_argument("--under-load", action="store_true",
                        help="say in the report that the machine was busy with other work during the run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started_at = datetime.now(UTC).replace(microsecond=0)
    load_at_start = round(os.getloadavg()[0], 2)
    state = Path(tempfile.mkdtemp(prefix="fewshot-modernbert-"))
    standin = make_modernbert_standin(state / "base-models" / "gte-modernbert-standin", layers=args.layers)
    texts = {length: texts_of_length(standin / "tokenizer.json", length, TEXTS_PER_LENGTH[length])
             for length in LENGTHS}
    print(f"stand-in ({args.layers} layers) in {standin}; texts of "
          f"{', '.join(f'{k} tokens: {len(v[0]):,} characters' for k, v in texts.items())}", flush=True)
    cut_at = cut_characters(standin / "tokenizer.json", texts[LENGTHS[-1]][0], CUT)
    trained = train(state, standin)

    points: list[dict] = []
    served_with: dict[str, dict] = {}
    embeddings: dict[str, dict[int, list[float]]] = {}
    for variant in args.variants.split(","):
        backend, quantize = ("AUTO", "AUTO") if variant == "auto" else variant.upper().split("-")
        server = LiveServer(state / variant, env={"INFERENCE_BACKEND": backend, "INFERENCE_QUANTIZE": quantize,
                                                  "EMBEDDED_TRAINER": "false"})
        server.model_path = trained.model_path

        def check(running: LiveServer, variant: str = variant) -> None:
            status = settled_backend(running.url, MODEL, timeout=EXPORT_TIMEOUT_SECONDS)
            served_with[variant] = status
            if (variant != "auto" and status["requested"] != variant) or status["error"]:
                raise SystemExit(f"{variant} was not served as asked: {status}")

        name = f"fewshot {variant}"
        embeddings[name] = {}
        print(name, flush=True)
        cut = texts[LENGTHS[-1]][0][:cut_at] if variant == "torch-none" else None
        points += run_bentoml(name, server, [], 0, model=MODEL, started=check,
                              measure=lambda target, cut=cut: measure_lengths(target, texts, args.seconds,
                                                                              embeddings, cut))

    skipped: list[str] = []
    infinity_notes: list[str] = []
    engines = [e for e in ("torch", "optimum") if e in args.infinity.split(",")]
    if engines:
        compatible, changes = infinity_copy(standin, state / "standin-for-transformers-4")
        infinity_notes.append("read a copy of the stand-in for transformers 4.x (same weights): " + "; ".join(changes))
        if INFINITY.joinpath("python").exists():
            lengths = infinity_max_length(INFINITY, compatible)
            infinity_notes.append(f"max tokens per text read: torch engine {lengths['torch']} "
                                  f"(sentence-transformers' max_seq_length), optimum engine {lengths['optimum']} "
                                  "(config.max_position_embeddings)")
    for engine in engines:
        venv_bin = INFINITY if engine == "torch" else INFINITY_OPTIMUM
        if not (venv_bin / "infinity_emb").exists():
            skipped.append(f"Infinity {engine} engine ({venv_bin.parent} not installed)")
            continue
        try:
            model_dir = compatible if engine == "torch" else onnx_model_for_infinity(INFINITY, compatible, state,
                                                                                     name="modernbert-onnx")
        except subprocess.CalledProcessError as error:
            skipped.append(f"Infinity {engine} engine (the ONNX export failed: {error.stderr[-500:]!r})")
            continue
        name = f"infinity-{engine}"
        embeddings[name] = {}
        print(name, flush=True)
        points += run_infinity(venv_bin / "infinity_emb", model_dir, state, [], 0, engine=engine, name=name,
                               extra_args=("--no-model-warmup",),
                               measure=lambda target: measure_lengths(target, texts, args.seconds, embeddings))

    comparison = compare(points, embeddings)
    load_at_end = round(os.getloadavg()[0], 2)
    result = {
        "started_at": started_at.isoformat(),
        "machine": server_machine(),
        "load_at_start": load_at_start,
        "load_at_end": load_at_end,
        "under_load": args.under_load,
        "model": f"SetFit head (4 banking77 labels) on the random-weight gte-modernbert-base stand-in, "
                 f"{args.layers} layers; Infinity serves the same body",
        "layers": args.layers,
        "seconds": args.seconds,
        "characters_per_text": {length: [len(t) for t in batch] for length, batch in texts.items()},
        "served_with": served_with,
        "infinity": "; ".join(infinity_notes) or "not run",
        "points": points,
        "comparison": comparison,
        "verdict": verdict(comparison),
        "cut_distance": distance(embeddings.get("cut", {}).get(CUT), embeddings.get(REFERENCE, {}).get(LENGTHS[-1])),
        "skipped": skipped,
    }
    stem = write_report(args.out, "modernbert-serving", started_at, result, markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
