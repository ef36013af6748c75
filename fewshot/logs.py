"""Logging of our own processes (BentoML configures its workers' logging itself)."""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [pid %(process)d]%(job)s %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobIdFilter())
    # Progress bars of the ML libraries flood logs; training progress is reported in job records.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


BENTOML_REQUEST_ERRORS_LOGGER = "bentoml._internal.server.http_app"


def _client_error_summary(error: BaseException) -> str | None:
    """One line for a request the client got wrong (a 4xx), None for anything else."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return f"400: {error.error_count()} validation error(s) for {error.title}"
    if isinstance(error, BentoMLException) and error.error_code < 500:
        return f"{int(error.error_code)}: {type(error).__name__}"
    return None


class ClientErrorsWithoutTracebacks(logging.Filter):
    """BentoML logs every rejected request at ERROR with a traceback (and the rejected input in
    it). A client's mistake is not the server's: one WARNING line, no input values."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        summary = _client_error_summary(error) if error is not None else None
        if summary is not None:
            record.msg = f"rejected {record.getMessage().removeprefix('Exception on ')}: {summary}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def use_bentoml_log_handlers(level: str) -> None:
    """Inside BentoML workers: our `fewshot.*` loggers write where and how BentoML's do."""
    request_errors = logging.getLogger(BENTOML_REQUEST_ERRORS_LOGGER)
    if not any(isinstance(f, ClientErrorsWithoutTracebacks) for f in request_errors.filters):
        request_errors.addFilter(ClientErrorsWithoutTracebacks())
    ours = logging.getLogger("fewshot")
    ours.setLevel(level)
    handlers = logging.getLogger("bentoml").handlers or logging.getLogger().handlers
    for handler in handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    ours.propagate = not handlers
