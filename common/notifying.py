"""A TaskRepository that says which tasks changed, once each change is committed.

Wraps the real repository in both services: every transition that moved a task (it wrote
the task's event) is followed by `notify(task_ids)`, which broadcasts them to the API
processes' event streams (common.amqp.signals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from common.forwarding import ForwardingTaskRepository
from common.ports import TaskRepository
from common.tasks import Cancellation, Claim, ClaimResult, IdempotencyKey, NewTask, TaskRecord

Notify = Callable[[Sequence[str]], None]


class NotifyingTaskRepository(ForwardingTaskRepository):
    """Reads, the outbox and the key purge pass straight through: nothing moves there. A new
    task is announced too: no stream of that task can be open yet, but a tenant's stream
    (GET /api/events) shows it. The ids of one turn of the event loop go out in one message,
    so a burst of submits costs a few broadcasts, not one each."""

    def __init__(self, inner: TaskRepository, notify: Notify) -> None:
        super().__init__(inner)
        self._notify = notify

    def _moved(self, task_id: str, moved: object) -> None:
        if moved:
            self._notify([task_id])

    async def create(self, task: NewTask) -> TaskRecord:
        record = await self.inner.create(task)
        self._moved(record.task_id, True)
        return record

    async def create_idempotent(
        self, task: NewTask, key: IdempotencyKey
    ) -> tuple[TaskRecord, bool]:
        record, replayed = await self.inner.create_idempotent(task, key)
        self._moved(record.task_id, not replayed)  # a replay wrote no event
        return record, replayed

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        claim = await self.inner.claim(task_id, lease_seconds=lease_seconds, steal=steal)
        self._moved(task_id, claim.result is ClaimResult.CLAIMED)
        return claim

    async def complete(self, task_id: str, result: str | None = None) -> bool:
        completed = await self.inner.complete(task_id, result)
        self._moved(task_id, completed)
        return completed

    async def report_progress(
        self, task_id: str, *, attempt: int, progress: float, note: str | None
    ) -> bool:
        reported = await self.inner.report_progress(
            task_id, attempt=attempt, progress=progress, note=note
        )
        self._moved(task_id, reported)
        return reported

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        released = await self.inner.release_for_retry(task_id, error)
        self._moved(task_id, released)
        return released

    async def fail(self, task_id: str, error: str) -> bool:
        failed = await self.inner.fail(task_id, error)
        self._moved(task_id, failed)
        return failed

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        record = await self.inner.reset_failed(task_id)
        self._moved(task_id, record is not None)
        return record

    async def cancel(self, task_id: str) -> Cancellation | None:
        cancellation = await self.inner.cancel(task_id)
        self._moved(task_id, cancellation is not None and cancellation.cancelled)
        return cancellation
