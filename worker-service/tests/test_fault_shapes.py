"""Every fault shape of each backend, staged by the proxy in front of the real MySQL/MariaDB
and RabbitMQ, against the worker's real consume loop: it does not crash, no task is lost or
completed twice (a message is settled only once its outcome is committed), and within a few
seconds of the fault ending it consumes again, with no restart. Tasks are submitted around
the proxies, as the API would, so only the worker meets the fault."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from test_integration import running_worker
from test_reliability import submit

from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import TaskRecord, TaskStatus
from testkit import fixtures
from testkit.polling import wait_until
from testkit.proxy import Fault, TcpProxy

pytestmark = pytest.mark.integration

repository = fixtures.repository

RECOVERY_SECONDS = 5.0
LINK = "broker link task-worker"
SHAPES = list(Fault)


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "processing_delay_min_seconds": 0.01,
        "processing_delay_max_seconds": 0.05,
        "retry_backoff_base_seconds": 0.05,
        "retry_backoff_factor": 2.0,
        "requeue_pause_seconds": 0.1,
    }


async def completed(repository: MySQLTaskRepository, task_id: str) -> TaskRecord | None:
    record = await repository.get(task_id)
    return record if record is not None and record.status is TaskStatus.COMPLETED else None


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == event]


def completions(caplog: pytest.LogCaptureFixture) -> Counter[str | None]:
    return Counter(getattr(r, "task_id", None) for r in logged(caplog, "task completed"))


async def settled(caplog: pytest.LogCaptureFixture, *task_ids: str) -> bool:
    """The worker has logged each completion: the row can say COMPLETED a moment earlier."""
    return set(task_ids) <= completions(caplog).keys()


async def run_through_fault(
    shape: Fault,
    proxy: TcpProxy,
    felt: Callable[[], Awaitable[bool]],
    *,
    proxied: Settings,
    direct: Settings,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tasks before, during and after the fault; `felt()` says the worker has met it."""
    caplog.set_level(logging.INFO)
    async with running_worker(proxied) as worker:
        before = await submit(repository, channel, direct)
        # Wait for the worker's own word, not the row: a fault that cuts the commit's answer
        # would make this delivery retry, and its copy then (rightly) skips the finished task.
        await wait_until(lambda: settled(caplog, before), timeout=10, what="before")
        proxy.fault(shape)
        try:
            during = [await submit(repository, channel, direct) for _ in range(5)]
            await wait_until(felt, timeout=10, what=f"the worker to meet the fault ({shape})")
            assert not worker.done()
        finally:
            proxy.restore()
        restored = time.monotonic()
        after = await submit(repository, channel, direct)
        await wait_until(
            lambda: completed(repository, after), timeout=RECOVERY_SECONDS, what="consuming again"
        )
        took = time.monotonic() - restored
        for task_id in during:
            await wait_until(functools.partial(completed, repository, task_id), timeout=30)
        await wait_until(lambda: settled(caplog, before, *during, after), timeout=5, what="logs")
        assert not worker.done()
    assert took <= RECOVERY_SECONDS
    assert max(completions(caplog).values()) == 1, "a task was completed twice"
    assert not logged(caplog, "loop pass failed unexpectedly")


ThroughFault = Callable[[Fault, TcpProxy, Callable[[], Awaitable[bool]]], Awaitable[None]]


@pytest.fixture
def through_fault(
    proxied: Settings,
    direct: Settings,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> ThroughFault:
    """run_through_fault with this module's worker, repository and channel."""
    return functools.partial(
        run_through_fault,
        proxied=proxied,
        direct=direct,
        repository=repository,
        channel=channel,
        caplog=caplog,
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name.lower())
async def test_a_database_fault_loses_nothing_and_the_worker_goes_on(
    shape: Fault,
    db_proxy: TcpProxy,
    through_fault: ThroughFault,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Several attempts meet the fault (a reset one only hits the connections it resets).
    times = 1 if shape is Fault.RESET else 3

    async def felt() -> bool:
        return len(logged(caplog, "database unavailable")) >= times

    await through_fault(shape, db_proxy, felt)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name.lower())
async def test_a_broker_fault_loses_nothing_and_the_worker_consumes_again(
    shape: Fault,
    broker_proxy: TcpProxy,
    through_fault: ThroughFault,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalled_before = broker_proxy.chunks_stalled

    async def felt() -> bool:
        if shape in (Fault.BLACKHOLE, Fault.SLOW):  # the deliveries are held on the way
            return broker_proxy.chunks_stalled > stalled_before
        if shape is Fault.RESET:  # reset at its next delivery; reconnecting may succeed
            return bool(logged(caplog, "broker connection lost"))
        failed = [r for r in logged(caplog, "loop pass failed") if getattr(r, "loop", "") == LINK]
        return len(failed) >= 5  # several reconnects, each meeting the fault

    await through_fault(shape, broker_proxy, felt)
