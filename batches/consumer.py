"""The batch worker: `python -m batches.consumer` runs the Huey consumer of batch tasks.

The embedded trainer service starts one beside the trainer (service.py); on other machines run it
yourself, with the same REDIS_URL and a shared MODEL_PATH (docs/batches.md). Any number may run: a
shard is computed by the one worker that claimed it (fewshot/records/batches.py).

Online requests first: the whole process runs at Linux's SCHED_IDLE policy (its threads, the
runtimes' thread pools included, inherit it), so it gets a CPU only when nothing else of normal
priority wants one: an online request's forward pass preempts a batch's at once, and a batch on an
idle machine still has every core.
"""

from __future__ import annotations

import logging
import os
import threading

from fewshot.settings import apply_process_environment, get_settings
from trainers.logs import LINE_FORMAT, JobIdFilter, configure_logging

logger = logging.getLogger("fewshot.batches")


class ProcessLinesFormatter(logging.Formatter):
    """Every line of a multi-line record carries this process's id (Huey lists its tasks in one record
    of several lines): the embedded batch worker writes to the server's log beside the trainer, and each
    line must say whose it is."""

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).rstrip("\n").split("\n")
        return "\n".join([first, *(f" ...[pid {record.process}] | {line}" for line in rest)])


def configure_worker_logging(level: str) -> None:
    configure_logging(level)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(ProcessLinesFormatter(LINE_FORMAT))
        if not any(isinstance(existing, JobIdFilter) for existing in handler.filters):
            handler.addFilter(JobIdFilter())


def lowest_cpu_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as error:  # not Linux: the lowest nice value instead
        logger.warning("SCHED_IDLE not available (%s); running at nice 19", error)
        os.nice(19)


def sweep_forever(interval: float) -> None:
    from batches.tasks import sweep

    starting = True
    while True:
        try:
            sweep(starting=starting)
            starting = False
        except Exception:  # e.g. Redis briefly away: try again next round
            logger.exception("batch sweep failed; retrying in %.1fs", interval)
        threading.Event().wait(interval)


def main() -> None:
    settings = get_settings()
    configure_worker_logging(settings.log_level)
    apply_process_environment(settings)
    lowest_cpu_priority()  # before any thread starts: they inherit it
    # The tasks register on the queue when their module is imported: before the consumer's first
    # dequeue (else Huey drops the message: "batches.tasks.run_shard not found in TaskRegistry").
    from batches.queue import huey
    from batches.tasks import sweep  # noqa: F401

    threading.Thread(target=sweep_forever, args=(settings.batch_sweep_seconds,), name="batch-sweep",
                     daemon=True).start()
    # One shard at a time per worker: a shard's forward passes already use every core.
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False, check_worker_health=True,
                                    initial_delay=min(0.1, settings.trainer_poll_seconds),
                                    max_delay=settings.trainer_poll_seconds)
    logger.info("batch worker started (pid %d)", os.getpid())
    consumer.run()
    # As the trainer (trainers/consumer.py): a thread may still be inside a runtime; a shard cut short is
    # computed again from its claim. Exit without finalizing the interpreter.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
