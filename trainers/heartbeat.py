"""A trainer's heartbeat: it tells the other trainers it is alive, and fails the jobs of those that are not.

With several trainer machines (REDIS_URL) no trainer can see another's process, so a job whose
trainer died would stay `running` forever. Each trainer beats every TRAINER_HEARTBEAT_SECONDS and,
on each beat, fails the running jobs of trainers silent for TRAINER_HEARTBEAT_MISSED_BEATS beats.
"""

from __future__ import annotations

import logging
import threading
import time

from trainers.queue import jobs
from trainers.tasks import WORKER_ID, fail_jobs_of_dead_trainers

logger = logging.getLogger("fewshot.trainer")

MISSED_BEATS = 3
"""TRAINER_HEARTBEAT_MISSED_BEATS' default."""


class Heartbeat:
    """Runs for the life of the trainer process (a daemon thread: it ends with the process)."""

    def __init__(self, interval_seconds: float, missed_beats: int = MISSED_BEATS) -> None:
        self._interval = interval_seconds
        self._missed_beats = missed_beats
        self._thread = threading.Thread(target=self._run, name="trainer-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()  # before this trainer takes its first job, so that job's trainer is known alive
        self._thread.start()

    def beat(self) -> None:
        jobs.beat(WORKER_ID, ttl_seconds=self._interval * self._missed_beats)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.beat()
                fail_jobs_of_dead_trainers()
            except Exception:  # e.g. Redis briefly away: keep beating, say so once per miss
                logger.exception("trainer heartbeat failed; retrying in %.1fs", self._interval)
