"""Failover between the nodes of a RabbitMQ cluster (RABBITMQ_HOSTS).

The order a connect tries the nodes in (common.amqp.link.NodeRotation), without a broker;
connect and the supervised link against the local broker reached through proxies that play
dead nodes; and the promise itself against three real RabbitMQ nodes of the test's own
(testkit.rabbit_cluster): the node both services are connected to is stopped under a steady
load, and no accepted task is lost, none is completed twice, no answer is a 500, and
processing stops for a few seconds at most.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.amqp import AmqpTaskPublisher, Topology
from common.amqp.link import BrokerLink, BrokerSession, NodeRotation, connect
from common.errors import BrokerUnavailable
from common.messages import TaskMessage
from common.settings import BrokerAddress, Settings
from testkit.polling import api_healthy, wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.proxy import Fault, tcp_proxy
from testkit.rabbit_cluster import RabbitCluster, RabbitNode, rabbit_cluster, rabbitmq_installed
from testkit.scratch import service_environment
from testkit.sql import query

A, B, C = BrokerAddress("10.0.0.1", 5672), BrokerAddress("10.0.0.2", 5672), BrokerAddress("c", 1)

# The load: tasks a second, for this long after the stop (and at least WARM_UP completed
# before it); the bound on the longest pause in completions it may cause.
RATE_PER_SECOND = 40
AFTER_STOP_SECONDS = 6.0
WARM_UP = 40
MAX_GAP_SECONDS = 10.0


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": 0.05,
        "processing_delay_max_seconds": 0.2,
        "log_format": "json",
    }


# -- the order of the nodes ----------------------------------------------------------------


@pytest.mark.unit
def test_a_round_starts_at_the_node_in_use_and_goes_round_the_list() -> None:
    nodes = NodeRotation([A, B, C])
    assert nodes.round() == (A, B, C)
    nodes.connected(B)
    assert nodes.current == B
    assert nodes.round() == (B, C, A)  # a new session after a failed setup, say: B again first


@pytest.mark.unit
def test_after_a_lost_session_the_next_node_is_tried_first_and_the_lost_one_last() -> None:
    nodes = NodeRotation([A, B, C])
    nodes.connected(C)
    nodes.lost()
    assert nodes.round() == (A, B, C)
    nodes.connected(A)
    nodes.lost()
    assert nodes.round() == (B, C, A)


@pytest.mark.unit
def test_a_single_node_is_always_the_one_tried() -> None:
    nodes = NodeRotation([A])
    nodes.lost()
    assert nodes.round() == (A,)
    with pytest.raises(ValueError, match="no broker address"):
        NodeRotation([])


# -- connect and the link, against the local broker behind proxies ---------------------------


@pytest.mark.integration
async def test_connect_skips_a_dead_node_within_one_attempt(
    direct: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusing node costs nothing and one that never answers costs one handshake's
    timeout: the attempt goes on to the next node, without any backoff between them."""
    caplog.set_level(logging.WARNING, logger="common.amqp.link")
    real = f"{direct.rabbitmq_host}:{direct.rabbitmq_port}"
    with (
        tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as refusing,
        tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as silent,
    ):
        refusing.fault(Fault.REFUSE)
        silent.fault(Fault.BLACKHOLE)
        dead = [f"127.0.0.1:{refusing.port}", f"127.0.0.1:{silent.port}"]
        settings = direct.model_copy(
            update={"rabbitmq_hosts": ",".join([*dead, real]), "publish_timeout_seconds": 1.0}
        )
        nodes = NodeRotation(settings.broker_addresses)
        started = time.monotonic()
        connection = await connect(settings, name="tests", nodes=nodes)
        took = time.monotonic() - started
        await connection.close()
    assert str(nodes.current) == real
    print(f"connect past a refusing and a silent node: {took * 1000:.0f} ms")
    assert 1.0 <= took < 2.0, took  # the silent node's timeout, and little else
    errors = [
        str(r.__dict__["error"]) for r in caplog.records if r.getMessage() == "broker node skipped"
    ]
    assert len(errors) == 2
    assert errors[0].startswith(f"RabbitMQ: connect to {dead[0]}: ")
    assert errors[1] == f"RabbitMQ: connect to {dead[1]}: no answer within 1 s"


@pytest.mark.integration
async def test_connect_names_every_node_when_none_answers(direct: Settings) -> None:
    with tcp_proxy("127.0.0.1", 9) as first, tcp_proxy("127.0.0.1", 9) as second:
        first.fault(Fault.REFUSE)
        second.fault(Fault.CLOSE)
        hosts = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
        settings = direct.model_copy(update={"rabbitmq_hosts": hosts})
        with pytest.raises(BrokerUnavailable) as raised:
            await connect(settings, name="tests")
    assert f"connect to 127.0.0.1:{first.port}: " in str(raised.value)
    assert f"connect to 127.0.0.1:{second.port}: " in str(raised.value)


@pytest.mark.integration
async def test_the_link_fails_over_to_the_next_node_and_never_retries_the_lost_one_first(
    direct: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two "nodes" (proxies in front of the one local broker) lose their connections in
    turn (closed, and each new one closed on accept): the link is on the other one within a
    second, without a single attempt at the node it just lost."""
    caplog.set_level(logging.INFO, logger="common.amqp.link")

    async def on_connect(session: BrokerSession) -> None:
        await session.channel()

    def connected_to() -> list[str]:
        return [
            str(r.__dict__["node"]) for r in caplog.records if r.getMessage() == "broker connected"
        ]

    def sessions(count: int) -> Callable[[], Awaitable[bool]]:
        async def reached() -> bool:
            return len(connected_to()) >= count

        return reached

    failovers: list[float] = []
    with (
        tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as first,
        tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as second,
    ):
        one, two = f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"
        settings = direct.model_copy(update={"rabbitmq_hosts": f"{one},{two}"})
        link = BrokerLink(settings, name="tests", on_connect=on_connect)
        link.start()
        try:
            await wait_until(sessions(1), timeout=10, what="the first session")
            for lost, count in ((first, 2), (second, 3)):
                started = time.monotonic()
                lost.fault(Fault.CLOSE)  # counts each attempt it turns away
                await wait_until(sessions(count), timeout=10, what="the next session")
                failovers.append(time.monotonic() - started)
                assert lost.connections_refused == 0
                lost.restore()
        finally:
            await link.close()
    assert connected_to() == [one, two, one]
    print(f"failover between two nodes: {', '.join(f'{s * 1000:.0f} ms' for s in failovers)}")
    assert max(failovers) < 1.0, failovers


def task_message() -> TaskMessage:
    return TaskMessage(task_id=str(uuid.uuid4()), title="t", description="d", metadata=None)


@pytest.mark.integration
@pytest.mark.parametrize(("publisher_max_length", "dropped"), [(1, False), (100, True)])
async def test_a_nack_drops_the_session_only_while_the_work_queue_has_room(
    direct: Settings, publisher_max_length: int, dropped: bool
) -> None:
    """A full queue's nack is backpressure: the session stays. A nack while the queue has room
    (as a channel RabbitMQ 3.10 keeps nacking after a quorum queue's leader crashed) drops
    it, so that the link connects again. The queue here holds one message; the publisher is
    told it holds `publisher_max_length`."""
    queue = f"nack-probe-{publisher_max_length}"
    topology = Topology(queue, "classic", 1, (1000,), max_length=publisher_max_length)
    connection = await connect(direct, name="tests")
    try:
        session = BrokerSession(connection)
        channel = await session.channel(publisher_confirms=True)
        declared = await channel.declare_queue(
            queue, auto_delete=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        publisher = AmqpTaskPublisher(topology, timeout=5)
        publisher.attach(session, channel)
        await publisher.publish(task_message())
        with pytest.raises(BrokerUnavailable, match="Nack"):
            await publisher.publish(task_message())
        check = publisher._nack_check  # the depth check the nack started
        assert check is not None
        await asyncio.wait_for(check, timeout=5)
        assert session.lost.is_set() is dropped
        await declared.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


# -- three real nodes ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster() -> Iterator[RabbitCluster]:
    if not rabbitmq_installed():
        pytest.skip("rabbitmq-server is not installed: this test runs three RabbitMQ nodes")
    started = time.monotonic()
    with rabbit_cluster(3) as cluster:
        print(f"\n3-node cluster up in {time.monotonic() - started:.1f} s")
        yield cluster


@dataclass
class Load:
    """POST /api/tasks at a steady pace until `until` (the loop's clock); every answer
    counted."""

    client: httpx.AsyncClient
    rate: float
    until: float = float("inf")
    accepted: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)

    async def run(self) -> None:
        started = time.monotonic()
        requests: list[asyncio.Task[None]] = []
        while time.monotonic() < self.until:
            # Pacing, not waiting for anything: request n leaves at n / rate.
            await asyncio.sleep(max(0.0, started + len(requests) / self.rate - time.monotonic()))
            requests.append(asyncio.create_task(self._submit(len(requests))))
        await asyncio.gather(*requests)

    async def _submit(self, n: int) -> None:
        try:
            response = await self.client.post(
                "/api/tasks", json={"title": f"failover {n}", "description": "d"}
            )
        except httpx.TransportError as exc:
            self.answers[type(exc).__name__] += 1
            return
        self.answers[str(response.status_code)] += 1
        if response.status_code == 202:
            self.accepted.append(response.json()["task_id"])


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The entries of `event` in a service's JSON log, in order."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                entries.append(entry)
    return entries


def nodes_connected(log: Path) -> list[str]:
    """The node of each "broker connected" in a service's log, in order."""
    return [entry["node"] for entry in log_events(log, "broker connected")]


def reconnect_seconds(log: Path, node: str) -> float:
    """From the service's loss of its connection to `node` to its next session."""
    [lost] = [e for e in log_events(log, "broker connection lost") if e["node"] == node]
    after = [e for e in log_events(log, "broker connected") if e["time"] > lost["time"]]
    return (_epoch(after[0]["time"]) - _epoch(lost["time"])) if after else float("inf")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def completed_count(settings: Settings, ids: list[str]) -> int:
    if not ids:
        return 0
    marks = ", ".join(["%s"] * len(ids))
    sql = f"SELECT COUNT(*) FROM tasks WHERE status = 'COMPLETED' AND id IN ({marks})"
    [(count,)] = await query(settings.database, sql, *ids)
    return int(count)


@dataclass
class Ledger:
    """What became of the accepted tasks, from task_events (one row per transition)."""

    completions: Counter[str]  # completed events, per task
    starts: Counter[str]  # started events (claims), per task
    completed_at: list[float]  # every completion's time (epoch seconds), in order

    @classmethod
    async def read(cls, settings: Settings, ids: list[str]) -> Ledger:
        marks = ", ".join(["%s"] * len(ids))
        rows = await query(
            settings.database,
            "SELECT task_id, kind, UNIX_TIMESTAMP(created_at) FROM task_events"
            f" WHERE kind IN ('started', 'completed') AND task_id IN ({marks})",
            *ids,
        )
        return cls(
            completions=Counter(task_id for task_id, kind, _ in rows if kind == "completed"),
            starts=Counter(task_id for task_id, kind, _ in rows if kind == "started"),
            completed_at=sorted(float(at) for _, kind, at in rows if kind == "completed"),
        )

    @property
    def longest_gap(self) -> float:
        """The longest time without a completion, first to last (the load never paused)."""
        return max((b - a for a, b in pairwise(self.completed_at)), default=0.0)


@pytest.mark.integration
@pytest.mark.cluster
@pytest.mark.timeout(300)  # the cluster's start (20-45 s on this 2-core machine) counts too
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_stopping_the_node_in_use_loses_no_task_and_pauses_processing_briefly(
    direct: Settings, cluster: RabbitCluster, tmp_path: Path, how: str
) -> None:
    """`stop`: rabbitmqctl stop, as an operator stops a node; `kill`: SIGKILL, as a crash."""
    await asyncio.to_thread(cluster.start_stopped)  # the node an earlier case stopped
    test_started = time.monotonic()
    # The cluster is the test's own: its default vhost is as private as a scratch one.
    settings = direct.model_copy(update={"rabbitmq_hosts": cluster.hosts, "rabbitmq_vhost": "/"})
    env = service_environment(settings)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with (
        service_process("api-service", env, api_log),
        service_process("worker-service", env, worker_log),
    ):
        async with api_client(f"http://127.0.0.1:{settings.api_port}") as client:
            await wait_until(lambda: api_healthy(client), timeout=30, what="API up")
            load = Load(client, RATE_PER_SECOND)
            submitting = asyncio.create_task(load.run())
            try:
                victim = await _stop_the_node_in_use(
                    cluster, settings, load, (api_log, worker_log), how=how
                )
                await submitting
            finally:
                submitting.cancel()

            async def all_completed() -> bool:
                return await completed_count(settings, load.accepted) == len(load.accepted)

            await wait_until(all_completed, timeout=60, interval=0.5, what="every 202 COMPLETED")

    ids = load.accepted
    ledger = await Ledger.read(settings, ids)
    print(
        f"\n{how}: {victim.name} ({victim.address}) under {RATE_PER_SECOND}/s;"
        f" api then on {nodes_connected(api_log)[1:]}, worker on {nodes_connected(worker_log)[1:]}"
        f"\nreconnected after: api {reconnect_seconds(api_log, victim.address) * 1000:.0f} ms,"
        f" worker {reconnect_seconds(worker_log, victim.address) * 1000:.0f} ms"
        f"\naccepted {len(ids)}, answers {dict(load.answers)},"
        f" publishes deferred {len(log_events(api_log, 'task publish deferred'))},"
        f" tasks claimed twice {sum(n > 1 for n in ledger.starts.values())}"
        f"\nlongest gap between completions {ledger.longest_gap:.2f} s"
        f"\ntest took {time.monotonic() - test_started:.1f} s (the cluster's start not counted)"
    )
    assert load.answers.get("500", 0) == 0
    assert set(load.answers) == {"202"}, load.answers  # the outbox covers the broker's faults
    assert len(ids) >= WARM_UP + RATE_PER_SECOND * AFTER_STOP_SECONDS * 0.8
    assert set(ledger.completions) == set(ids)  # 0 lost
    assert set(ledger.completions.values()) == {1}  # 0 completed twice
    assert ledger.longest_gap <= MAX_GAP_SECONDS


async def _stop_the_node_in_use(
    cluster: RabbitCluster, settings: Settings, load: Load, logs: tuple[Path, Path], *, how: str
) -> RabbitNode:
    """Once the load is flowing, stop (or kill) the node both services are on (the first
    listed), and let the load go on for AFTER_STOP_SECONDS more."""
    api_log, worker_log = logs

    async def warmed_up() -> bool:
        return await completed_count(settings, load.accepted) >= WARM_UP

    await wait_until(warmed_up, timeout=30, what=f"{WARM_UP} tasks completed")
    in_use = nodes_connected(worker_log)[-1]
    assert nodes_connected(api_log)[-1] == in_use == cluster.nodes[0].address
    victim = cluster.node_at(in_use)
    # Every queue has a replica on each node, the one about to stop included.
    members = await asyncio.to_thread(cluster.quorum_members, settings.task_queue)
    assert members == sorted(node.name for node in cluster.nodes)

    await asyncio.to_thread(cluster.stop if how == "stop" else RabbitNode.kill, victim)
    load.until = time.monotonic() + AFTER_STOP_SECONDS

    async def moved_on() -> bool:
        return all(
            len(nodes) >= 2 and nodes[-1] != in_use
            for nodes in (nodes_connected(api_log), nodes_connected(worker_log))
        )

    await wait_until(moved_on, timeout=20, what="both services on another node")
    return victim
