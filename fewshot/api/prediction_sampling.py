"""The gateway's side of the prediction log (fewshot/records/prediction_log.py): a sampled share of the
texts sent to /v1/predict, written off the request path.

`offer` only draws the sample and appends it, with the time it was taken, to a bounded in-memory
queue: a request never waits on the store. A daemon thread writes what has queued once a second, one
transaction per model; the store refuses a sample taken before its model's log was dropped (the
delete routes), so nothing queued before a delete lands after it. A full queue (the store slower
than the traffic) drops the newest samples and counts them (`fewshot_prediction_log_dropped_total`):
a sample, not a record, so losing some is by design. Expiry (PREDICTION_LOG_DAYS) is the log's own,
in every process, sampling or not. A read of the log (suggest with `logged`) and its deletion first
write what the gateway worker serving them holds (the learning routes call `flush`): with the one gateway
worker of configuration.yaml, they cover every text predicted before them.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from fewshot.records.prediction_log import PredictionLog

logger = logging.getLogger("fewshot.gateway")

MAX_QUEUED = 10_000
FLUSH_SECONDS = 1.0


class PredictionSampler:
    def __init__(self, log: PredictionLog, share: float, max_texts: int, retention_days: float | None = None,
                 on_dropped: Callable[[], None] | None = None) -> None:
        """`retention_days` is not used: the log expires itself (open_prediction_log), whether or not this
        sampler runs; it stays for the gateway's call."""
        self._log = log
        self._share = share
        self._max_texts = max_texts
        self._on_dropped = on_dropped
        self._queued: queue.Queue[tuple[str, str, float]] = queue.Queue(MAX_QUEUED)
        self._flushing = threading.Lock()  # a flush returns once what was queued before it is written
        self._random = random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_forever, name="prediction-log", daemon=True)
        self._thread.start()

    def offer(self, model: str, texts: Sequence[str]) -> None:
        """Queue each text with probability `share`, under the model's name (not a pinned version), as seen now."""
        name, taken_at = model.split(":", 1)[0], time.time()
        for text in texts:
            if self._share >= 1 or self._random.random() < self._share:
                try:
                    self._queued.put_nowait((name, text, taken_at))
                except queue.Full:
                    if self._on_dropped is not None:
                        self._on_dropped()

    def flush(self) -> None:
        """Write everything queued now (also what the thread does every FLUSH_SECONDS); with the
        thread's flush under way, after it: what it took from the queue is written when this returns."""
        with self._flushing:
            by_model: defaultdict[str, dict[str, float]] = defaultdict(dict)
            while True:
                try:
                    name, text, taken_at = self._queued.get_nowait()
                except queue.Empty:
                    break
                seen = by_model[name]
                seen.pop(text, None)  # a text sampled twice: once, at its last place and time
                seen[text] = taken_at
            for name, seen in by_model.items():
                self._log.add(name, list(seen), self._max_texts, now=list(seen.values()))

    def _write_forever(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # the store is down for a moment: these samples are lost, the thread goes on
                logger.warning("the prediction log could not be written; its samples of the last second are lost",
                               exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
