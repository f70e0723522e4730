"""A task message's trace: the W3C headers it carries, and its two spans with tracing on.

By the OpenTelemetry semantic conventions for messaging (RabbitMQ): `publish <destination>`
(PRODUCER) lasts from a publish until the broker confirms it, and its context goes into the
message's headers; `process <queue>` (CONSUMER) lasts from a delivery until it is settled,
as a child of that context, so the worker's work joins the trace of the request that
submitted it. The destination is the routing key on the default exchange, otherwise
`<exchange>:<routing key>` (a retry tier). With tracing off there are no spans, and the
headers a delivery came with are passed on to what its processing publishes (common.tracing).

While a delivery is processed, every record logged carries its task_id and trace_id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from common import tracing
from common.amqp._confirms import Outgoing
from common.logs import bind, unbind

_NOTHING = contextlib.nullcontext()


def publishing(outgoing: Outgoing) -> contextlib.AbstractContextManager[object]:
    """Around a publish: puts the trace context into `outgoing`'s headers, and with tracing
    on is its span."""
    properties = outgoing.properties
    if properties.headers is None:
        properties.headers = {}
    if not tracing.is_on():
        tracing.inject(properties.headers)  # what was received, if anything
        return _NOTHING
    return _publish_span(outgoing, properties.headers)


@contextlib.contextmanager
def _publish_span(outgoing: Outgoing, headers: dict[str, Any]) -> Iterator[object]:
    destination = (
        f"{outgoing.exchange}:{outgoing.routing_key}" if outgoing.exchange else outgoing.routing_key
    )
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": outgoing.routing_key,
        "messaging.message.id": outgoing.properties.message_id or "",
        "messaging.message.body.size": len(outgoing.body),
    }
    with tracing.tracer(__name__).start_as_current_span(
        f"publish {destination}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        tracing.inject(headers)
        yield span


def processing(message: AbstractIncomingMessage, *, queue: str) -> _Processing:
    """Around the processing of a delivery from `queue`, until it is settled."""
    return _Processing(message, queue)


class _Processing:
    """A class, not a generator: entered for every delivery, at a third of the cost."""

    __slots__ = ("_logged", "_message", "_queue", "_received", "_span")

    def __init__(self, message: AbstractIncomingMessage, queue: str) -> None:
        self._message, self._queue = message, queue
        self._span: contextlib.AbstractContextManager[object] | None = None

    def __enter__(self) -> None:
        message = self._message
        headers = message.headers or {}
        traceparent, tracestate = _text(headers, "traceparent"), _text(headers, "tracestate")
        if tracing.is_on():
            self._span = _process_span(message, self._queue, traceparent, tracestate)
            self._span.__enter__()
        trace_id, self._received = tracing.receive(traceparent, tracestate)
        self._logged = bind(task_id=message.message_id, trace_id=trace_id)

    def __exit__(self, *exc_info: Any) -> bool | None:
        unbind(self._logged)
        tracing.leave(self._received)
        return None if self._span is None else self._span.__exit__(*exc_info)


def _process_span(
    message: AbstractIncomingMessage, queue: str, traceparent: str | None, tracestate: str | None
) -> contextlib.AbstractContextManager[object]:
    sent = (("traceparent", traceparent), ("tracestate", tracestate))
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": message.message_id or "",
        "messaging.message.body.size": message.body_size,
    }
    if message.delivery_tag is not None:
        attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
    return tracing.tracer(__name__).start_as_current_span(
        f"process {queue}",
        context=tracing.extract({name: value for name, value in sent if value}),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def _text(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) else None
