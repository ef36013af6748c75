"""A base model with another's shape and random weights: the same compute, nothing to download.

    python -m bench.random_weights SHAPE_DIR TARGET_DIR

SHAPE_DIR is a sentence-transformers model directory without its weights (config, tokenizer,
modules). For benchmarks on machines without network (bench/gpu.sh): throughput and latency do
not depend on the weights' values, only on the architecture and the texts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> None:
    from transformers import AutoConfig, AutoModel

    shape, target = Path(sys.argv[1]), Path(sys.argv[2])
    shutil.copytree(shape, target, dirs_exist_ok=True)
    AutoModel.from_config(AutoConfig.from_pretrained(shape)).save_pretrained(target)
    print(f"random-weight model of {shape.name}'s shape written to {target}")


if __name__ == "__main__":
    main()
