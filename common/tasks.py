"""The task as both services see it, and the repository port they talk to."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})


@dataclass(frozen=True, slots=True)
class NewTask:
    task_id: str
    title: str
    description: str
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of the tasks table; datetimes are timezone-aware UTC."""

    task_id: str
    title: str
    description: str | None
    status: TaskStatus
    metadata: dict[str, Any] | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    NOT_FOUND = "not_found"
    ALREADY_FINAL = "already_final"
    HELD_ELSEWHERE = "held_elsewhere"


class TaskRepository(Protocol):
    """Storage for tasks. Every state change is one conditional UPDATE."""

    async def create(self, task: NewTask) -> TaskRecord: ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def delete_pending(self, task_id: str) -> bool: ...

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> ClaimResult:
        """PENDING -> PROCESSING. A PROCESSING task is taken over when its lease has
        expired, or at once when `steal` is set (the message was redelivered)."""
        ...

    async def complete(self, task_id: str) -> bool:
        """PROCESSING -> COMPLETED with completed_at; False when it was not PROCESSING."""
        ...

    async def ping(self) -> None: ...
