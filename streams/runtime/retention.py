"""Retention: drop events older than ``SMARTLOGS_RETENTION_DAYS`` (by event time), in the
background, in bounded steps, the same loop for both stores.

The step is the store's: the embedded store deletes up to a thousand rows per short transaction;
the Elasticsearch store deletes whole daily or monthly indices whose period ended before the
cutoff (it has no ILM in the minimal distribution the tests use, and no delete-by-query; where
the full distribution runs, an ILM delete phase on the same indices does the same job).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Retention", "cutoff"]

log = logging.getLogger(__name__)


def cutoff(now: float, days: float, window_seconds: int) -> float:
    """The oldest event time kept, aligned down to a window start (whole windows go at once).

    >>> cutoff(10 * 86400 + 125, 7, 60)
    259320.0
    """
    t = now - days * 86400
    return float(t - t % window_seconds)


class Retention:
    """Calls ``step(cutoff)`` until it returns 0, pausing between steps; ``run_once`` does one
    pass, ``start`` runs a pass every ``interval`` seconds in a daemon thread."""

    def __init__(self, step: Callable[[float], int], *, days: float, window_seconds: int,
                 interval: float = 600.0, pause: float = 0.02, clock: Callable[[], float] = time.time):
        if days <= 0:
            raise ValueError("retention needs a positive number of days")
        self.step, self.days, self.window_seconds = step, days, window_seconds
        self.interval, self.pause, self.clock = interval, pause, clock
        self.deleted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        cut = cutoff(self.clock(), self.days, self.window_seconds)
        total = 0
        while not self._stop.is_set():
            n = self.step(cut)
            if not n:
                break
            total += n
            self._stop.wait(self.pause)  # let ingest and the writer in between steps
        if total:
            log.info("retention: deleted %d row(s)/index(es) older than %.0f day(s)", total, self.days)
        self.deleted += total
        return total

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="smartlogs-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - retention must never take the platform down
                log.exception("retention pass failed; retried at the next interval")
            self._stop.wait(self.interval)
