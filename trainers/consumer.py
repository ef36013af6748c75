"""The trainer process: `python -m trainers.consumer` runs the Huey consumer for training jobs.

With the embedded SQLite queue only one consumer may serve a state directory (it alone can tell
that a `running` job's worker is dead), so it first takes an exclusive lock on a file there and
waits while another consumer holds it, e.g. an orphan of a killed server that is still exiting.
With REDIS_URL any number of consumers share the queue; heartbeats tell them which are alive.

Jobs run in a worker thread of this process: `kill -9` of this process is the death of the job's
executor too (there is no separate worker process to orphan).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from fewshot.settings import Settings, apply_process_environment, get_settings
from trainers.logs import configure_logging

logger = logging.getLogger("fewshot.trainer")

LOCK_WAIT_LOG_SECONDS = 10


@contextmanager
def exclusive_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        waited_since = time.monotonic()
        next_log = 0.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - waited_since
                if waited >= next_log:
                    logger.warning("another trainer holds %s; waiting for it to exit (%.0fs)", path, waited)
                    next_log += LOCK_WAIT_LOG_SECONDS
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def serve_metrics(port: int) -> None:
    """Prometheus metrics of this trainer (jobs finished, training durations) on their own port.

    For trainers run on their own; the embedded trainer's reach the server's /metrics already.
    """
    from prometheus_client import start_http_server

    import fewshot.metrics  # noqa: F401 - registers our metrics before the first scrape

    start_http_server(port)
    logger.info("trainer metrics on port %d (/metrics)", port)


def run_consumer(settings: Settings, sole_consumer: bool) -> None:
    import trainers.run  # noqa: F401 - load torch/SetFit now, not inside the first job
    from fewshot import store
    from trainers.heads import add_safe_heads_to_old_versions
    from trainers.heartbeat import Heartbeat
    from trainers.logs import route_library_output_to_logging
    from trainers.queue import huey
    from trainers.tasks import reconcile_after_restart

    route_library_output_to_logging()
    reconcile_after_restart(sole_consumer=sole_consumer)
    store.remove_incomplete_versions()  # a model copy cut short by a crash of this or another trainer
    for tag in add_safe_heads_to_old_versions():
        logger.info("%s: saved its head without pickle too (model_head.skops), for downloads and imports", tag)
    Heartbeat(settings.trainer_heartbeat_seconds, settings.trainer_heartbeat_missed_beats).start()
    if settings.trainer_metrics_port:
        serve_metrics(settings.trainer_metrics_port)
    # One job at a time per trainer, in a thread: SIGTERM then fires SIGNAL_INTERRUPTED for the
    # running job from the main thread, which queues it again before the process exits.
    # An idle Huey worker polls a non-blocking queue (SQLite) ever more slowly, up to max_delay
    # (Huey's default: 10 s): a `head` job waited 0.6-9.5 s before it started, for a training of
    # 0.3-0.5 s. One look at the queue is one small SQLite query, so a short bound costs nothing;
    # Redis's queue blocks on BRPOP and wakes the worker at once anyway.
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False, check_worker_health=True,
                                    initial_delay=min(0.1, settings.trainer_poll_seconds),
                                    max_delay=settings.trainer_poll_seconds)
    logger.info("trainer consumer started (pid %d)", os.getpid())
    consumer.run()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    apply_process_environment(settings)
    if settings.redis_url:
        run_consumer(settings, sole_consumer=False)
    else:
        with exclusive_lock(settings.consumer_lock_file):
            run_consumer(settings, sole_consumer=True)
    # After SIGTERM the running job has been queued again (SIGNAL_INTERRUPTED), but its thread is
    # still inside torch, and finalizing the interpreter under it aborts the process ("terminate
    # called without an active exception", exit -6: seen in tests/test_e2e_trainers_redis.py).
    # Everything is written; flush the logs and exit without finalizing.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
