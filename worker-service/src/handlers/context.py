"""What a handler gets and may raise: its TaskContext, and PermanentTaskError.

A handler is `async def handle(ctx: TaskContext[ItsPayload]) -> JSON` in the module named as
its type. Whatever it returns (any JSON, at most RESULT_MAX_BYTES) becomes the task's
`result`; PermanentTaskError fails the task at once; any other exception fails this attempt,
and the task is retried while it has attempts left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from common.settings import Settings

P = TypeVar("P", bound=BaseModel)
T = TypeVar("T")

# A CPU-bound job's runner: the function, its arguments, and where its progress goes.
RunInProcess = Callable[..., Awaitable[Any]]
Progress = Callable[[float, str | None], None]


class PermanentTaskError(Exception):
    """The task can never succeed (its input is wrong): FAILED now, without more attempts,
    with this message as its last_error."""


@dataclass(frozen=True)
class TaskContext(Generic[P]):
    task_id: str
    payload: P  # validated against the type's payload model
    attempt: int  # 1 for the first attempt
    deadline: float  # on the event loop's clock: the attempt is cancelled then
    cancelled: asyncio.Event  # set when the task is cancelled, just before its work is
    settings: Settings
    _progress: Progress
    _run_in_process: RunInProcess

    def report_progress(self, fraction: float, note: str | None = None) -> None:
        """How far the attempt is, 0.0-1.0: written to the task at most once a second (the
        last call in each second wins) and sent to its event stream. Never blocks."""
        if not 0.0 <= fraction <= 1.0:  # NaN included
            raise ValueError(f"progress must be within 0.0-1.0, not {fraction!r}")
        self._progress(fraction, note)

    def remaining_seconds(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def run_in_process(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a pool process, so that CPU-bound work never blocks the event
        loop. `function` must be a module-level function; it may call
        `services.cpu_pool.report_progress` to report progress. A cancel or the deadline
        terminates its process."""
        result: T = await self._run_in_process(function, *args, on_progress=self._progress)
        return result


JSON = Any
Handler = Callable[[TaskContext[Any]], Awaitable[JSON]]
