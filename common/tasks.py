"""The task as both services see it, and the repository port they talk to."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
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

    @classmethod
    def pending(cls, task: NewTask, created_at: datetime) -> TaskRecord:
        """The row as `create` inserts it: PENDING, no attempts yet."""
        return cls(
            task_id=task.task_id,
            title=task.title,
            description=task.description,
            status=TaskStatus.PENDING,
            metadata=task.metadata,
            attempts=0,
            last_error=None,
            created_at=created_at,
            updated_at=created_at,
            completed_at=None,
        )


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    NOT_FOUND = "not_found"
    ALREADY_FINAL = "already_final"
    HELD_ELSEWHERE = "held_elsewhere"


@dataclass(frozen=True, slots=True)
class Claim:
    result: ClaimResult
    attempts: int = 0  # the task's attempt count after this claim (0 when not claimed)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    task_id: str
    steal: bool = False


PublishOne = Callable[[TaskRecord], Awaitable[bool]]


class TaskRepository(Protocol):
    """Storage for tasks. Every state change is one conditional UPDATE."""

    async def create(self, task: NewTask) -> TaskRecord:
        """Insert the task as PENDING and not yet dispatched, in one statement."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        """The broker confirmed these tasks' messages: the dispatcher can leave them alone."""
        ...

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        """Lock up to `limit` PENDING tasks never confirmed as dispatched (older than
        `min_age_seconds`, skipping rows another dispatcher holds), call `publish` on each
        (concurrently) and mark those it confirmed. Returns how many were dispatched."""
        ...

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        """PENDING -> PROCESSING and one more attempt. A PROCESSING task is taken over when
        its lease has expired, or at once when `steal` is set (the message was redelivered)."""
        ...

    async def complete(self, task_id: str) -> bool:
        """PROCESSING -> COMPLETED with completed_at; False when it was not PROCESSING."""
        ...

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        """PROCESSING -> PENDING with last_error, after a failed attempt that will be retried."""
        ...

    async def fail(self, task_id: str, error: str) -> bool:
        """PROCESSING -> FAILED with last_error, after the last attempt failed."""
        ...

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        """FAILED -> PENDING with a fresh attempt budget, not yet dispatched (a re-drive).
        None when the task is not FAILED."""
        ...

    async def ping(self) -> None: ...
