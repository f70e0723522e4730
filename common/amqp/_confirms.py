"""Publishing many messages in one write, each with its own publisher confirm.

aiormq's `basic_publish` sends one message per call: it takes the channel's lock, puts the
message's frames on the connection's write queue, waits for the writer to flush them, then
waits for the confirm. Under load that is a lock, a queue hand-off, a socket write and two
wake-ups per message. Here a batch does each of those once: under the same lock, it numbers
the messages with the channel's delivery tags, registers a confirmation future for each (as
`basic_publish` does, so that acks, nacks, returns and a closing channel settle them the same
way) and puts all their frames on the write queue as one payload.

This reads aiormq's channel internals (`delivery_tag`, `confirmations`,
`message_id_delivery_tag`, `write_queue`), which is why aiormq is pinned and why this module
refuses, at import, a version it was not written for; the tests in tests/test_confirms.py run
it against the real broker, returns and a closing channel included, and are the gate for any
upgrade. Private to common.amqp.publisher.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

# The aiormq releases whose channel internals this module was written against and tested with.
WRITTEN_FOR_AIORMQ = ("7.2.",)


def check_aiormq_version(installed: str) -> None:
    """ImportError unless `installed` is a release this module was written for."""
    if not installed.startswith(WRITTEN_FOR_AIORMQ):
        raise ImportError(
            f"common.amqp._confirms reads the internals of aiormq {' or '.join(WRITTEN_FOR_AIORMQ)}x"
            f" and aiormq {installed} is installed. Install the pinned versions (make install), or"
            " to upgrade aiormq: run tests/test_confirms.py against a real RabbitMQ, fix what"
            " fails, then add the version to WRITTEN_FOR_AIORMQ."
        )


check_aiormq_version(importlib.metadata.version("aiormq"))


@dataclass(frozen=True, slots=True)
class Outgoing:
    body: bytes
    properties: spec.Basic.Properties  # message_id must be set: returns are matched by it
    exchange: str
    routing_key: str
    deadline: float = float("inf")  # the loop's clock: by when the publisher gives up on it


async def publish_batch(
    channel: AbstractChannel, messages: Sequence[Outgoing]
) -> list[asyncio.Future[object]]:
    """Send `messages` (mandatory, each to its exchange and routing key) and return one
    confirmation future per message: an Ack frame, or DeliveryError (nack), PublishError
    (returned: unroutable), or the channel's closing error. Raises ChannelInvalidStateError
    if the channel cannot confirm."""
    if not isinstance(channel, Channel) or not channel.publisher_confirms:
        raise ChannelInvalidStateError("publish_batch needs an aiormq channel with confirms")
    if any(not message.properties.message_id for message in messages):
        raise ValueError("every message needs a message_id")
    frames: list[Any] = []
    for message in messages:
        frames += [
            spec.Basic.Publish(
                exchange=message.exchange, routing_key=message.routing_key, mandatory=True
            ),
            ContentHeader(properties=message.properties, body_size=len(message.body)),
            *_bodies(message.body, channel.max_content_size),
        ]
    payload = ChannelFrame.marshall(channel_number=channel.number, frames=frames)
    async with channel.lock:
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        # The broker numbers the messages it receives on this channel 1, 2, 3...; these
        # tags are the ones it will confirm, so they must match what is actually sent.
        first = channel.delivery_tag + 1
        futures = [
            _expect_confirm(channel, message, first + n) for n, message in enumerate(messages)
        ]
        channel.delivery_tag += len(messages)
        try:
            await channel.write_queue.put(payload)
        except BaseException:
            # Not sent: give the tags back, as basic_publish does, while still holding the lock.
            channel.delivery_tag = first - 1
            for n, future in enumerate(futures):
                channel.confirmations.pop(first + n, None)
                future.cancel()
            raise
    return futures


def _expect_confirm(channel: Channel, message: Outgoing, tag: int) -> asyncio.Future[object]:
    message_id = message.properties.message_id
    assert message_id is not None
    future: asyncio.Future[object] = channel.create_future()
    channel.confirmations[tag] = future
    channel.message_id_delivery_tag[message_id] = tag

    def forget(_: asyncio.Future[object]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    future.add_done_callback(forget)
    return future


def _bodies(body: bytes, size: int) -> list[ContentBody]:
    return [ContentBody(body[start : start + size]) for start in range(0, len(body), size)]
