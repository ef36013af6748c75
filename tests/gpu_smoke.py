"""GPU smoke check of the whole service (run on a machine with CUDA; not part of `make test`).

Starts the real `bentoml serve`, trains through the API, and checks that training and inference
ran on the GPU. The device machine has no network, so the base model is a small randomly
initialised BERT built here (the check is about the CUDA path, not accuracy).

    python -m tests.gpu_smoke [OUTPUT_DIR]
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.fixtures import read_examples
from harness.live_server import LiveServer, wait_for_job

WORDS = sorted({w for e in read_examples("banking77_train_4labels.csv") + read_examples(
    "banking77_test_4labels.csv") for w in re.findall(r"[a-z]+", e["text"].lower())})


def build_tiny_base_model(directory: Path) -> Path:
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=128)
    hf_dir = directory / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    body = models.Transformer(str(hf_dir), max_seq_length=64)
    pooling = models.Pooling(body.get_word_embedding_dimension(), "mean")
    model_dir = directory / "st"
    SentenceTransformer(modules=[body, pooling]).save(str(model_dir))
    return model_dir


def main(output: Path) -> int:
    output.mkdir(parents=True, exist_ok=True)
    report: dict = {"cuda_available": torch.cuda.is_available(),
                    "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    state = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    base_model = build_tiny_base_model(state / "base")
    server = LiveServer(state / "server", env={"LOCAL_MODEL_DIRS": str(state / "base")}).start()
    try:
        with server.client() as client:
            started = time.monotonic()
            job = client.post("/v1/train", json={"model_name": "gpu-smoke", "base_model": str(base_model),
                                                 "examples": read_examples("banking77_train_4labels.csv"),
                                                 "num_iterations": 2}).json()
            job = wait_for_job(client, job["job_id"], {"completed", "failed"})
            report["train_job"] = job
            report["train_seconds"] = round(time.monotonic() - started, 2)
            texts = [e["text"] for e in read_examples("banking77_test_4labels.csv")]
            predict = client.post("/v1/predict", json={"model_name": "gpu-smoke", "texts": texts})
            embed = client.post("/v1/embeddings", json={"model_name": "gpu-smoke", "texts": texts})
            report["predict_status"] = predict.status_code
            # abstention by the scope score: the CUDA body's (float16) embeddings, read back as numpy
            abstaining = client.post("/v1/predict", json={"model_name": "gpu-smoke", "abstain": True,
                                                          "texts": [*texts, "the recipe needs two cups of flour"]})
            report["abstain_status"] = abstaining.status_code
            scope = client.get("/v1/models/gpu-smoke").json().get("scope") or {}
            report["scope"] = scope
            if abstaining.status_code == 200:
                answers = abstaining.json()["predictions"]
                report["abstained"] = sum(bool(a["abstained"]) for a in answers)
                report["scope_scores_present"] = all(isinstance(a.get("scope_score"), float) for a in answers)
            report["embeddings_status"] = embed.status_code
            report["embedding_dims"] = len(embed.json()["embeddings"][0]) if embed.status_code == 200 else None
    finally:
        server.close()
    log = server.log_path.read_text(errors="replace")
    report["trained_on_cuda"] = "on cuda" in "".join(line for line in log.splitlines() if "fine-tuning" in line)
    report["served_on_cuda"] = bool(re.search(r"loaded model gpu-smoke:\S+ in [\d.]+s on cuda", log))
    ok = (report["cuda_available"] and report["train_job"]["status"] == "completed"
          and report["predict_status"] == 200 and report["embeddings_status"] == 200
          and report["abstain_status"] == 200 and report.get("scope_scores_present")
          and report["scope"].get("calibration") == "evaluation"
          and report["trained_on_cuda"] and report["served_on_cuda"])
    report["ok"] = bool(ok)
    (output / "gpu_smoke.json").write_text(json.dumps(report, indent=2))
    (output / "server.log").write_text(log[-200_000:])
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("gpu-smoke-out")))
