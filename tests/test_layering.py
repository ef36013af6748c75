"""The gateway serves without the ML stack: importing service.py (what every BentoML worker and
the CLI do) and the client loads neither torch nor SetFit. Only the inference service's and the
trainer's code, inside their own processes, loads them.

The import contracts in pyproject.toml (`lint-imports` in `make test`) hold the packages to the
same rule statically, lazy imports included; this test holds the real gateway process to it. Neither
sees a lazy import inside service.py's routes (import-linter takes packages, and service.py also holds
the inference service): tests/test_e2e_import_export.py reads the live gateway worker's mapped
libraries after it has served training, an import, a download and predictions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ML_STACK = ("torch", "setfit", "sentence_transformers", "transformers", "datasets")


def test_the_gateway_process_imports_no_ml_library(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "import service, fewshot.client\n"
        f"print(json.dumps(sorted(m for m in {ML_STACK!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, "MODEL_PATH": str(tmp_path)}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
