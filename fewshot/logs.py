"""Logging of our own processes (BentoML configures its workers' logging itself)."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s",
    )
    # Progress bars of the ML libraries flood logs; training progress is reported in job records.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
