"""The trainer process's logging: one line format, the job id on every line written during a job
(ours and the ML libraries'), and what those libraries print turned into records.

BentoML configures its own workers' logging; `fewshot.bentoml_fixes.worker_logging` adapts ours there.
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]%(job)s %(message)s"

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every log line written while a job runs (ours and the ML libraries') carries its id."""
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


class JobIdFilter(logging.Filter):
    """Adds `job_id=<id>` (or nothing, outside a job) as the record's `job` field."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = current_job.get()
        record.job = f" job_id={job_id}" if job_id else ""
        return True


class JobLinesFormatter(logging.Formatter):
    """Every line of a record written during a job carries its id: a traceback's or a multi-line
    warning's continuation lines too, so that grepping for the id finds all of them."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).rstrip("\n")
        job = getattr(record, "job", "")
        if not job or "\n" not in text:
            return text
        first, *rest = text.split("\n")
        return "\n".join([first, *(f" ...{job} | {line}" for line in rest)])


class LinesToLog(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: each line written becomes a log record.

    The ML libraries print beside logging (transformers' loss dicts when progress bars are off,
    tqdm, `print` in callbacks); as records those lines get our format and the job id. Lines are
    collected per thread, so two threads never splice each other's halves together.
    """

    def __init__(self, logger: logging.Logger, level: int, original: TextIO) -> None:
        self._logger = logger
        self._level = level
        self._original = original
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return self._original.encoding

    def fileno(self) -> int:  # C code and subprocesses write to the real file descriptor
        return self._original.fileno()

    def write(self, text: str) -> int:
        if getattr(self._local, "emitting", False):  # logging itself reporting a failure: no loop
            return self._original.write(text)
        pending = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = re.split(r"[\r\n]", pending)  # a progress bar's \r ends a line too
        self._emit(lines)
        return len(text)

    def flush(self) -> None:
        pending, self._local.pending = getattr(self._local, "pending", ""), ""
        self._emit([pending])

    def _emit(self, lines: list[str]) -> None:
        self._local.emitting = True
        try:
            for line in lines:
                if line.strip():
                    self._logger.log(self._level, line.rstrip())
        finally:
            self._local.emitting = False


def configure_logging(level: str) -> None:
    """Our processes outside BentoML (the trainer): one line format, with the job id during a job."""
    logging.basicConfig(level=level)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JobLinesFormatter(LINE_FORMAT))
        handler.addFilter(JobIdFilter())
    # Progress bars of the ML libraries flood logs; training progress is reported in job records.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def route_library_output_to_logging() -> None:
    """After the ML libraries are imported: whatever they write reaches our handlers as records.

    transformers and SetFit give their loggers a handler of their own that writes bare messages to
    stderr, and stop them from propagating: undo both. Warnings become records (`py.warnings`), and
    what is printed to stdout or stderr becomes one record per line (loggers `stdout`, `stderr`).
    """
    import setfit.logging
    import transformers.utils.logging

    for library in (transformers.utils.logging, setfit.logging):
        library.disable_default_handler()
        library.enable_propagation()
    logging.captureWarnings(True)
    sys.stdout = LinesToLog(logging.getLogger("stdout"), logging.INFO, sys.__stdout__)
    sys.stderr = LinesToLog(logging.getLogger("stderr"), logging.WARNING, sys.__stderr__)
