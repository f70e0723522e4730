"""The AMQP adapter's boundary (common.amqp.errors): whatever the client raises leaves as
BrokerUnavailable, a future the client cancels as its channel closes included, while a
cancellation of the caller's own task still stops it."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError

from common.amqp.errors import translated
from common.errors import BrokerUnavailable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "error",
    [
        AMQPConnectionError("Server connection reset"),
        ChannelInvalidStateError("closed"),
        StopAsyncIteration(),
        RuntimeError("async generator raised StopAsyncIteration"),
        ConnectionResetError(104, "Connection reset by peer"),
        AttributeError("'NoneType' object has no attribute 'write'"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_whatever_the_client_raises_is_broker_unavailable(error: Exception) -> None:
    with (
        pytest.raises(BrokerUnavailable, match="RabbitMQ: publish") as caught,
        translated("publish"),
    ):
        raise error
    assert caught.value.__cause__ is error


async def unanswered_ping() -> None:
    with translated("ping", timeout=0.01):
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()


async def test_no_answer_in_time_says_how_long_was_waited() -> None:
    with pytest.raises(BrokerUnavailable, match=r"no answer within 0\.01 s"):
        await unanswered_ping()


async def test_a_future_the_client_cancels_is_broker_unavailable() -> None:
    confirmation: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    confirmation.cancel()  # as the client does to what is pending when a channel closes
    with pytest.raises(BrokerUnavailable, match="cancelled"), translated("publish"):
        await confirmation


async def test_cancelling_the_callers_own_task_still_stops_it() -> None:
    async def publish_forever() -> None:
        with translated("publish"):
            await asyncio.Event().wait()

    task = asyncio.create_task(publish_forever())
    await asyncio.sleep(0)  # one turn of the loop: the task is waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
