"""One AMQP connection kept open for the life of a process.

We supervise the connection ourselves instead of relying on aio-pika's robust connection,
which has missed restoring consumers after a broker restart (aio-pika#231, #334): after every
(re)connect, `on_connect` declares the topology, opens the channels and registers consumers
again; losing the connection or any of its channels, or a publish left unconfirmed (a broker
that stopped answering), ends the session, and the link connects again with backoff. The
loop survives any failure (common.supervision).

With several nodes (RABBITMQ_HOSTS), one connect tries each of them once, in turn, each
handshake within PUBLISH_TIMEOUT_SECONDS: a node that refuses costs nothing, one that never
answers costs that timeout, and the backoff comes only between whole rounds that found no node,
as with a single one. A lost session moves the round's start on to the next node, so the node
that just failed is tried last (docs/reliability.md, Broker failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from common.amqp.errors import translated
from common.errors import BrokerUnavailable
from common.settings import BrokerAddress, Settings
from common.supervision import run_forever

logger = logging.getLogger(__name__)


class NodeRotation:
    """The order in which a connect tries the broker's nodes: from the node in use (the last
    one connected to) round the list; once its session is lost, from the one after it."""

    def __init__(self, addresses: Sequence[BrokerAddress]) -> None:
        if not addresses:
            raise ValueError("no broker address")
        self._addresses = tuple(addresses)
        self._start = 0

    @property
    def current(self) -> BrokerAddress:
        return self._addresses[self._start]

    def round(self) -> tuple[BrokerAddress, ...]:
        """Every address once, the one to try first first."""
        return self._addresses[self._start :] + self._addresses[: self._start]

    def connected(self, address: BrokerAddress) -> None:
        self._start = self._addresses.index(address)

    def lost(self) -> None:
        """The session on the current node ended: start the next round at the next node."""
        self._start = (self._start + 1) % len(self._addresses)


async def connect(
    settings: Settings, *, name: str, nodes: NodeRotation | None = None
) -> AbstractConnection:
    """One AMQP connection with the settings' credentials, named `name` in the management
    UI, to the first of the broker's nodes that answers, tried in `nodes`' order (without it,
    as RABBITMQ_HOSTS lists them), each handshake within PUBLISH_TIMEOUT_SECONDS. `nodes`
    learns which one it was. BrokerUnavailable, naming each node's failure, if none did."""
    rotation = nodes or NodeRotation(settings.broker_addresses)
    failures: list[str] = []
    for address in rotation.round():
        try:
            connection = await _connect_to(address, settings, name=name)
        except BrokerUnavailable as exc:
            failures.append(str(exc))
            continue
        for failure in failures:
            logger.warning("broker node skipped", extra={"link": name, "error": failure})
        rotation.connected(address)
        return connection
    raise BrokerUnavailable("; ".join(failures))


async def _connect_to(
    address: BrokerAddress, settings: Settings, *, name: str
) -> AbstractConnection:
    timeout = settings.publish_timeout_seconds
    with translated(f"connect to {address}", timeout=timeout):
        async with asyncio.timeout(timeout):
            return await aio_pika.connect(
                host=address.host,
                port=address.port,
                login=settings.rabbitmq_user,
                password=settings.rabbitmq_password.get_secret_value(),
                virtualhost=settings.rabbitmq_vhost,
                timeout=timeout,
                client_properties={"connection_name": name},
            )


@dataclass(eq=False)
class BrokerSession:
    """One live connection; it ends when the connection or any of its channels closes, or
    when `drop` says it is no use any more."""

    connection: AbstractConnection
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.connection.close_callbacks.add(lambda *_: self.lost.set())

    @property
    def alive(self) -> bool:
        return not self.lost.is_set() and not self.connection.is_closed

    def drop(self, reason: str) -> None:
        if not self.lost.is_set():
            logger.warning("broker session dropped", extra={"reason": reason})
            self.lost.set()

    async def channel(self, *, publisher_confirms: bool = False) -> AbstractChannel:
        channel = await self.connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=publisher_confirms
        )
        channel.close_callbacks.add(lambda *_: self.lost.set())
        return channel

    async def probe_channel(self) -> AbstractChannel:
        """A channel whose closing does not end the session: for a declare the broker may
        refuse (it closes the channel it refuses on)."""
        return await self.connection.channel()


OnConnect = Callable[[BrokerSession], Awaitable[None]]


class BrokerLink:
    def __init__(self, settings: Settings, *, name: str, on_connect: OnConnect) -> None:
        self._settings = settings
        self._timeout = settings.publish_timeout_seconds
        self._name = name
        self._on_connect = on_connect
        self._nodes = NodeRotation(settings.broker_addresses)
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.session: BrokerSession | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(
            run_forever(
                self._serve_one_session,
                name=f"broker link {self._name}",
                max_backoff_seconds=self._settings.broker_reconnect_max_seconds,
            ),
            name=f"broker-link-{self._name}",
        )

    async def wait_connected(self, seconds: float) -> bool:
        """Wait up to `seconds` for a session; True if connected."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._connected.wait()
        return self.connected

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _serve_one_session(self) -> float:
        """Connect, set up and serve until the session is lost. Raises BrokerUnavailable if
        it never got ready (unreachable, or the setup failed: the supervisor backs off)."""
        connection = await connect(self._settings, name=self._name, nodes=self._nodes)
        session = BrokerSession(connection)
        node = str(self._nodes.current)
        self.session = session
        try:
            with translated("setting up the session", timeout=self._timeout):
                async with asyncio.timeout(self._timeout):
                    await self._on_connect(session)
            self._connected.set()
            logger.info("broker connected", extra={"link": self._name, "node": node})
            await session.lost.wait()
            logger.warning("broker connection lost", extra={"link": self._name, "node": node})
            return 0.0  # it was up: try again at once, from the next node
        finally:
            self._nodes.lost()
            self._connected.clear()
            self.session = None
            await self._close_quietly(session.connection)

    async def _close_quietly(self, connection: AbstractConnection) -> None:
        # A broker that stopped answering never confirms the close: give up after the timeout.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await connection.close()
