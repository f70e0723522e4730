"""Long-lived loops survive any Exception: an expected one is a warning, anything else an
error with its traceback, and the loop goes on with backoff; CancelledError still stops it.
Each loop of the shared package gets an exception nobody expected injected here; the API's
dispatcher and the worker's consumer have theirs in their own suites."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from common.amqp import link as link_module
from common.amqp.link import BrokerLink, BrokerSession
from common.batching import BackgroundBatcher, Batcher
from common.errors import BrokerUnavailable, DatabaseUnavailable
from common.settings import load_settings
from common.supervision import backoff_seconds, run_forever
from testkit.polling import wait_until

pytestmark = pytest.mark.unit


class Unforeseen(Exception):
    """What no handler anywhere names."""


def errors_logged(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


async def stops_on_cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_forever_outlives_any_exception_and_says_which_was_expected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[BaseException] = [
        Unforeseen("nobody expected this"),
        DatabaseUnavailable("MySQL: down"),
        RuntimeError("async generator raised StopAsyncIteration"),
    ]
    passes = 0

    async def one_pass() -> float:
        nonlocal passes
        passes += 1
        if failures:
            raise failures.pop(0)
        return 0.0

    task = asyncio.create_task(run_forever(one_pass, name="test loop", max_backoff_seconds=0.01))

    async def carried_on() -> bool:
        return passes >= 6

    await wait_until(carried_on, timeout=5, what="passes after the failures")
    await stops_on_cancel(task)
    unexpected = errors_logged(caplog, "loop pass failed unexpectedly")
    assert [r.levelno for r in unexpected] == [logging.ERROR, logging.ERROR]
    assert all(r.exc_info is not None for r in unexpected)  # with the traceback
    [expected] = errors_logged(caplog, "loop pass failed")
    assert expected.levelno == logging.WARNING
    assert expected.exc_info is None


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    assert 0.05 <= backoff_seconds(1, cap=10) <= 0.1
    assert 0.4 <= backoff_seconds(4, cap=10) <= 0.8
    assert 1.0 <= backoff_seconds(30, cap=2) <= 2.0


async def test_the_broker_link_outlives_any_failure_to_connect_or_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What killed the link before: an exception its handler did not list, out of the client's
    handshake. Here the connect fails in ways nobody expected, then the setup does too."""
    attempts = 0
    setups = 0

    class FakeConnection:
        is_closed = False

        def __init__(self) -> None:
            self.close_callbacks: set[Callable[..., object]] = set()

        async def close(self) -> None:
            raise Unforeseen("not even closing works")

    async def connect(*_: object, **__: object) -> FakeConnection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise StopAsyncIteration
        if attempts == 2:
            raise Unforeseen("handshake")
        return FakeConnection()

    async def on_connect(session: BrokerSession) -> None:
        nonlocal setups
        setups += 1
        if setups == 1:
            raise Unforeseen("setting up")
        session.drop("the test is done with it")

    monkeypatch.setattr(link_module, "connect", connect)
    settings = load_settings(broker_reconnect_max_seconds=0.01)
    link = BrokerLink(settings, name="test", on_connect=on_connect)
    link.start()

    async def went_on() -> bool:
        return setups >= 3

    await wait_until(went_on, timeout=5, what="sessions after the failures")
    await link.close()  # CancelledError stops it cleanly
    assert not link.connected


async def test_a_batcher_whose_write_breaks_fails_its_callers_and_serves_the_next() -> None:
    calls = 0

    async def write(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unforeseen("a bug in a write")
        if calls == 2:
            return []  # a write that lost its results
        return [item * 2 for item in items]

    batcher: Batcher[int, int] = Batcher(write, max_batch=10)
    with pytest.raises(Unforeseen):
        await batcher.submit(1)
    with pytest.raises(RuntimeError, match="gave 0 results"):
        await batcher.submit(2)
    assert await batcher.submit(3) == 6


async def test_a_caller_that_gives_up_before_its_batch_is_taken_is_never_written() -> None:
    written: list[int] = []
    writing, gate = asyncio.Event(), asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        writing.set()
        await gate.wait()
        written.extend(items)
        return items

    batcher: Batcher[int, int] = Batcher(write, max_batch=10)
    first = asyncio.create_task(batcher.submit(1))
    await writing.wait()  # its batch is being written, held at the gate
    abandoned = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)  # one turn of the loop: both tasks queue their items
    abandoned.cancel()
    gate.set()

    assert await first == 1
    assert await kept == 3
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert written == [1, 3]


@pytest.mark.parametrize(
    "failure", [Unforeseen("a bug"), DatabaseUnavailable("down"), BrokerUnavailable("down")]
)
async def test_a_background_batcher_logs_a_failed_write_and_writes_the_next(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    written: list[list[int]] = []
    failures = [failure]

    async def write(items: list[int]) -> None:
        if failures:
            raise failures.pop()
        written.append(items)

    batcher: BackgroundBatcher[int] = BackgroundBatcher(write, max_batch=10, name="test")
    batcher.add(1)
    await batcher.flush()
    batcher.add(2)
    await batcher.flush()

    assert written == [[2]]
    expected = isinstance(failure, DatabaseUnavailable | BrokerUnavailable)
    event = "batch write failed" if expected else "batch write failed unexpectedly"
    [record] = errors_logged(caplog, event)
    assert (record.exc_info is not None) is isinstance(failure, Unforeseen)
