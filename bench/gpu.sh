#!/usr/bin/env bash
# GPU checks in one short script, for a machine without network (the lent `device` machine):
#
#   bash bench/gpu.sh [SECONDS_PER_POINT]      (from the repository root; default 5)
#
# 1. tests/gpu_smoke.py: the real server trains and serves on CUDA (float16 inference).
# 2. The serving benchmark (bench/serving.py) at concurrency 1 and 64, on a random-weight model of
#    all-MiniLM-L6-v2's shape (bench/random_weights.py; same compute, no weights to download).
#
# Uses the machine's own CUDA torch. Expects, carried beside the code (git-ignored):
#   .whl/  every wheel of our stack but torch, for the machine's Python (3.12)
#   .gpu/  bin/wrk and lib/libluajit-5.1.so.2 (Debian's wrk), minilm-shape/ (MiniLM without weights)
# Results land in $OUT (set on the device machine) or bench/results/.
set -euo pipefail
seconds="${1:-5}"
out="${OUT:-bench/results}"
mkdir -p "$out"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
site=/tmp/fewshot-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PATH="$PWD/.gpu/bin:$PATH" LD_LIBRARY_PATH="$PWD/.gpu/lib:${LD_LIBRARY_PATH:-}"
wrk --version 2>&1 | head -1 || true

echo "== smoke: train and serve on CUDA"
python3 -m tests.gpu_smoke "$out" || echo "SMOKE FAILED"

echo "== serving benchmark"
base=/tmp/base-models/minilm-random
python3 -m bench.random_weights .gpu/minilm-shape "$base"
python3 -m bench.serving --duration "$seconds" --concurrency 1,64 --texts 1,16 --base-model "$base" --out "$out"
