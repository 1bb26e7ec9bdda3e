"""How long the trainer waits for data: ``data_wait_fraction`` of each epoch.

Ignite fires ``GET_BATCH_STARTED`` / ``GET_BATCH_COMPLETED`` around each fetch from the data loader;
the time between them is time the network did not run. The fraction is that time over the epoch's
training time (its first fetch to its last iteration; validation excluded). Near 0: the loader keeps
up; near 1: the run is bound by data loading (more ``--num-workers``, or the store on a faster disk).
"""

from __future__ import annotations

import time
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["DataWaitTimer"]


class DataWaitTimer:
    """Accumulates the seconds an engine waits for batches in the current epoch."""

    def __init__(self) -> None:
        self.wait = 0.0
        self.start: float | None = None
        self.end: float | None = None
        self._fetch: float | None = None

    def attach(self, engine: Engine) -> DataWaitTimer:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._fetch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._fetch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        return self

    def _epoch_started(self, _: Any) -> None:
        self.wait, self.start, self.end = 0.0, time.perf_counter(), None

    def _fetch_started(self, _: Any) -> None:
        self._fetch = time.perf_counter()

    def _fetch_completed(self, _: Any) -> None:
        if self._fetch is not None:
            self.wait += time.perf_counter() - self._fetch
            self._fetch = None

    def _iteration_completed(self, _: Any) -> None:
        self.end = time.perf_counter()

    @property
    def fraction(self) -> float:
        """Waiting time over training time of the current (or last) epoch, in [0, 1]; 0 before any iteration."""
        if self.start is None or self.end is None or self.end <= self.start:
            return 0.0
        return min(1.0, self.wait / (self.end - self.start))
