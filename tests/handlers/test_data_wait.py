"""data_wait_fraction: the share of an epoch the trainer spends waiting for the data loader."""

from __future__ import annotations

import time

import pytest
from ignite.engine import Engine, Events

from medseg.handlers.data_wait import DataWaitTimer


class _SlowData:
    """4 batches, each taking ``delay`` seconds to produce."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __iter__(self):
        for i in range(4):
            time.sleep(self.delay)
            yield i


@pytest.mark.parametrize(("data_s", "step_s", "low", "high"), [(0.05, 0.0, 0.9, 1.0), (0.0, 0.05, 0.0, 0.1),
                                                               (0.03, 0.03, 0.35, 0.65)],
                         ids=["data-bound", "compute-bound", "half"])
def test_fraction_is_the_waiting_share_of_the_epoch(data_s, step_s, low, high):
    engine = Engine(lambda e, b: time.sleep(step_s))
    timer = DataWaitTimer().attach(engine)
    fractions = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: fractions.append(timer.fraction))
    engine.run(_SlowData(data_s), max_epochs=2)
    assert len(fractions) == 2
    for f in fractions:  # 4 x data_s waiting out of 4 x (data_s + step_s)
        assert low <= f <= high, fractions


def test_fraction_is_zero_before_any_iteration():
    assert DataWaitTimer().fraction == 0.0
