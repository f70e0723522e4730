"""Run a task type's handler in a unit test, with a fake context: its progress reports
recorded, its deadline chosen by the test, a cancel on demand, and no worker, database or
broker.

    run = await run_handler(checksum.handle, "checksum", {"size_bytes": 1 << 20})
    assert run.result["bytes"] == 1 << 20
    assert run.progress[-1][0] == 1.0

The worker's source (`worker-service/src`) must be importable, as it is in its tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.settings import Settings, load_settings
from common.task_types import CATALOGUE
from handlers.context import Handler, TaskContext


async def _in_a_thread(function: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """run_in_process for tests: the function in a thread of this process, so that it is
    quick and needs no pool (its progress reports are not recorded)."""
    return await asyncio.to_thread(function, *args)


@dataclass
class FakeContext:
    """A TaskContext for one attempt of a task of `type_name`, and what the handler did
    with it."""

    type_name: str
    payload: dict[str, Any] | None = None
    attempt: int = 1
    timeout_seconds: float = 60.0
    settings: Settings = field(default_factory=load_settings)
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    progress: list[tuple[float, str | None]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def context(self) -> TaskContext[Any]:
        """A context as the worker makes it; the payload is validated by the type's model,
        so a bad one raises pydantic's ValidationError here, as it fails the task there."""
        model = CATALOGUE[self.type_name].payload
        return TaskContext(
            task_id=self.task_id,
            payload=model.model_validate(self.payload or {}),
            attempt=self.attempt,
            deadline=asyncio.get_running_loop().time() + self.timeout_seconds,
            cancelled=self.cancelled,
            settings=self.settings,
            _progress=lambda fraction, note: self.progress.append((fraction, note)),
            _run_in_process=_in_a_thread,
        )


@dataclass(frozen=True, slots=True)
class HandlerRun:
    result: Any
    progress: list[tuple[float, str | None]]


async def run_handler(
    handle: Handler,
    type_name: str,
    payload: dict[str, Any] | None = None,
    *,
    attempt: int = 1,
    timeout_seconds: float = 60.0,
    settings: Settings | None = None,
) -> HandlerRun:
    """`handle` on a fake context, within `timeout_seconds` as the worker would (past it,
    TimeoutError); what it returned and the progress it reported, in order."""
    fake = FakeContext(
        type_name,
        payload,
        attempt=attempt,
        timeout_seconds=timeout_seconds,
        settings=settings or load_settings(),
    )
    context = fake.context()
    async with asyncio.timeout_at(context.deadline):
        result = await handle(context)
    return HandlerRun(result, fake.progress)
