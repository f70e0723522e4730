"""A TaskRepository that hands every call to another one: the base of the repositories that
wrap the real one (common.mysql.grouped, common.notifying) and change only a few calls."""

from __future__ import annotations

from collections.abc import Sequence

from common.ports import PublishOne, TaskRepository
from common.tasks import (
    Cancellation,
    Claim,
    EventRow,
    IdempotencyKey,
    MinuteThroughput,
    NewTask,
    TaskEvent,
    TaskQuery,
    TaskRecord,
    TaskStatus,
)


class ForwardingTaskRepository:
    def __init__(self, inner: TaskRepository) -> None:
        self.inner = inner

    async def create(self, task: NewTask) -> TaskRecord:
        return await self.inner.create(task)

    async def create_idempotent(
        self, task: NewTask, key: IdempotencyKey
    ) -> tuple[TaskRecord, bool]:
        return await self.inner.create_idempotent(task, key)

    async def purge_idempotency_keys(self, *, limit: int) -> int:
        return await self.inner.purge_idempotency_keys(limit=limit)

    async def get(self, task_id: str) -> TaskRecord | None:
        return await self.inner.get(task_id)

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        await self.inner.mark_dispatched(task_ids)

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        return await self.inner.dispatch_undispatched(
            publish=publish, limit=limit, min_age_seconds=min_age_seconds
        )

    async def next_due_in(self) -> float | None:
        return await self.inner.next_due_in()

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        return await self.inner.claim(task_id, lease_seconds=lease_seconds, steal=steal)

    async def complete(self, task_id: str, result: str | None = None) -> bool:
        return await self.inner.complete(task_id, result)

    async def report_progress(
        self, task_id: str, *, attempt: int, progress: float, note: str | None
    ) -> bool:
        return await self.inner.report_progress(
            task_id, attempt=attempt, progress=progress, note=note
        )

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        return await self.inner.release_for_retry(task_id, error)

    async def fail(self, task_id: str, error: str) -> bool:
        return await self.inner.fail(task_id, error)

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        return await self.inner.reset_failed(task_id)

    async def cancel(self, task_id: str) -> Cancellation | None:
        return await self.inner.cancel(task_id)

    async def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], bool]:
        return await self.inner.list_tasks(query)

    async def count_by_status(self, tenant: str = "") -> dict[TaskStatus, int]:
        return await self.inner.count_by_status(tenant)

    async def throughput(self, tenant: str = "", *, minutes: int = 60) -> list[MinuteThroughput]:
        return await self.inner.throughput(tenant, minutes=minutes)

    async def purge_throughput(self, *, limit: int) -> int:
        return await self.inner.purge_throughput(limit=limit)

    async def events_after(self, task_id: str, after_id: int, *, limit: int) -> list[TaskEvent]:
        return await self.inner.events_after(task_id, after_id, limit=limit)

    async def latest_event(self, task_id: str) -> TaskEvent | None:
        return await self.inner.latest_event(task_id)

    async def tenant_events_after(
        self, tenant: str, after_id: int, *, limit: int
    ) -> list[EventRow]:
        return await self.inner.tenant_events_after(tenant, after_id, limit=limit)

    async def newest_event_id(self) -> int:
        return await self.inner.newest_event_id()

    async def ping(self) -> None:
        await self.inner.ping()
