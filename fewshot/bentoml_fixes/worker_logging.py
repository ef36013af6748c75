"""Our log lines inside BentoML's workers, and BentoML's own request errors made proportionate.

Upstream: BentoML 1.4.40 configures its workers' logging (handlers on the `bentoml` logger only)
before importing the service, and logs every rejected request at ERROR with a traceback that
holds the rejected input (`bentoml._internal.server.http_app`). Not reported upstream that we found.
"""

from __future__ import annotations

import logging

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
    """Our `fewshot.*` loggers write where and how BentoML's do; client errors without tracebacks."""
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
