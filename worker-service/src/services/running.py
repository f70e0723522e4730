"""The tasks whose work runs in this process right now, so that a cancel can stop one.

A cancel reaches every worker (common.amqp.signals, CANCEL); the one running the task
cancels the asyncio task doing its work, and `process_task` turns that into the CANCELLED
outcome. A cancel sent while this worker was not listening is caught up with when it
listens again: `stop_cancelled` looks up the rows of what runs here. The row is CANCELLED already (the API wrote it), so the work's end cannot complete
it: completing is conditional on PROCESSING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence

from common.errors import DependencyUnavailable
from common.ports import TaskRepository
from common.tasks import TaskStatus

logger = logging.getLogger(__name__)


class RunningWork:
    def __init__(self) -> None:
        self._running: dict[str, tuple[asyncio.Task[object], asyncio.Event]] = {}
        self._stopped: set[str] = set()
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def task_ids(self) -> list[str]:
        return list(self._running)

    @contextlib.contextmanager
    def tracking(self, task_id: str) -> Iterator[asyncio.Event]:
        """The block runs the task's work in the current asyncio task; the event it gets is
        set when the task is cancelled, just before that asyncio task is."""
        current = asyncio.current_task()
        assert current is not None
        entry = (current, asyncio.Event())
        self._running[task_id] = entry
        try:
            yield entry[1]
        finally:
            if self._running.get(task_id) is entry:
                del self._running[task_id]

    def cancel(self, task_ids: Sequence[str]) -> None:
        """Stop the work of those of the tasks running here (the others are not ours)."""
        for task_id in task_ids:
            running = self._running.pop(task_id, None)
            if running is not None:
                work, cancelled = running
                self._stopped.add(task_id)
                cancelled.set()
                work.cancel(msg=f"task {task_id} was cancelled")
                logger.info("task work cancelled", extra={"task_id": task_id})

    def was_stopped(self, task_id: str) -> bool:
        """Whether `cancel` stopped this task's work (asked once, after its CancelledError)."""
        if task_id not in self._stopped:
            return False
        self._stopped.discard(task_id)
        return True

    async def stop_cancelled(self, repository: TaskRepository) -> None:
        """Stop the work of the running tasks whose rows say CANCELLED; never raises (the
        cancel still wins without it: the row stays CANCELLED whatever the work does)."""
        for task_id in self.task_ids:
            try:
                record = await repository.get(task_id)
            except DependencyUnavailable as exc:
                logger.warning("cancels not caught up", extra={"error": str(exc)})
                return
            if record is not None and record.status is TaskStatus.CANCELLED:
                self.cancel([task_id])

    def catch_up(self, repository: TaskRepository) -> None:
        """`stop_cancelled` in the background (called when the cancel queue is bound again)."""
        check = asyncio.get_running_loop().create_task(self.stop_cancelled(repository))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
