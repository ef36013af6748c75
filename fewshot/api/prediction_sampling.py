"""The gateway's side of the prediction log (trainers/prediction_log.py): a sampled share of the
texts sent to /v1/predict, written off the request path.

`offer` only draws the sample and appends to a bounded in-memory queue: a request never waits on
the store. A daemon thread writes what has queued once a second, one transaction per model, and
forgets texts older than PREDICTION_LOG_DAYS once a minute. A full queue (the store slower than the
traffic) drops the newest samples and counts them (`fewshot_prediction_log_dropped_total`): a
sample, not a record, so losing some is by design.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from trainers.prediction_log import PredictionLog

logger = logging.getLogger("fewshot.gateway")

MAX_QUEUED = 10_000
FLUSH_SECONDS = 1.0
EXPIRE_EVERY_SECONDS = 60.0


class PredictionSampler:
    def __init__(self, log: PredictionLog, share: float, max_texts: int, retention_days: float,
                 on_dropped: Callable[[], None] | None = None) -> None:
        self._log = log
        self._share = share
        self._max_texts = max_texts
        self._retention_seconds = retention_days * 86400
        self._on_dropped = on_dropped
        self._queued: queue.Queue[tuple[str, str]] = queue.Queue(MAX_QUEUED)
        self._random = random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_forever, name="prediction-log", daemon=True)
        self._thread.start()

    def offer(self, model: str, texts: Sequence[str]) -> None:
        """Queue each text with probability `share`, under the model's name (not a pinned version)."""
        name = model.split(":", 1)[0]
        for text in texts:
            if self._share >= 1 or self._random.random() < self._share:
                try:
                    self._queued.put_nowait((name, text))
                except queue.Full:
                    if self._on_dropped is not None:
                        self._on_dropped()

    def flush(self) -> None:
        """Write everything queued now (also what the thread does every FLUSH_SECONDS)."""
        by_model: defaultdict[str, list[str]] = defaultdict(list)
        while True:
            try:
                name, text = self._queued.get_nowait()
            except queue.Empty:
                break
            by_model[name].append(text)
        for name, texts in by_model.items():
            self._log.add(name, list(dict.fromkeys(texts)), self._max_texts)

    def _write_forever(self) -> None:
        expired_at = 0.0
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
                if time.monotonic() - expired_at > EXPIRE_EVERY_SECONDS:
                    self._log.expire(time.time() - self._retention_seconds)
                    expired_at = time.monotonic()
            except Exception:  # the store is down for a moment: these samples are lost, the thread goes on
                logger.warning("the prediction log could not be written; its samples of the last second are lost",
                               exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
