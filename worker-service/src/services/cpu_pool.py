"""A few long-lived child processes that run CPU-bound jobs for the event loop; a job is
stopped by terminating its process.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot stop one running job (cancelling
its future does nothing once the job runs), and a child that dies breaks the whole pool. Here
each process has a Pipe of its own and runs one job at a time, so stopping a job is stopping
its process: SIGTERM, SIGKILL a second later if it is still there, then a fresh process takes
its place and the pool keeps its size.

How a job runs: `run` pickles `fn` and its arguments, takes an idle process (or waits in FIFO
order for one), writes the job to its pipe and awaits the pipe's fd with `loop.add_reader`,
so the event loop never blocks on it. The child answers with progress messages, then one
reply: the result, the exception (if it survives pickling) or its type name and message.
If the awaiting task is cancelled (`task.cancel()`, `asyncio.timeout`), the process is
terminated at once and replaced in the background; EOF on the pipe means the child died.

Processes are spawned, never forked: the parent holds an event loop, threads and sockets.
A child exits when it reads EOF, so none outlives the parent (they are daemons too).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar, cast

from common.errors import TaskServiceError

logger = logging.getLogger(__name__)

T = TypeVar("T")
ProgressCallback = Callable[[float, str | None], None]

# How long a process has to exit after SIGTERM before SIGKILL, and after SIGKILL.
_GRACE_SECONDS = 1.0


class CpuPoolError(TaskServiceError):
    """Root of the pool's own errors."""


class CpuPoolClosed(CpuPoolError):
    def __init__(self) -> None:
        super().__init__("the CPU pool is closed")


class CpuJobFailed(CpuPoolError):
    """The job raised an exception that could not be sent back as itself."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class CpuWorkerDied(CpuPoolError):
    """The process running the job exited before replying (exit code -N: killed by signal N)."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__(f"the CPU pool process died mid-job (exit code {exit_code})")
        self.exit_code = exit_code


# --- In the child ---------------------------------------------------------------------------

_parent: Connection | None = None  # set in a pool process: where report_progress writes


def report_progress(fraction: float, note: str | None = None) -> None:
    """Tell the caller of `CpuPool.run` how far the job is; a no-op outside a pool process."""
    if _parent is not None:
        _parent.send(("progress", float(fraction), note))


def _failure(exc: BaseException) -> bytes:
    if isinstance(exc, Exception):  # never SystemExit & co.: the parent would re-raise them
        exc.add_note("In the CPU pool process:\n" + "".join(traceback.format_exception(exc)))
        with contextlib.suppress(Exception):
            reply = pickle.dumps(("error", exc))
            pickle.loads(reply)  # an exception whose __init__ takes other arguments fails here  # nosec B301  # our own child process, over its own pipe
            return reply
    return pickle.dumps(("failed", type(exc).__name__, str(exc)))


def _serve(parent: Connection) -> None:
    global _parent
    _parent = parent
    # Ctrl-C reaches the whole process group; the parent decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            job = parent.recv_bytes()
        except EOFError:
            return  # the parent closed the pool or died
        try:
            fn, args = pickle.loads(job)  # nosec B301  # our own child process, over its own pipe
            reply = pickle.dumps(("result", fn(*args)))
        except BaseException as exc:
            reply = _failure(exc)
        with contextlib.suppress(OSError):  # the parent is gone: the next recv sees EOF
            parent.send_bytes(reply)


# --- In the parent --------------------------------------------------------------------------


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    connection: Connection
    readable: asyncio.Future[None] | None = None

    async def wait_readable(self) -> None:
        loop = asyncio.get_running_loop()
        self.readable = loop.create_future()
        loop.add_reader(self.connection.fileno(), _resolve, self.readable)
        try:
            await self.readable
        finally:
            self.stop_reading()

    def stop_reading(self, error: BaseException | None = None) -> None:
        if self.readable is None:
            return
        asyncio.get_running_loop().remove_reader(self.connection.fileno())
        if error is not None and not self.readable.done():
            self.readable.set_exception(error)
        self.readable = None


async def _stop(worker: _Worker) -> None:
    worker.connection.close()
    worker.process.terminate()
    await asyncio.to_thread(worker.process.join, _GRACE_SECONDS)
    if worker.process.exitcode is None:  # it ignores SIGTERM
        worker.process.kill()
        await asyncio.to_thread(worker.process.join, _GRACE_SECONDS)


class CpuPool:
    """`size` processes running `run`'s jobs; `start` before use, `close` at the end."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a CPU pool needs at least one process, not {size}")
        self._size = size
        self._context = multiprocessing.get_context("spawn")
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._waiters: collections.deque[asyncio.Future[_Worker]] = collections.deque()
        self._renewals: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many callers wait for an idle process."""
        return sum(not waiter.done() for waiter in self._waiters)

    async def start(self) -> None:
        self._ensure_open()
        if self._started:
            return
        self._started = True
        for _ in range(self._size):
            if not await self._adopt(await asyncio.to_thread(self._spawn)):
                raise CpuPoolClosed()
        logger.info("cpu pool started", extra={"size": self._size})

    async def close(self) -> None:
        """Stop every process; waiting and running jobs fail with CpuPoolClosed."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(CpuPoolClosed())
        workers = list(self._workers)
        self._workers.clear()
        self._idle.clear()
        for worker in workers:
            worker.stop_reading(CpuPoolClosed())
        await asyncio.gather(*(_stop(worker) for worker in workers))
        await asyncio.gather(*self._renewals, return_exceptions=True)
        logger.info("cpu pool closed", extra={"size": self._size})

    async def run(
        self, fn: Callable[..., T], *args: object, on_progress: ProgressCallback | None = None
    ) -> T:
        """`fn(*args)` in a pool process (`fn` defined at module level); its exception is
        raised here. Cancelling the caller terminates the process."""
        job = pickle.dumps((fn, args))
        worker = await self._acquire()
        try:
            reply = await self._exchange(worker, job, on_progress)
        except BaseException as exc:
            self._replace(worker, exc)
            raise
        self._release(worker)
        if reply[0] == "error":
            raise reply[1]
        if reply[0] == "failed":
            raise CpuJobFailed(reply[1], reply[2])
        return cast(T, reply[1])

    def _spawn(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="cpu-pool", daemon=True)
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def _ensure_open(self) -> None:
        if self._closed:
            raise CpuPoolClosed()

    async def _acquire(self) -> _Worker:
        self._ensure_open()
        if not self._started:
            raise RuntimeError("CpuPool.run before CpuPool.start")
        if self._idle:
            return self._idle.pop()
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            worker = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed over just as we were cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        self._ensure_open()
        return worker

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    async def _exchange(
        self, worker: _Worker, job: bytes, on_progress: ProgressCallback | None
    ) -> tuple[Any, ...]:
        try:
            worker.connection.send_bytes(job)
            while True:
                await worker.wait_readable()
                # A reply is read whole: the child writes it in one go once it has started.
                message: tuple[Any, ...] = pickle.loads(worker.connection.recv_bytes())  # nosec B301  # our own child process, over its own pipe
                if message[0] != "progress":
                    return message
                if on_progress is not None:
                    try:
                        on_progress(message[1], message[2])
                    except Exception:
                        logger.exception("cpu job progress callback failed")
        except (EOFError, OSError):
            await asyncio.to_thread(worker.process.join, _GRACE_SECONDS)
            if self._closed:
                raise CpuPoolClosed() from None
            raise CpuWorkerDied(worker.process.exitcode) from None

    def _replace(self, worker: _Worker, reason: BaseException) -> None:
        self._workers.discard(worker)
        if self._closed:
            return  # close() stops it
        worker.process.terminate()  # now, so that the job stops at once
        cancelled = isinstance(reason, asyncio.CancelledError)
        logger.log(
            logging.INFO if cancelled else logging.WARNING,
            "cpu pool process replaced",
            extra={"pid": worker.process.pid, "reason": type(reason).__name__},
        )
        renewal = asyncio.get_running_loop().create_task(self._renew(worker))
        self._renewals.add(renewal)
        renewal.add_done_callback(self._renewals.discard)

    async def _renew(self, worker: _Worker) -> None:
        await _stop(worker)
        if self._closed:
            return
        try:
            fresh = await asyncio.to_thread(self._spawn)
        except Exception:
            logger.exception("cpu pool process not replaced", extra={"size": self._size})
            return
        await self._adopt(fresh)

    async def _adopt(self, worker: _Worker) -> bool:
        """Add a fresh process; False (and the process stopped) if the pool closed meanwhile."""
        if self._closed:
            await _stop(worker)
            return False
        self._workers.add(worker)
        self._release(worker)
        return True
