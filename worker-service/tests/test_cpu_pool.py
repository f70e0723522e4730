"""The CPU pool with real spawned processes. The jobs are this module's functions: a pool
process imports this module by the name pytest gave it (its sys.path is the parent's)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.cpu_pool import (
    CpuJobFailed,
    CpuPool,
    CpuPoolClosed,
    CpuWorkerDied,
    report_progress,
)
from testkit.polling import wait_until

pytestmark = pytest.mark.unit

# --- Jobs (run in the pool processes) -------------------------------------------------------


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class OddArguments(Exception):
    """Pickles, but cannot be rebuilt: unpickling calls __init__ with the message alone."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")


def square(number: int) -> int:
    return number * number


def fail(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad input")
    if kind == "unpicklable":
        raise Unpicklable("holds a lock")
    if kind == "odd":
        raise OddArguments(7, "odd")
    raise SystemExit(3)


def spin(seconds: float) -> int:
    """Keep a core busy for `seconds`; the pid is reported first and returned."""
    report_progress(0.0, str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return os.getpid()


def sleep_after_reporting_pid(seconds: float, ignore_sigterm: bool = False) -> None:
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report_progress(0.0, str(os.getpid()))
    time.sleep(seconds)


def poll_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within 10 s")
        time.sleep(0.01)


def meet(directory: str, parties: int) -> int:
    """Return the pid once `parties` of these jobs run at the same time."""
    Path(directory, str(os.getpid())).touch()
    poll_until(lambda: len(os.listdir(directory)) >= parties, f"{parties} jobs at once")
    return os.getpid()


def wait_for_file(path: str) -> int:
    poll_until(Path(path).exists, path)
    return os.getpid()


def touch(path: str) -> None:
    Path(path).touch()


def die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def count_up(steps: int) -> str:
    for step in range(steps):
        report_progress(step / steps, f"step {step}")
    return "done"


# --- Helpers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def started(size: int) -> AsyncIterator[CpuPool]:
    pool = CpuPool(size)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def eventually(condition: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return condition()

    await wait_until(probe, timeout=10, interval=0.01, what=what)


def pid_of(note: str | None) -> int:
    assert note is not None
    return int(note)


# --- Tests ----------------------------------------------------------------------------------


async def test_results_and_exceptions_come_back_and_the_process_serves_on() -> None:
    async with started(1) as pool:
        pid = await pool.run(os.getpid)
        assert await pool.run(square, 7) == 49

        with pytest.raises(ValueError, match="bad input") as raised:
            await pool.run(fail, "value")
        assert "In the CPU pool process" in raised.value.__notes__[0]
        for kind, type_name, message in [
            ("unpicklable", "Unpicklable", "holds a lock"),
            ("odd", "OddArguments", "7 odd"),
            ("exit", "SystemExit", "3"),
        ]:
            with pytest.raises(CpuJobFailed) as failed:
                await pool.run(fail, kind)
            assert (failed.value.type_name, failed.value.message) == (type_name, message)
        with pytest.raises((pickle.PicklingError, AttributeError)):
            await pool.run(lambda: 1)

        assert await pool.run(os.getpid) == pid


async def test_the_event_loop_keeps_ticking_during_a_cpu_job() -> None:
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async with started(1) as pool:
        await pool.run(os.getpid)  # the process is up
        ticker = asyncio.create_task(tick())
        try:
            await pool.run(spin, 1.5)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) > 50
    assert max(gaps) < 0.1


async def test_more_jobs_than_processes_all_finish_with_at_most_size_at_once() -> None:
    size, running, most = 2, 0, 0

    def job_started(fraction: float, note: str | None) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)

    async def one_job(pool: CpuPool) -> int:
        nonlocal running
        pid = await pool.run(spin, 0.1, on_progress=job_started)
        running -= 1
        return pid

    async with started(size) as pool:
        pids = await asyncio.gather(*(one_job(pool) for _ in range(3 * size)))
    assert len(pids) == 3 * size
    assert len(set(pids)) <= size
    assert 1 <= most <= size


@pytest.mark.parametrize("how", ["cancel", "timeout", "cancel_ignoring_sigterm"])
async def test_cancelling_a_running_job_stops_its_process(how: str, tmp_path: Path) -> None:
    pids: list[int] = []
    async with started(2) as pool:
        if how.startswith("cancel"):
            job = asyncio.create_task(
                pool.run(
                    sleep_after_reporting_pid,
                    60,
                    how == "cancel_ignoring_sigterm",  # then SIGKILL, a second later
                    on_progress=lambda _, note: pids.append(pid_of(note)),
                )
            )
            await eventually(lambda: bool(pids), "the job to start")
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
        else:
            # The deadline is set once the job runs, so that it expires mid-job.
            deadline = asyncio.timeout(None)

            def job_started(fraction: float, note: str | None) -> None:
                pids.append(pid_of(note))
                deadline.reschedule(asyncio.get_running_loop().time() + 0.1)

            with pytest.raises(TimeoutError):
                async with deadline:
                    await pool.run(sleep_after_reporting_pid, 60, on_progress=job_started)

        await eventually(lambda: not alive(pids[0]), "the cancelled job's process to go")
        met = await asyncio.gather(*(pool.run(meet, str(tmp_path), 2) for _ in range(2)))
    assert len(set(met)) == 2
    assert pids[0] not in met


async def test_a_caller_cancelled_while_waiting_leaves_the_queue(tmp_path: Path) -> None:
    gate, skipped = tmp_path / "gate", tmp_path / "skipped"
    async with started(1) as pool:
        first = asyncio.create_task(pool.run(wait_for_file, str(gate)))
        second = asyncio.create_task(pool.run(touch, str(skipped)))
        third = asyncio.create_task(pool.run(os.getpid))
        await eventually(lambda: pool.waiting == 2, "two callers waiting")

        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert pool.waiting == 1
        gate.touch()
        pid = await first
        assert await third == pid
    assert not skipped.exists()


@pytest.mark.parametrize(("how", "exit_code"), [("exit", 3), ("kill", -signal.SIGKILL)])
async def test_a_process_that_dies_mid_job_gives_cpu_worker_died_and_is_replaced(
    how: str, exit_code: int
) -> None:
    async with started(1) as pool:
        pid = await pool.run(os.getpid)
        with pytest.raises(CpuWorkerDied) as died:
            await pool.run(die, how)
        assert died.value.exit_code == exit_code
        assert not alive(pid)
        assert await pool.run(square, 3) == 9
        assert await pool.run(os.getpid) != pid


async def test_progress_arrives_in_order_before_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[object] = []

    def broken(fraction: float, note: str | None) -> None:
        raise RuntimeError("a bug in the callback")

    report_progress(0.5, "outside a pool: nothing happens")
    async with started(1) as pool:
        events.append(
            await pool.run(count_up, 4, on_progress=lambda *progress: events.append(progress))
        )
        with caplog.at_level(logging.ERROR, logger="services.cpu_pool"):
            assert await pool.run(count_up, 2, on_progress=broken) == "done"
    assert events == [(0.0, "step 0"), (0.25, "step 1"), (0.5, "step 2"), (0.75, "step 3"), "done"]
    failures = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert failures == ["cpu job progress callback failed"] * 2


async def test_close_fails_waiting_and_running_jobs_and_leaves_no_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        CpuPool(0)
    await CpuPool(1).close()  # before start: nothing to stop
    pool = CpuPool(2)
    with pytest.raises(RuntimeError):
        await pool.run(os.getpid)
    await pool.start()

    pids = set(await asyncio.gather(*(pool.run(meet, str(tmp_path), 2) for _ in range(2))))
    running_pids: list[int] = []
    running = [
        asyncio.create_task(
            pool.run(
                sleep_after_reporting_pid,
                60,
                on_progress=lambda _, note: running_pids.append(pid_of(note)),
            )
        )
        for _ in range(2)
    ]
    waiting = asyncio.create_task(pool.run(os.getpid))
    await eventually(lambda: len(running_pids) == 2 and pool.waiting == 1, "a full pool")

    await pool.close()
    for job in [*running, waiting]:
        with pytest.raises(CpuPoolClosed):
            await job
    assert set(running_pids) == pids
    assert not any(alive(pid) for pid in pids)
    assert multiprocessing.active_children() == []
    await pool.close()  # twice is fine
    with pytest.raises(CpuPoolClosed):
        await pool.run(os.getpid)
