"""The task as both services see it: its record, its statuses and the moves between them.

Pure domain: no driver, no I/O. The ports that store and publish tasks are in `common.ports`,
the errors in `common.errors`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})

# Every status a task may move to from each status. Each write a repository makes is one of
# these moves, made by a conditional UPDATE on the source status.
TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.PROCESSING}),  # claimed by a worker
    TaskStatus.PROCESSING: frozenset(
        {
            TaskStatus.PROCESSING,  # taken over: the lease expired, or the message came back
            TaskStatus.COMPLETED,
            TaskStatus.PENDING,  # the attempt failed and will be retried
            TaskStatus.FAILED,  # the last attempt failed
        }
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),  # re-driven
}


def may_move(source: TaskStatus, target: TaskStatus) -> bool:
    return target in TRANSITIONS[source]


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
