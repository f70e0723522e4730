"""Backpressure's measure alone: the larger of its measures, the last one kept when a
measure fails, and a refusal only past the bound; and the figures GET /api/queue shows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.errors import BrokerUnavailable, DatabaseUnavailable, TooMuchWaiting
from services.backpressure import NONE, Backpressure, QueueFigures

pytestmark = pytest.mark.unit


class Measures:
    def __init__(self) -> None:
        self.outbox: int | Exception = 0
        self.queue: int | Exception = 0

    async def of_outbox(self) -> int:
        return self._value(self.outbox)

    async def of_queue(self) -> int:
        return self._value(self.queue)

    @staticmethod
    def _value(value: int | Exception) -> int:
        if isinstance(value, Exception):
            raise value
        return value


async def test_the_larger_measure_past_the_bound_refuses() -> None:
    measures = Measures()
    pressure = Backpressure(10, outbox=measures.of_outbox, queue=measures.of_queue)
    measures.outbox, measures.queue = 3, 10
    await pressure.measure()
    pressure.check()  # 10 is not past 10
    measures.queue = 11
    await pressure.measure()
    with pytest.raises(TooMuchWaiting, match="11 tasks wait already, more than MAX_BACKLOG"):
        pressure.check()
    measures.outbox, measures.queue = 12, BrokerUnavailable("down")
    await pressure.measure()
    assert pressure.waiting == 12  # what could be measured
    measures.outbox, measures.queue = DatabaseUnavailable("down"), BrokerUnavailable("down")
    await pressure.measure()
    assert pressure.waiting == 12  # nothing measured: the last measure stands
    measures.outbox, measures.queue = 0, 0
    await pressure.measure()
    pressure.check()


def test_none_never_refuses() -> None:
    NONE.check()
    assert not NONE.over


async def test_the_figures_are_the_latest_measure_and_none_where_it_failed() -> None:
    measures = Measures()
    pressure = Backpressure(0, outbox=measures.of_outbox, queue=measures.of_queue)
    assert pressure.figures == QueueFigures(None, None, None)  # nothing measured yet
    measures.outbox, measures.queue = 4, 9
    before = datetime.now(UTC)
    await pressure.measure()
    figures = pressure.figures
    assert (figures.outbox_backlog, figures.queue_ready) == (4, 9)
    assert figures.measured_at is not None
    assert before <= figures.measured_at <= datetime.now(UTC)
    pressure.check()  # MAX_BACKLOG 0: no bound, however much waits
    measures.queue = BrokerUnavailable("down")
    await pressure.measure()
    figures = pressure.figures
    assert (figures.outbox_backlog, figures.queue_ready) == (4, None)
    measures.outbox = DatabaseUnavailable("down")
    await pressure.measure()
    figures = pressure.figures
    assert (figures.outbox_backlog, figures.queue_ready) == (None, None)
    assert figures.measured_at is not None  # when it was tried
    assert pressure.waiting == 4  # the bound still judges by the last measure that worked


async def test_without_measures_every_figure_stays_none() -> None:
    pressure = Backpressure(0)
    await pressure.measure()
    assert (pressure.figures.outbox_backlog, pressure.figures.queue_ready) == (None, None)
