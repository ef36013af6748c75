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


def use_bentoml_log_handlers(level: str) -> None:
    """Inside BentoML workers: our `fewshot.*` loggers write where and how BentoML's do."""
    ours = logging.getLogger("fewshot")
    ours.setLevel(level)
    handlers = logging.getLogger("bentoml").handlers or logging.getLogger().handlers
    for handler in handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    ours.propagate = not handlers
