"""Batched confirms (common.amqp._confirms) and the one publisher on them, against the real
broker: every message confirmed once, in step with aiormq's own publishes on the same channel,
returns and a closed channel reported, each publish routed and shaped as its port says."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError, PublishError
from pamqp import commands as spec

from common.amqp import AmqpTaskPublisher, Topology
from common.amqp._confirms import Outgoing, check_aiormq_version, publish_batch
from common.amqp.publisher import ATTEMPTS_HEADER, LOOKUPS_HEADER
from common.errors import BrokerUnavailable
from common.messages import TaskMessage
from common.settings import Settings
from testkit.broker import broker_channel, publish_task, take_all

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(direct: Settings) -> Settings:
    return direct


@pytest.fixture
async def channel(direct: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel of each test's own (some close it), on an empty queue."""
    async with broker_channel(direct) as channel:
        await take_all(channel, direct.task_queue)
        yield channel


async def underlay_of(channel: AbstractChannel) -> Channel:
    underlay = await channel.get_underlay_channel()
    assert isinstance(underlay, Channel)
    return underlay


def outgoing(count: int, routing_key: str, *, size: int = 10) -> list[Outgoing]:
    return [
        Outgoing(
            f"{n:0{size}d}".encode(),
            spec.Basic.Properties(message_id=str(uuid.uuid4()), delivery_mode=2),
            exchange="",
            routing_key=routing_key,
        )
        for n in range(count)
    ]


async def test_a_batch_is_confirmed_message_by_message_and_arrives_in_order(
    channel: AbstractChannel, settings: Settings
) -> None:
    messages = outgoing(200, settings.task_queue)
    underlay = await underlay_of(channel)

    futures = await publish_batch(underlay, messages)
    outcomes = await asyncio.gather(*futures)

    assert all(isinstance(outcome, spec.Basic.Ack) for outcome in outcomes)
    received = await take_all(channel, settings.task_queue)
    assert [m.message_id for m in received] == [m.properties.message_id for m in messages]
    assert [m.body for m in received] == [m.body for m in messages]
    assert underlay.confirmations == {}
    assert underlay.message_id_delivery_tag == {}


async def test_bodies_larger_than_a_frame_are_split_and_joined_again(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)
    big = outgoing(3, settings.task_queue, size=3 * underlay.max_content_size + 5)

    futures = await publish_batch(underlay, big)
    await asyncio.gather(*futures)

    received = await take_all(channel, settings.task_queue)
    assert [m.body for m in received] == [m.body for m in big]


async def test_batches_and_single_publishes_share_a_channel_without_mixing_up_confirms(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)

    async def batch() -> list[object]:
        futures = await publish_batch(underlay, outgoing(20, settings.task_queue))
        return list(await asyncio.gather(*futures))

    async def single() -> object:
        message = aio_pika.Message(b"single", message_id=str(uuid.uuid4()))
        return await channel.default_exchange.publish(message, routing_key=settings.task_queue)

    results = await asyncio.gather(*(batch() if n % 2 else single() for n in range(40)))

    flat = [r for result in results for r in (result if isinstance(result, list) else [result])]
    assert len(flat) == 20 * 20 + 20
    assert all(isinstance(outcome, spec.Basic.Ack) for outcome in flat)
    assert len(await take_all(channel, settings.task_queue)) == 420


async def test_an_unroutable_batch_is_returned_and_the_channel_stays_in_step(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)

    futures = await publish_batch(underlay, outgoing(5, "no-such-queue"))
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(outcome, PublishError) for outcome in outcomes)

    futures = await publish_batch(underlay, outgoing(5, settings.task_queue))
    assert all(isinstance(o, spec.Basic.Ack) for o in await asyncio.gather(*futures))
    assert len(await take_all(channel, settings.task_queue)) == 5


async def test_a_closed_channel_refuses_the_batch(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)
    await channel.close()
    with pytest.raises(ChannelInvalidStateError):
        await publish_batch(underlay, outgoing(1, settings.task_queue))


async def test_a_message_without_id_is_refused_before_anything_is_sent(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)
    tag = underlay.delivery_tag
    nameless = Outgoing(b"x", spec.Basic.Properties(delivery_mode=2), "", settings.task_queue)
    with pytest.raises(ValueError, match="message_id"):
        await publish_batch(underlay, [*outgoing(2, settings.task_queue), nameless])
    assert underlay.delivery_tag == tag
    assert underlay.confirmations == {}


def message() -> TaskMessage:
    return TaskMessage(str(uuid.uuid4()), "t ✓", "d", {"k": [1, None]})


async def test_the_publisher_confirms_each_message_and_fails_when_not_attached(
    channel: AbstractChannel, settings: Settings
) -> None:
    publisher = AmqpTaskPublisher(Topology.from_settings(settings), timeout=5)
    assert not publisher.is_open
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await publisher.publish(message())

    sent = [message() for _ in range(3)]
    await publish_task(channel, settings, sent[0])
    await asyncio.gather(*(publish_task(channel, settings, m) for m in sent[1:]))

    received = await take_all(channel, settings.task_queue)
    assert sorted(m.body for m in received) == sorted(m.encode() for m in sent)
    for delivered in received:
        assert delivered.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert delivered.content_type == "application/json"
        assert (delivered.headers or {})[ATTEMPTS_HEADER] == 0
        assert LOOKUPS_HEADER not in (delivered.headers or {})
        assert delivered.expiration is None


async def test_an_unroutable_publish_is_broker_unavailable(settings: Settings) -> None:
    gone = settings.model_copy(update={"task_queue": "no-such-queue"})
    async with broker_channel(settings) as channel:
        with pytest.raises(BrokerUnavailable, match="PublishError"):
            await publish_task(channel, gone, message())


async def test_a_retry_goes_to_the_tier_that_holds_it_long_enough(
    channel: AbstractChannel, settings: Settings
) -> None:
    topology = Topology.from_settings(settings)
    task = message()

    await publish_task(channel, settings, task, attempts=2, lookups=1, delay_seconds=3.0)

    tier = topology.retry_tier(3.0)
    assert tier >= 3000
    [waiting] = await take_all(channel, topology.retry_queue(tier))
    assert waiting.body == task.encode()
    assert waiting.message_id == task.task_id
    headers = waiting.headers or {}
    assert (headers[ATTEMPTS_HEADER], headers[LOOKUPS_HEADER]) == (2, 1)
    assert waiting.expiration == 3.0  # it leaves its tier after exactly the delay


async def test_a_publish_on_a_closed_channel_fails_at_once(settings: Settings) -> None:
    async with broker_channel(settings) as channel:
        await channel.close()
        async with asyncio.timeout(1):
            with pytest.raises(BrokerUnavailable, match="not connected"):
                await publish_task(channel, settings, message())


def test_an_aiormq_it_was_not_written_for_is_refused_at_import() -> None:
    check_aiormq_version("7.2.4")
    with pytest.raises(ImportError, match=r"aiormq 8\.0\.0 is installed.*make install"):
        check_aiormq_version("8.0.0")
