"""In-memory stand-ins for the two ports, for unit tests that need no services."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from common.errors import BrokerUnavailable, DatabaseUnavailable
from common.messages import TaskMessage
from common.tasks import FINAL_STATUSES, ClaimResult, NewTask, TaskRecord, TaskStatus


class InMemoryTaskRepository:
    """Follows the same transition rules as the MySQL repository."""

    def __init__(self) -> None:
        self.rows: dict[str, TaskRecord] = {}
        self.leases: dict[str, datetime] = {}
        self.calls: list[str] = []
        self.failure: Exception | None = None  # raised by every call while set

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.failure is not None:
            raise self.failure

    def fail_with_unavailable(self) -> None:
        self.failure = DatabaseUnavailable("database is down (fake)")

    async def create(self, task: NewTask) -> TaskRecord:
        self._enter("create")
        now = datetime.now(UTC)
        record = TaskRecord(
            task_id=task.task_id,
            title=task.title,
            description=task.description,
            status=TaskStatus.PENDING,
            metadata=task.metadata,
            attempts=0,
            last_error=None,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )
        self.rows[task.task_id] = record
        return record

    async def get(self, task_id: str) -> TaskRecord | None:
        self._enter("get")
        return self.rows.get(task_id)

    async def delete_pending(self, task_id: str) -> bool:
        self._enter("delete_pending")
        row = self.rows.get(task_id)
        if row is None or row.status is not TaskStatus.PENDING or row.attempts:
            return False
        del self.rows[task_id]
        return True

    def _update(self, task_id: str, **changes: object) -> None:
        changes.setdefault("updated_at", datetime.now(UTC))
        self.rows[task_id] = dataclasses.replace(self.rows[task_id], **changes)  # type: ignore[arg-type]

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> ClaimResult:
        self._enter("claim")
        row = self.rows.get(task_id)
        now = datetime.now(UTC)
        if row is None:
            return ClaimResult.NOT_FOUND
        if row.status in FINAL_STATUSES:
            return ClaimResult.ALREADY_FINAL
        lease_live = row.status is TaskStatus.PROCESSING and self.leases[task_id] > now
        if lease_live and not steal:
            return ClaimResult.HELD_ELSEWHERE
        self.leases[task_id] = now + timedelta(seconds=lease_seconds)
        self._update(task_id, status=TaskStatus.PROCESSING, attempts=row.attempts + 1)
        return ClaimResult.CLAIMED

    async def complete(self, task_id: str) -> bool:
        self._enter("complete")
        row = self.rows.get(task_id)
        if row is None or row.status is not TaskStatus.PROCESSING:
            return False
        now = datetime.now(UTC)
        self._update(task_id, status=TaskStatus.COMPLETED, completed_at=now, updated_at=now)
        return True

    async def ping(self) -> None:
        self._enter("ping")


class RecordingPublisher:
    """Keeps what it was asked to publish; can be told to fail like an unreachable broker."""

    def __init__(self) -> None:
        self.published: list[TaskMessage] = []
        self.fail = False
        self.is_open = True

    async def publish(self, message: TaskMessage) -> None:
        if self.fail:
            raise BrokerUnavailable("broker is down (fake)")
        self.published.append(message)
