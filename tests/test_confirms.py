"""common.confirms against the real broker: every message confirmed once, in step with
aiormq's own publishes on the same channel, returns and a closed channel reported."""

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

from common.broker import AmqpPublisher, expire_unconfirmed, task_amqp_message, task_outgoing
from common.confirms import Outgoing, publish_batch
from common.errors import BrokerUnavailable
from common.messages import TaskMessage
from common.settings import Settings
from testkit.broker import broker_channel, take_all

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


def outgoing(count: int, *, size: int = 10) -> list[Outgoing]:
    return [
        Outgoing(
            f"{n:0{size}d}".encode(),
            spec.Basic.Properties(message_id=str(uuid.uuid4()), delivery_mode=2),
        )
        for n in range(count)
    ]


async def test_a_batch_is_confirmed_message_by_message_and_arrives_in_order(
    channel: AbstractChannel, settings: Settings
) -> None:
    messages = outgoing(200)
    underlay = await underlay_of(channel)

    futures = await publish_batch(underlay, messages, exchange="", routing_key=settings.task_queue)
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
    big = outgoing(3, size=3 * underlay.max_content_size + 5)

    futures = await publish_batch(underlay, big, exchange="", routing_key=settings.task_queue)
    await asyncio.gather(*futures)

    received = await take_all(channel, settings.task_queue)
    assert [m.body for m in received] == [m.body for m in big]


async def test_batches_and_single_publishes_share_a_channel_without_mixing_up_confirms(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)

    async def batch() -> list[object]:
        futures = await publish_batch(
            underlay, outgoing(20), exchange="", routing_key=settings.task_queue
        )
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

    futures = await publish_batch(underlay, outgoing(5), exchange="", routing_key="no-such-queue")
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(outcome, PublishError) for outcome in outcomes)

    futures = await publish_batch(
        underlay, outgoing(5), exchange="", routing_key=settings.task_queue
    )
    assert all(isinstance(o, spec.Basic.Ack) for o in await asyncio.gather(*futures))
    assert len(await take_all(channel, settings.task_queue)) == 5


async def test_a_closed_channel_refuses_the_batch(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)
    await channel.close()
    with pytest.raises(ChannelInvalidStateError):
        await publish_batch(underlay, outgoing(1), exchange="", routing_key=settings.task_queue)


async def test_a_message_without_id_is_refused_before_anything_is_sent(
    channel: AbstractChannel, settings: Settings
) -> None:
    underlay = await underlay_of(channel)
    tag = underlay.delivery_tag
    nameless = Outgoing(b"x", spec.Basic.Properties(delivery_mode=2))
    with pytest.raises(ValueError, match="message_id"):
        await publish_batch(
            underlay, [*outgoing(2), nameless], exchange="", routing_key=settings.task_queue
        )
    assert underlay.delivery_tag == tag
    assert underlay.confirmations == {}


async def test_amqp_publisher_confirms_each_message_and_fails_when_detached(
    channel: AbstractChannel, settings: Settings
) -> None:
    publisher = AmqpPublisher(timeout=5)
    with pytest.raises(BrokerUnavailable):
        await publisher.send_many(outgoing(3), exchange="", routing_key=settings.task_queue)

    publisher.attach(channel)
    for confirmation in await publisher.send_many(
        outgoing(3), exchange="", routing_key=settings.task_queue
    ):
        await publisher.confirmed(confirmation)
    for confirmation in await publisher.send_many(
        outgoing(3), exchange="", routing_key="no-such-queue"
    ):
        with pytest.raises(BrokerUnavailable, match="PublishError"):
            await publisher.confirmed(confirmation)


async def test_what_is_not_confirmed_in_time_fails_and_the_rest_stands() -> None:
    loop = asyncio.get_running_loop()
    confirmed, late = loop.create_future(), loop.create_future()
    confirmed.set_result(spec.Basic.Ack())

    expire_unconfirmed([confirmed, late], 0.5)

    await AmqpPublisher.confirmed(confirmed)
    with pytest.raises(BrokerUnavailable, match=r"within 0\.5 s"):
        await AmqpPublisher.confirmed(late)


def test_task_outgoing_is_task_amqp_message_built_directly() -> None:
    message = TaskMessage(str(uuid.uuid4()), "t ✓", "d", {"k": [1, None]})
    direct, general = task_outgoing(message), task_amqp_message(message)
    assert direct.body == general.body
    for name in spec.Basic.Properties.__slots__:
        assert getattr(direct.properties, name) == getattr(general.properties, name), name
