"""How a failed training job explains itself in its record."""

from __future__ import annotations

MAX_ERROR_LENGTH = 2000


class TrainingFailed(Exception):
    """A failure the user can act on; its message goes into the job record as it is."""


class JobCancelled(Exception):
    """The job was cancelled while running: training stops, nothing is registered."""


def describe_failure(error: BaseException | None) -> str:
    if error is None:
        return "training failed for an unknown reason; see the trainer log"
    known = isinstance(error, TrainingFailed)
    message = str(error) if known else f"training failed: {type(error).__name__}: {error}"
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 1] + "…"
