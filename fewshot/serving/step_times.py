"""Named steps of a long piece of work (a version's exports, AUTO's timing), with their wall-clock start and
end: said in the log, and read by bench/export_cost.py, which samples memory across them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StepTimes:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.candidate: str | None = None
        """The backend variant the steps are for, when the work is per variant (AUTO's candidates)."""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.time()
        try:
            yield
        finally:
            self.add(name, started, time.time())

    def add(self, name: str, start: float, end: float, candidate: str | None = None) -> None:
        """A step timed elsewhere (e.g. one the export process recorded), for `candidate` or the current one."""
        self.records.append({"step": name, "candidate": candidate or self.candidate, "start": start, "end": end,
                             "seconds": round(end - start, 2)})

    @staticmethod
    def summarize(records: list[dict[str, Any]]) -> str:
        return ", ".join(f"{record['step']}{' (' + record['candidate'] + ')' if record['candidate'] else ''} "
                         f"{record['seconds']:.1f}s" for record in records)


NO_STEPS = StepTimes()
"""For callers that keep no record (its records are never read)."""
