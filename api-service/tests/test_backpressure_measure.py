"""Backpressure's measure alone: the larger of its measures, the last one kept when a
measure fails, and a refusal only past the bound."""

from __future__ import annotations

import pytest

from common.errors import BrokerUnavailable, DatabaseUnavailable, TooMuchWaiting
from services.backpressure import NONE, Backpressure

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
    pressure = Backpressure(10, (measures.of_outbox, measures.of_queue))
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
