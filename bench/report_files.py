"""Where every benchmark writes its results: <directory>/<kind>-<UTC time>.json and .md."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any


def in_process_machine() -> str:
    """The machine an in-process benchmark (training, scoring) ran on, for its report's setup."""
    import platform

    import torch

    return (f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{'CUDA' if torch.cuda.is_available() else 'CPU'}")


def server_machine() -> str:
    """The machine a benchmark against a running server ran on, for its report's setup."""
    import platform
    import subprocess

    return f"{platform.machine()}, {subprocess.getoutput('nproc')} CPU cores"


def write_report(directory: Path, kind: str, when: datetime, report: dict[str, Any], markdown: str) -> Path:
    """Write the report as JSON and its Markdown summary; returns the common path without suffix."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{kind}-{when.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown)
    return stem
